"""Joint-embedding predictive architecture: masks, predictor, EMA target, losses, health."""
