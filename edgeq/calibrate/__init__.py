"""edgeq.calibrate."""
