"""edgeq.validate."""
