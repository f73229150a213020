"""edgeq.lower."""
