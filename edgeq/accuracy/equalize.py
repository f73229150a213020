"""Cross-layer equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
Correction", ICCV 2019): a float ONNX → float ONNX transform that leaves the function unchanged.

For a pair of layers — the first a Conv / Gemm / MatMul with constant weights or a LayerNormalization over
the last axis (output ``γ_c·ẑ_c + β_c``), the second a Conv / Gemm / MatMul — where the first one's output
channel ``c`` reaches the second only through ops that act on each channel alone and commute with a
positive scale (ReLU, LeakyReLU, PReLU, max/average pooling, ReduceMean over other axes, zero padding, a
per-channel bias Add, a positive constant Mul, flattening a 1×1 map), channel ``c`` of the first layer
(weights and bias, or γ and β) is multiplied by ``f_c`` and the second layer's weights that read channel
``c`` by ``1 / f_c``: the composition computes exactly what it did. With ``r1_c`` the range of channel ``c``
and ``r2_c`` the max |weight| of the second layer's that read it, ``f_c = sqrt(r2_c / r1_c)`` gives both the
range ``sqrt(r1_c · r2_c)``; sweeping all pairs a few times converges for chains (depthwise → pointwise →
depthwise …). ``r1_c`` is the first layer's max |weight| of channel ``c`` (data-free, as DFQ; for a
LayerNorm ``3·|γ_c| + |β_c|``) or, given calibration samples, the measured max |activation| where the second
layer reads it. Equalizing that range is what saves a depthwise-separable net whose BatchNorm folding left
channels orders of magnitude apart, or a transformer whose LayerNorm grew outlier channels: the per-tensor
int8 grid between the layers then serves every channel.

ReLU6 (``Clip(0, hi)``) is not positively homogeneous: ``clip(f·x, 0, hi) ≠ f·clip(x, 0, hi)`` once ``x``
reaches ``hi``. edgeq scales a channel through it only where the clip provably never engages: when the first
layer's input has known bounds (it is the output of a Clip with finite bounds, a Sigmoid, a Tanh …, possibly
through pooling or data movement), the channel's pre-activation maximum ``U_c`` is bounded by interval
arithmetic over the weights, and a channel with ``U_c <= hi`` behaves as a ReLU for every possible input;
``f_c`` is then capped at ``hi / U_c``. Every other channel through a ReLU6 keeps ``f_c = 1``. So the float
function is unchanged for all inputs, not just on calibration data (DFQ and AIMET instead replace ReLU6 by
ReLU, which changes the model).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from edgeq import onnxutil
from edgeq.accuracy.graphutil import attr, input_axis, is_weighted, replace_initializers, uses, weight_axis
from edgeq.data import open_samples
from edgeq.errors import ConfigError, DataError, ModelError
from edgeq.quantize.graph import GraphIndex

# Per-channel ops that commute with a positive per-channel scale (no parameter to change).
_HOMOGENEOUS = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "PRelu",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Identity",
        "Dropout",
    }
)
# Ops whose output values lie within the input's bounds (for the ReLU6 bound analysis).
_BOUND_PRESERVING = frozenset(
    {
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Identity",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Relu",
    }
)


@dataclass(frozen=True)
class EqualizedPair:
    """One equalized pair of layers.

    ``via``: the op types between them. ``pinned``: channels kept at scale 1 because a ReLU6 between the
    layers may clip them. ``spread_before`` / ``spread_after``: max/min over channels of the first layer's
    per-channel weight range (1 = perfectly equal).
    """

    producer: str
    consumer: str
    via: tuple[str, ...]
    channels: int
    pinned: int
    spread_before: float
    spread_after: float


@dataclass(frozen=True)
class EqualizeResult:
    """The equalized model and what was done."""

    model: onnx.ModelProto
    pairs: tuple[EqualizedPair, ...]
    sweeps: int

    def text(self) -> str:
        if not self.pairs:
            return "cross-layer equalization: no equalizable layer pairs"
        lines = [f"cross-layer equalization: {len(self.pairs)} layer pairs, {self.sweeps} sweeps"]
        for p in self.pairs:
            via = "→".join(p.via) or "direct"
            pinned = f", {p.pinned} channels pinned by a ReLU6" if p.pinned else ""
            lines.append(
                f"  {p.producer} → {p.consumer} (via {via}): channel range spread "
                f"{p.spread_before:.3g} → {p.spread_after:.3g}{pinned}"
            )
        return "\n".join(lines)


@dataclass
class _Pair:
    producer: int
    consumer: int
    via: list[int]
    adds: list[int]  # Add nodes in the chain whose constant operand is a per-channel bias to scale
    clip_hi: float | None  # the smallest finite upper bound of a Clip(0, hi) in the chain
    bound_ok: bool  # whether U_c can be computed for that clip
    tensor: str = ""  # what the consumer reads (the chain's last tensor)
    axis: int = 1  # its channel axis


def _channel_shape(rank: int, axis: int, channels: int) -> tuple[int, ...]:
    shape = [1] * rank
    shape[axis] = channels
    return tuple(shape)


class _Equalizer:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = GraphIndex(model)
        self.uses = uses(model)
        self.arrays: dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------------------------------- arrays
    def array(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            self.arrays[name] = np.asarray(self.g.array(name), dtype=np.float64).copy()
        return self.arrays[name]

    def scalar(self, name: str) -> float | None:
        if not name or not self.g.is_constant(name):
            return None
        a = np.asarray(self.g.array(name), dtype=np.float64)
        return float(a.reshape(-1)[0]) if a.size == 1 else None

    def rank(self, name: str) -> int | None:
        shape = self.g.shapes.get(name)
        return None if shape is None else len(shape.dim)

    def dims(self, name: str) -> list[int] | None:
        shape = self.g.shapes.get(name)
        if shape is None:
            return None
        return [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim]

    def only_consumer(self, tensor: str) -> int | None:
        cons = self.g.consumers.get(tensor, [])
        if len(cons) != 1 or tensor in self.g.output_set:
            return None
        return cons[0][0]

    # ------------------------------------------------------------------------------------- pair search
    def clip_bounds(self, node: onnx.NodeProto) -> tuple[float, float] | None:
        if node.op_type == "Relu":
            return 0.0, math.inf
        lo = self.scalar(node.input[1]) if len(node.input) > 1 and node.input[1] else -math.inf
        hi = self.scalar(node.input[2]) if len(node.input) > 2 and node.input[2] else math.inf
        if lo is None or hi is None:
            return None
        return lo, hi

    def find_pairs(self) -> list[_Pair]:
        pairs = []
        for i, node in enumerate(self.g.nodes):
            if not (is_weighted(self.g, node) or self.is_layernorm(node)) or not node.name:
                continue
            if node.op_type == "MatMul" and self.rank(node.input[0]) not in (2, 3):
                continue
            pair = self.follow(i)
            if pair is None:
                continue
            names = [self.g.nodes[pair.producer].input[1], self.g.nodes[pair.consumer].input[1]]
            bias = self.g.nodes[pair.producer].input[2] if len(self.g.nodes[pair.producer].input) > 2 else ""
            names += [bias] if bias else []
            names += [
                self.g.nodes[a].input[k]
                for a in pair.adds
                for k in (0, 1)
                if self.g.is_constant(self.g.nodes[a].input[k])
            ]
            # A weight read by another node (or by both layers) cannot be scaled for one of them alone.
            if any(self.uses.get(n, 0) != 1 for n in names) or len(set(names)) != len(names):
                continue
            pairs.append(pair)
        return pairs

    def is_layernorm(self, node: onnx.NodeProto) -> bool:
        """A LayerNormalization over the last axis with constant 1-D scale (and bias): a per-channel affine
        output, ``γ_c · ẑ_c + β_c``, that scales exactly with γ and β (SmoothQuant-style migration)."""
        if (
            node.op_type != "LayerNormalization"
            or len(node.input) < 2
            or not self.g.is_constant(node.input[1])
        ):
            return False
        if any(o for o in node.output[1:]):
            return False  # its mean / inverse std outputs are used: they would not scale
        rank = self.rank(node.input[0])
        axis = attr(node, "axis", -1)
        if rank is None or axis not in (-1, rank - 1) or np.asarray(self.g.array(node.input[1])).ndim != 1:
            return False
        bias = node.input[2] if len(node.input) > 2 else ""
        return not bias or (self.g.is_constant(bias) and np.asarray(self.g.array(bias)).ndim == 1)

    def follow(self, p: int) -> _Pair | None:
        g = self.g
        producer = g.nodes[p]
        out = producer.output[0]
        # Channels of the producer's output: axis 1 for Conv, the last axis for Gemm/MatMul.
        rank = self.rank(out)
        if rank is None:
            return None
        axis = 1 if producer.op_type == "Conv" else rank - 1
        w1 = g.array(producer.input[1])
        channels = (
            w1.shape[0] if producer.op_type == "LayerNormalization" else w1.shape[weight_axis(producer, w1)]
        )
        via: list[int] = []
        adds: list[int] = []
        clip_hi: float | None = None
        bound_ok = True
        tensor = out
        for _ in range(16):  # a chain longer than this is not a simple pair
            c = self.only_consumer(tensor)
            if c is None:
                return None
            node = g.nodes[c]
            op = node.op_type
            if node.input[0] != tensor and op not in ("Add", "Mul"):
                return None
            if is_weighted(g, node) and node.input[0] == tensor:
                if not node.name:
                    return None
                w2 = g.array(node.input[1])
                if node.op_type == "Conv":
                    if axis != 1 or w2.shape[1] * attr(node, "group", 1) != channels:
                        return None
                elif axis != (self.rank(tensor) or 0) - 1 or w2.shape[input_axis(node, w2)] != channels:
                    return None
                return _Pair(p, c, via, adds, clip_hi, bound_ok, tensor, axis)
            if op in _HOMOGENEOUS:
                if op == "PRelu" and not self._per_channel_const(
                    node.input[1], axis, channels, self.rank(tensor)
                ):
                    return None
                if op in ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool") and axis != 1:
                    return None
                if op == "Dropout" and len(node.output) > 1 and node.output[1]:
                    return None
            elif op in ("Clip", "Relu"):
                bounds = self.clip_bounds(node)
                if bounds is None or bounds[0] != 0.0:
                    return None
                if math.isfinite(bounds[1]):
                    # Only the clip directly after the producer (and its bias) has a computable bound.
                    bound_ok = bound_ok and all(g.nodes[v].op_type == "Add" for v in via)
                    clip_hi = bounds[1] if clip_hi is None else min(clip_hi, bounds[1])
            elif op == "Pad":
                if not self._zero_pad_keeps_channels(node, axis):
                    return None
            elif op == "Add":
                other = node.input[1] if node.input[0] == tensor else node.input[0]
                if not self._per_channel_const(other, axis, channels, self.rank(tensor)):
                    return None
                adds.append(c)
            elif op == "Mul":
                other = node.input[1] if node.input[0] == tensor else node.input[0]
                if not g.is_constant(other) or self.rank(node.output[0]) != self.rank(tensor):
                    return None
                if np.any(np.asarray(g.array(other)) <= 0):  # a negative factor does not commute with max
                    return None
            elif op == "ReduceMean":
                axes = self._reduce_axes(node, self.rank(tensor))
                if axes is None or axis in axes:
                    return None
                if not attr(node, "keepdims", 1):
                    axis -= sum(1 for a in axes if a < axis)
            elif op in ("Flatten", "Reshape", "Squeeze"):
                dims = self.dims(tensor)
                out_dims = self.dims(node.output[0])
                # Only (N, C, 1, 1) → (N, C): channels move to the last axis and nothing else changes.
                if dims is None or out_dims is None or axis != 1 or len(out_dims) != 2:
                    return None
                if any(d != 1 for d in dims[2:]) or out_dims[1] != channels:
                    return None
                axis = 1  # still axis 1, which is now also the last axis
            else:
                return None
            via.append(c)
            tensor = node.output[0]
        return None

    def _reduce_axes(self, node: onnx.NodeProto, rank: int | None) -> set[int] | None:
        if rank is None:
            return None
        axes = attr(node, "axes", None)
        if axes is None and len(node.input) > 1 and node.input[1]:
            if not self.g.is_constant(node.input[1]):
                return None
            axes = np.asarray(self.g.array(node.input[1])).reshape(-1).tolist()
        if axes is None:
            return None  # all axes (or noop_with_empty_axes): not a per-channel op
        return {int(a) % rank for a in axes}

    def _per_channel_const(self, name: str, axis: int, channels: int, rank: int | None) -> bool:
        if not name or not self.g.is_constant(name) or rank is None:
            return False
        shape = np.asarray(self.g.array(name)).shape
        if len(shape) > rank:
            return False
        full = (1,) * (rank - len(shape)) + tuple(shape)
        return all(d == (channels if k == axis else 1) for k, d in enumerate(full))

    def _zero_pad_keeps_channels(self, node: onnx.NodeProto, axis: int) -> bool:
        mode = attr(node, "mode", b"constant")
        if len(node.input) < 2 or not self.g.is_constant(node.input[1]):
            return False
        pads = np.asarray(self.g.array(node.input[1])).reshape(-1)
        rank = len(pads) // 2
        if pads[axis] != 0 or pads[axis + rank] != 0 or pads[0] != 0 or pads[rank] != 0:
            return False
        if len(node.input) > 3 and node.input[3]:
            return False  # explicit axes: rare; not analysed
        if mode == b"constant" and len(node.input) > 2 and node.input[2]:
            return self.scalar(node.input[2]) == 0.0
        return True

    # --------------------------------------------------------------------------------- bound analysis
    def input_bounds(self, tensor: str, depth: int = 0) -> tuple[float, float] | None:
        """Provable (lo, hi) of every value of ``tensor`` for any model input, or None."""
        g = self.g
        p = g.producer.get(tensor)
        if p is None or depth > 32:
            return None
        node = g.nodes[p]
        op = node.op_type
        if op == "Clip":
            b = self.clip_bounds(node)
            if b is None:
                return None
            lo, hi = b
            if math.isfinite(lo) and math.isfinite(hi):
                return lo, hi
            inner = self.input_bounds(node.input[0], depth + 1)
            if inner is None:
                return None
            lo2, hi2 = max(lo, inner[0]), min(hi, inner[1])
            return (lo2, hi2) if math.isfinite(lo2) and math.isfinite(hi2) else None
        if op in ("Sigmoid", "HardSigmoid"):
            return 0.0, 1.0
        if op == "Tanh":
            return -1.0, 1.0
        if op == "Softmax":
            return 0.0, 1.0
        if op in _BOUND_PRESERVING:
            inner = self.input_bounds(node.input[0], depth + 1)
            if inner is None:
                return None
            return (max(0.0, inner[0]), max(0.0, inner[1])) if op == "Relu" else inner
        if op == "Pad" and self._zero_pad_keeps_channels(node, 1):
            inner = self.input_bounds(node.input[0], depth + 1)
            return None if inner is None else (min(0.0, inner[0]), max(0.0, inner[1]))
        return None

    def upper_bounds(self, pair: _Pair) -> np.ndarray | None:
        """Per-channel upper bound of the pre-activation reaching the pair's Clip, or None when unknown."""
        g = self.g
        producer = g.nodes[pair.producer]
        if producer.op_type == "LayerNormalization":
            return None
        bounds = self.input_bounds(producer.input[0])
        if bounds is None:
            return None
        lo, hi = bounds
        w = self.array(producer.input[1])
        op = producer.op_type
        if op == "Gemm":
            w = w * float(attr(producer, "alpha", 1.0))
        axis = weight_axis(producer, w)
        taps = np.maximum(w * lo, w * hi)
        if op == "Conv":
            pads = attr(producer, "pads", None)
            auto = attr(producer, "auto_pad", b"NOTSET")
            if (pads is not None and any(pads)) or auto not in (b"NOTSET", b"VALID"):
                taps = np.maximum(taps, 0.0)  # border positions read zero padding
        upper = np.moveaxis(taps, axis, 0).reshape(taps.shape[axis], -1).sum(axis=1)
        if len(producer.input) > 2 and producer.input[2]:
            beta = float(attr(producer, "beta", 1.0)) if op == "Gemm" else 1.0
            upper = upper + np.broadcast_to(self.array(producer.input[2]).reshape(-1) * beta, upper.shape)
        for a in pair.adds:
            node = g.nodes[a]
            other = node.input[1] if g.is_constant(node.input[1]) else node.input[0]
            upper = upper + self.array(other).reshape(-1)
        return upper

    # ------------------------------------------------------------------------------------------ scaling
    def ranges(self, pair: _Pair) -> tuple[np.ndarray, np.ndarray]:
        producer, consumer = self.g.nodes[pair.producer], self.g.nodes[pair.consumer]
        w1 = self.array(producer.input[1])
        if producer.op_type == "LayerNormalization":
            # the output range of γ·ẑ + β for a normalised ẑ, taken as |ẑ| ≤ 3
            bias = producer.input[2] if len(producer.input) > 2 else ""
            r1 = 3.0 * np.abs(w1) + (np.abs(self.array(bias)) if bias else 0.0)
        else:
            ax1 = weight_axis(producer, w1)
            r1 = np.abs(np.moveaxis(w1, ax1, 0)).reshape(w1.shape[ax1], -1).max(axis=1)
        return r1, self.consumer_ranges(consumer, r1.size)

    def consumer_ranges(self, consumer: onnx.NodeProto, channels: int) -> np.ndarray:
        w2 = np.abs(self.array(consumer.input[1]))
        if consumer.op_type == "Conv":
            group = attr(consumer, "group", 1)
            m, per = w2.shape[0], w2.shape[1]
            # input channel c = group gi, local index l: read by output rows [gi·m/group, (gi+1)·m/group)
            blocks = w2.reshape(group, m // group, per, -1)
            return blocks.max(axis=(1, 3)).reshape(channels)
        ax = input_axis(consumer, w2)
        return np.moveaxis(w2, ax, 0).reshape(channels, -1).max(axis=1)

    def apply(self, pair: _Pair, f: np.ndarray) -> None:
        """Scale the producer's channel c by f_c and the consumer's inputs from channel c by 1 / f_c."""
        g = self.g
        producer, consumer = g.nodes[pair.producer], g.nodes[pair.consumer]
        w1 = self.array(producer.input[1])
        ax1 = weight_axis(producer, w1)
        w1 *= f.reshape(_channel_shape(w1.ndim, ax1, f.size))
        if len(producer.input) > 2 and producer.input[2]:
            name = producer.input[2]
            b = self.array(name)
            if b.size == 1 and f.size > 1:  # a scalar Gemm bias C becomes a per-channel one
                self.arrays[name] = np.full(f.shape, b.reshape(-1)[0]) * f
            else:  # (N,) or Gemm's (1, N)
                self.arrays[name] = b * f.reshape(b.shape)
        for a in pair.adds:
            node = g.nodes[a]
            other = node.input[1] if g.is_constant(node.input[1]) else node.input[0]
            c = self.array(other)
            flat = c.reshape(-1) * f
            self.arrays[other] = flat.reshape(c.shape)
        w2 = self.array(consumer.input[1])
        inv = 1.0 / f
        if consumer.op_type == "Conv":
            group = attr(consumer, "group", 1)
            m, per = w2.shape[0], w2.shape[1]
            view = w2.reshape(group, m // group, per, -1)
            view *= inv.reshape(group, 1, per, 1)
            self.arrays[consumer.input[1]] = view.reshape(w2.shape)
        else:
            ax = input_axis(consumer, w2)
            w2 *= inv.reshape(_channel_shape(w2.ndim, ax, f.size))


def _spread(r: np.ndarray) -> float:
    live = r[r > 0]
    return float(live.max() / live.min()) if live.size else 1.0


def activation_ranges(
    model: onnx.ModelProto, data, tensors: Sequence[tuple[str, int]], *, num_samples: int
) -> list[np.ndarray]:
    """Per-channel max |x| of each (tensor, channel axis) over the samples, from the float model."""
    specs = onnxutil.input_specs(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    outputs = {o.name for o in m.graph.output}
    names = list(dict.fromkeys(t for t, _ in tensors))
    for name in names:
        if name not in outputs:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
    session = onnxutil.ort_session(m, optimize=False)
    axis_of = dict(tensors)
    peak: dict[str, np.ndarray] = {}
    for i, feed in enumerate(open_samples(data, inputs=specs, limit=num_samples)):
        try:
            values = session.run(names, dict(feed))
        except Exception as e:  # onnxruntime's own exception types
            raise ModelError(f"onnxruntime failed on sample {i}: {str(e).splitlines()[0][:300]}") from None
        for name, v in zip(names, values, strict=True):
            a = np.abs(np.asarray(v, dtype=np.float64))
            axis = axis_of[name]
            m_c = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).max(axis=1)
            peak[name] = m_c if name not in peak else np.maximum(peak[name], m_c)
    if not peak:
        raise DataError("equalize: the data has no samples")
    return [peak[t].copy() for t, _ in tensors]


def equalize(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    data=None,
    num_samples: int = 256,
    sweeps: int = 20,
    tolerance: float = 1e-3,
    exclude: Sequence[str] = (),
) -> EqualizeResult:
    """Cross-layer equalize ``model`` (see the module docstring); the input model is not modified.

    ``data``: optional samples (anything :func:`edgeq.data.open_samples` accepts, at most ``num_samples``).
    Without them the first layer's output range of channel ``c`` is taken from its weights (DFQ, data-free);
    with them it is the measured max |activation| of channel ``c`` where the second layer reads it — the
    range that int8 actually has to cover, which weights do not predict for fixed front ends (an STFT, a
    spectrum) or normalisation layers. The scaling stays exact either way (the measured ranges only choose
    the factors; a scaled channel's range scales by the same factor).
    ``sweeps``: at most this many passes over all pairs; stops early once no channel scale moves by more
    than ``tolerance`` (relative). ``exclude``: node names never rescaled (as producer or consumer).
    The float function is unchanged up to float32 rounding of the rescaled weights.
    """
    if sweeps < 1:
        raise ConfigError(f"equalize: sweeps must be at least 1, not {sweeps}")
    proto = onnxutil.load_model(model)
    eq = _Equalizer(proto)
    excluded = set(exclude)
    pairs = [
        p
        for p in eq.find_pairs()
        if eq.g.nodes[p.producer].name not in excluded and eq.g.nodes[p.consumer].name not in excluded
    ]
    measured = None
    if data is not None and pairs:
        measured = activation_ranges(
            proto, data, [(p.tensor, p.axis) for p in pairs], num_samples=num_samples
        )

    def producer_ranges(k: int) -> np.ndarray:
        return measured[k] if measured is not None else eq.ranges(pairs[k])[0]

    before = [_spread(producer_ranges(k)) for k in range(len(pairs))]
    pinned = [0] * len(pairs)
    done = 0
    for sweep in range(sweeps):
        done = sweep + 1
        moved = 0.0
        for k, pair in enumerate(pairs):
            r1, r2 = eq.ranges(pair)
            if measured is not None:
                r1 = measured[k]
            live = (r1 > 0) & (r2 > 0)
            f = np.ones_like(r1)
            f[live] = np.sqrt(r2[live] / r1[live])
            if pair.clip_hi is not None:
                upper = eq.upper_bounds(pair) if pair.bound_ok else None
                if upper is None:
                    upper = np.full(f.shape, np.inf)
                ok = (upper > 0) & (upper <= pair.clip_hi)
                f = np.where(ok, np.minimum(f, pair.clip_hi / np.where(ok, upper, 1.0)), 1.0)
                pinned[k] = int(np.sum(~ok))
            moved = max(moved, float(np.max(np.abs(np.log(f)))) if f.size else 0.0)
            eq.apply(pair, f)
            if measured is not None:
                measured[k] = measured[k] * f  # the chain is positively homogeneous: ranges scale by f
        if moved < tolerance:
            break
    after = [_spread(producer_ranges(k)) for k in range(len(pairs))]
    result = replace_initializers(proto, eq.arrays)
    info = tuple(
        EqualizedPair(
            producer=eq.g.nodes[p.producer].name,
            consumer=eq.g.nodes[p.consumer].name,
            via=tuple(eq.g.nodes[v].op_type for v in p.via),
            channels=int(eq.ranges(p)[0].size),
            pinned=pinned[k],
            spread_before=before[k],
            spread_after=after[k],
        )
        for k, p in enumerate(pairs)
    )
    return EqualizeResult(result, info, done)
