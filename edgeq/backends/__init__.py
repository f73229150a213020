"""edgeq.backends."""
