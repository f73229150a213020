"""The C backend: integer programs → C99 for bare-metal microcontrollers (static arena, no allocation)."""

from edgeq.backends.c.emit import CModel, OpInfo, TensorIO, emit_c, generate
from edgeq.backends.c.memplan import Buffer, MemoryPlan, liveness_lower_bound, plan_memory

__all__ = [
    "Buffer",
    "CModel",
    "MemoryPlan",
    "OpInfo",
    "TensorIO",
    "emit_c",
    "generate",
    "liveness_lower_bound",
    "plan_memory",
]
