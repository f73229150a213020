"""edgeq.export."""
