"""edgeq.quantize."""
