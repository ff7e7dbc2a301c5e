"""Layer 7, the study: `Study` (a session over a model and a task: caches, references,
variants), scores and rankings, the demo, auto-fit, run plans and the shared tables."""
