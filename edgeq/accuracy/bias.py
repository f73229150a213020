"""Empirical bias correction: a float ONNX → float ONNX transform that cancels the int8 model's mean error.

Quantization error is not zero-mean per channel: rounding a small depthwise kernel shifts its output by
``Σ δw · E[x]``, clipped activation ranges cut one tail, and noise through a ReLU is rectified. The next
layers see a shifted input. For every int8 weighted layer (Conv, Gemm, MatMul followed by a bias Add), in
graph order, edgeq runs the float model and the int8 model (fake-quantized, so the layer's output before
requantization is visible) on the calibration samples, takes the mean error of each output channel,
``E[y_int8 - y_float]``, and subtracts it from that channel's bias. Layers are corrected one after the
other, each measured with all earlier corrections in place, so a correction also absorbs the mean error
that earlier layers pass down (Nagel et al. 2019, §4.2, empirical variant; Finkelstein et al. 2019).

The result is what to hand to ``quantize`` (with the same table): its biases are pre-compensated for int8.
It is not a new float reference: compare the int8 model with the original float model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgeq import onnxutil
from edgeq.accuracy.graphutil import attr, is_weighted, uses
from edgeq.accuracy.layers import Quantizer, range_mapping
from edgeq.config import Target
from edgeq.data import open_samples
from edgeq.errors import ConfigError, ModelError
from edgeq.progress import track
from edgeq.quantize import quantize
from edgeq.quantize.graph import GraphIndex


@dataclass(frozen=True)
class CorrectedLayer:
    """One corrected layer; errors are ``mean over channels |E[y_int8 - y_float]|`` divided by the RMS of
    the float tensor (dimensionless), measured before any correction and after all of them."""

    node: str
    tensor: str
    channels: int
    error_before: float
    error_after: float
    applied: bool = True  # False: the correction raised the output noise and was taken back


@dataclass(frozen=True)
class BiasCorrectionResult:
    """The bias-corrected float model (to quantize) and one entry per corrected layer."""

    model: onnx.ModelProto
    layers: tuple[CorrectedLayer, ...]
    num_samples: int
    skipped: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [f"bias correction: {len(self.layers)} layers, {self.num_samples} samples"]
        for c in self.layers:
            note = "" if c.applied else " (not applied: it raised the output error)"
            lines.append(
                f"  {c.node}: mean channel error {c.error_before:.3g} → {c.error_after:.3g} "
                f"(× float RMS){note}"
            )
        if self.skipped:
            lines.append(f"  not corrected (no bias to adjust): {', '.join(self.skipped)}")
        return "\n".join(lines)


@dataclass
class _Target:
    node: str  # the weighted node's name
    tensor: str  # the tensor whose per-channel mean is corrected (the node's output, or its bias Add's)
    axis: int  # channel axis of that tensor
    bias_node: str  # the node whose constant operand is adjusted (the weighted node or its bias Add)
    bias_input: int  # index of that operand (-1: the weighted node has no bias yet)
    scale: float  # the operand is multiplied by this before it is added (Gemm's beta)


def _targets(model: onnx.ModelProto, names: Sequence[str]) -> tuple[list[_Target], list[str]]:
    g = GraphIndex(model)
    counts = uses(model)
    by_name = {n.name: n for n in g.nodes}
    found, skipped = [], []
    for name in names:
        node = by_name[name]
        if not is_weighted(g, node):
            continue
        out = node.output[0]
        rank = len(g.shapes[out].dim) if out in g.shapes else None
        if rank is None:
            skipped.append(name)
            continue
        axis = 1 if node.op_type == "Conv" else rank - 1
        channels = g.shapes[out].dim[axis].dim_value
        if node.op_type in ("Conv", "Gemm"):
            bias = node.input[2] if len(node.input) > 2 else ""
            if bias and counts.get(bias, 0) != 1:
                skipped.append(name)
                continue
            beta = float(attr(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
            if beta == 0.0:
                skipped.append(name)
                continue
            found.append(_Target(name, out, axis, name, 2 if bias else -1, beta))
            continue
        # MatMul: its bias lives in the Add after it (how exporters write a Linear on 3-D inputs)
        cons = g.consumers.get(out, [])
        add = g.nodes[cons[0][0]] if len(cons) == 1 and out not in g.output_set else None
        if add is None or add.op_type != "Add" or not add.name:
            skipped.append(name)
            continue
        j = 1 if add.input[0] == out else 0
        const = add.input[j]
        if not g.is_constant(const) or counts.get(const, 0) != 1:
            skipped.append(name)
            continue
        shape = np.asarray(g.array(const)).shape
        if int(np.prod(shape)) != channels or (shape and shape[-1] != channels):
            skipped.append(name)
            continue
        found.append(_Target(name, add.output[0], axis, add.name, j, 1.0))
    return found, skipped


class _Runner:
    """Runs a model (float, or fake-quantized QDQ) over the samples and reduces what it fetched.

    Per-channel means of the requested tensors, their RMS, and the graph outputs kept whole (for the
    output noise).
    """

    def __init__(self, feeds: list[dict]):
        self.feeds = feeds

    def run(
        self, model: onnx.ModelProto, tensors: Mapping[str, int]
    ) -> tuple[dict[str, np.ndarray], dict[str, float], list[np.ndarray]]:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        outputs = [o.name for o in m.graph.output]
        for name in tensors:
            if name not in outputs:
                m.graph.output.append(onnx.ValueInfoProto(name=name))
        # optimizations off: the QDQ model runs fake-quantized, every tensor visible before requantization
        session = onnxutil.ort_session(m, optimize=False)
        names = list(tensors)
        sums: dict[str, np.ndarray] = {}
        squares: dict[str, float] = dict.fromkeys(names, 0.0)
        counts: dict[str, int] = dict.fromkeys(names, 0)
        results: list[np.ndarray] = []
        for i, feed in enumerate(self.feeds):
            try:
                values = session.run([*outputs, *names], feed)
            except Exception as e:  # onnxruntime's own exception types
                raise ModelError(
                    f"onnxruntime failed on sample {i}: {str(e).splitlines()[0][:300]}"
                ) from None
            results.append(
                np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in values[: len(outputs)]])
            )
            for name, value in zip(names, values[len(outputs) :], strict=True):
                v = np.asarray(value, dtype=np.float64)
                axis = tensors[name]
                rows = np.moveaxis(v, axis, 0).reshape(v.shape[axis], -1)
                sums[name] = sums.get(name, 0.0) + rows.sum(axis=1)
                squares[name] += float(np.sum(v * v))
                counts[name] += rows.shape[1]
        means = {name: sums[name] / counts[name] for name in names}
        rms = {
            name: float(np.sqrt(squares[name] / (counts[name] * len(means[name])))) or 1.0 for name in names
        }
        return means, rms, results


def _qdq_tensor(qmodel: onnx.ModelProto, t: _Target) -> str:
    """The name of ``t.tensor`` in the QDQ model: the output of the same node (renamed if a graph output)."""
    return next(n for n in qmodel.graph.node if n.name == t.bias_node).output[0]


class _Biases:
    """The bias operands being corrected, as float64 arrays, written back once at the end."""

    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.inits = {t.name: t for t in self.model.graph.initializer}
        self.nodes = {n.name: n for n in self.model.graph.node}
        self.taken = {t.name for t in self.model.graph.initializer} | {
            o for n in self.model.graph.node for o in (*n.input, *n.output)
        }

    def restore(self, saved: onnx.ModelProto) -> None:
        self.model = saved
        self.inits = {t.name: t for t in self.model.graph.initializer}
        self.nodes = {n.name: n for n in self.model.graph.node}

    def subtract(self, t: _Target, error: np.ndarray) -> None:
        node = self.nodes[t.bias_node]
        if t.bias_input < 0 or len(node.input) <= t.bias_input or not node.input[t.bias_input]:
            name, k = f"{t.node}_bias", 0
            while name in self.taken:
                k += 1
                name = f"{t.node}_bias_{k}"
            self.taken.add(name)
            init = numpy_helper.from_array(np.zeros(error.shape, np.float32), name)
            self.model.graph.initializer.append(init)
            self.inits[name] = self.model.graph.initializer[-1]
            while len(node.input) < 2:
                node.input.append("")
            if len(node.input) == 2:
                node.input.append(name)
            else:
                node.input[2] = name
            t.bias_input = 2
        name = node.input[t.bias_input]
        init = self.inits[name]
        b = numpy_helper.to_array(init).astype(np.float64)
        shape = b.shape
        if b.size == 1 and error.size > 1:  # a scalar Gemm C becomes per-channel
            b, shape = np.full(error.shape, b.reshape(-1)[0]), error.shape
        b = b.reshape(-1) - error / t.scale
        init.CopyFrom(numpy_helper.from_array(b.reshape(shape).astype(np.float32), name))


def correct_bias(
    float_model: str | os.PathLike[str] | onnx.ModelProto,
    table: Mapping | object,
    data,
    *,
    target: Target | str,
    num_samples: int = 256,
    exclude: Sequence[str] = (),
    progress: bool | None = None,
) -> BiasCorrectionResult:
    """Bias-correct ``float_model`` for its int8 quantization with ``table`` on ``target``.

    ``data``: calibration samples (anything :func:`edgeq.data.open_samples` accepts; at most
    ``num_samples``). ``exclude``: nodes that stay float (they are not corrected and the int8 model measured
    keeps them float too). Costs one quantization and one pass over the samples per corrected layer.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"num_samples must be a positive integer, not {num_samples!r}")
    proto = onnxutil.load_model(float_model)
    ranges = range_mapping(table, proto)
    quantizer = Quantizer(proto, ranges, target=target, exclude=exclude)
    specs = onnxutil.input_specs(proto)
    feeds = [dict(s) for s in open_samples(data, inputs=specs, limit=num_samples)]
    if not feeds:
        raise ConfigError("bias correction needs at least one calibration sample")
    targets, skipped = _targets(proto, [layer.name for layer in quantizer.layers])
    if not targets:
        return BiasCorrectionResult(proto, (), len(feeds), tuple(skipped))
    axes = {t.tensor: t.axis for t in targets}
    runner = _Runner(feeds)
    reference, rms, float_out = runner.run(proto, axes)
    biases = _Biases(proto)

    def measure(model: onnx.ModelProto, todo: list[_Target]) -> tuple[dict[str, np.ndarray], float]:
        """Mean channel errors of ``todo`` in the int8 model of ``model``, and its output noise: the mean over
        samples of the noise energy relative to the sample's float output energy."""
        qmodel = quantize(model, ranges, target=quantizer.target, exclude=list(exclude)).model
        names = {t.tensor: _qdq_tensor(qmodel, t) for t in todo}
        means, _, out = runner.run(qmodel, {names[t.tensor]: t.axis for t in todo})
        # every sample weighs the same: a few loud samples must not outvote the rest
        noise = float(
            np.mean(
                [
                    np.sum((q - f) ** 2) / max(float(np.sum(f * f)), 1e-30)
                    for q, f in zip(out, float_out, strict=True)
                ]
            )
        )
        return {t.tensor: means[names[t.tensor]] - reference[t.tensor] for t in todo}, noise

    before, noise = measure(proto, targets)
    current = before
    rejected = []
    for k, t in enumerate(track(targets, description="bias correction", total=len(targets), show=progress)):
        saved = onnx.ModelProto()
        saved.CopyFrom(biases.model)
        biases.subtract(t, current[t.tensor])
        # A mean correction always lowers this tensor's mean squared error, but an error that is not the same
        # for every input (clipping of rare large values) is not a bias: subtracting its mean shifts every
        # other input. Each correction is kept only if the model's output noise on the samples goes down.
        trial, trial_noise = measure(biases.model, targets[k + 1 :] or targets[-1:])
        if trial_noise <= noise:
            current, noise = trial, trial_noise
        else:
            biases.restore(saved)
            rejected.append(t.node)
    after, _ = measure(biases.model, targets)
    layers = tuple(
        CorrectedLayer(
            t.node,
            t.tensor,
            int(before[t.tensor].size),
            float(np.mean(np.abs(before[t.tensor]))) / rms[t.tensor],
            float(np.mean(np.abs(after[t.tensor]))) / rms[t.tensor],
            t.node not in rejected,
        )
        for t in targets
    )
    return BiasCorrectionResult(biases.model, layers, len(feeds), tuple(skipped))
