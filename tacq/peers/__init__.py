"""Layer 6, the peers: AutoRound and HQQ, each run by its own package in a subprocess,
sized by our honest count and scored by our evaluator."""
