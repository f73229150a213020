"""edgeq.devices."""
