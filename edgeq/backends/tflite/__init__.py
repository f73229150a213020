"""The .tflite backend: an integer program → a full-integer TFLite flatbuffer (LiteRT, TFLite Micro).

:func:`write_tflite` builds the file without TensorFlow; :func:`read_metadata` and :func:`describe` read back
what edgeq wrote (metadata entries, signature, operator codes) for packaging and tests.
"""

from edgeq.backends.tflite.reader import TfliteSummary, describe, read_metadata
from edgeq.backends.tflite.writer import IOType, activation_range, write_tflite

__all__ = ["IOType", "TfliteSummary", "activation_range", "describe", "read_metadata", "write_tflite"]
