"""Layer 1, data: bundled and uploaded tasks, their splits, batches, and the one calibration-text
policy (what a fit sees; never the text perplexity is scored on). Imports only the base."""
