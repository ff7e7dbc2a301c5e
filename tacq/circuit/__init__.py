"""Layer 4, the circuit: per-sample gradient statistics (one process or several), the
saliency registry, global selection, and the analyses (anatomy, causal tests, stability)."""
