"""The export stage: torch → ONNX, and the ONNX intake (checker, opset, static shapes, folding, clean-up).

>>> model = export("model.onnx", input_shapes={"input": [1, 3, 224, 224]}, output="float.onnx")
"""

from edgeq.export.opset import MIN_OPSET, max_opset
from edgeq.export.pipeline import export, intake

__all__ = ["MIN_OPSET", "export", "intake", "max_opset"]
