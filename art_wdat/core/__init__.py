"""The mathematics in pure torch (no ART, no numpy): the W_p threat, norms, losses, reductions, steps, the loop."""
