"""Layer 2, evaluation: answer NLL, exact match and perplexity from one prompt pass, and the
bootstrap / paired statistics every comparison reports. Imports data and the base."""
