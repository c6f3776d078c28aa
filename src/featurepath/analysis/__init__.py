"""Statistical analyses shared by discover, causal, pathways and words."""
