"""Helpers for the .tflite / Android tests (no tests here): QDQ models made with onnxruntime's quantizer.

Until edgeq.quantize is in every test's reach, QDQ models come from
``onnxruntime.quantization.quantize_static`` with the settings edgeq's Android target uses: QDQ format, int8
activations (asymmetric) and weights, per-channel weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from edgeq.lower import options as O
from edgeq.lower import program as P


class _Samples:
    """onnxruntime's CalibrationDataReader protocol over an array of samples (one batch-1 feed each)."""

    def __init__(self, name: str, samples: np.ndarray):
        self._name = name
        self._it = iter(samples)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {self._name: np.ascontiguousarray(x[None], dtype=np.float32)}


def quantize_qdq(
    float_model: onnx.ModelProto | str | os.PathLike[str],
    samples: np.ndarray,
    out: Path,
    *,
    preprocess: bool = False,
) -> Path:
    """QDQ int8 of ``float_model`` (per-channel weights, asymmetric activations), calibrated on ``samples``.

    ``preprocess``: run onnxruntime's quant_pre_process first (shape inference + basic optimisations, which
    fold the BatchNorm-style Mul/Add that Keras exports leave after depthwise convolutions).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(out)
    src = out.with_suffix(".float.onnx")
    if isinstance(float_model, onnx.ModelProto):
        onnx.save(float_model, str(src))
    else:
        src.write_bytes(Path(float_model).read_bytes())
    if preprocess:
        pre = out.with_suffix(".pre.onnx")
        quant_pre_process(str(src), str(pre))
        src = pre
    name = onnx.load(str(src)).graph.input[0].name
    quantize_static(
        str(src),
        str(out),
        _Samples(name, samples),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": False},
    )
    return out


def digits_images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn digits: train/test NHWC 8×8×1 in [0, 1] and labels, split as for the shared models."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    return xtr, xte, ytr, yte


def upsample_rgb(x: np.ndarray) -> np.ndarray:
    """8×8×1 digits → 32×32×3 (nearest ×4, grey to 3 channels), as the mbv2_32 model was trained."""
    return np.repeat(np.repeat(x, 4, axis=1), 4, axis=2).repeat(3, axis=3)


def f32(x: float) -> float:
    return float(np.float32(x))


class Prog:
    """A one-op program under construction, with seeded random quantization."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, P.TensorInfo] = {}
        self.inputs: list[str] = []
        self.ops: list[P.Op] = []

    def qp(self, lo: float = 0.01, hi: float = 0.1, zp: int = 40) -> P.QParams:
        return P.QParams.per_tensor(f32(self.rng.uniform(lo, hi)), int(self.rng.integers(-zp, zp + 1)))

    def input(self, shape, qp: P.QParams | None = None) -> str:
        name = f"in{len(self.inputs)}"
        self.tensors[name] = P.TensorInfo(name, tuple(shape), P.DType.INT8, qp or self.qp())
        self.inputs.append(name)
        return name

    def const(self, name: str, data: np.ndarray, dtype: P.DType, qp: P.QParams | None = None) -> str:
        self.tensors[name] = P.TensorInfo(name, data.shape, dtype, qp, data)
        return name

    def weights(self, shape, axis: int, *, per_channel: bool = True) -> tuple[str, P.QParams]:
        n = shape[axis]
        scales = tuple(f32(s) for s in self.rng.uniform(0.002, 0.05, n if per_channel else 1))
        qp = P.QParams(scales, (0,) * len(scales), axis if per_channel else None)
        data = self.rng.integers(-127, 128, shape).astype(np.int8)
        return self.const("w", data, P.DType.INT8, qp), qp

    def bias(self, n: int, in_qp: P.QParams, w_qp: P.QParams) -> str:
        ws = w_qp.scale if len(w_qp.scale) == n else w_qp.scale * n
        scales = tuple(f32(np.float32(in_qp.scale[0]) * np.float32(s)) for s in ws)
        per_channel = len(w_qp.scale) > 1
        qp = P.QParams(scales, (0,) * n, 0) if per_channel else P.QParams.per_tensor(scales[0], 0)
        return self.const("b", self.rng.integers(-3000, 3000, n).astype(np.int32), P.DType.INT32, qp)

    def op(self, kind: P.OpKind, inputs, shape, options, qp: P.QParams | None, dtype=P.DType.INT8) -> str:
        name = f"out{len(self.ops)}"
        self.tensors[name] = P.TensorInfo(name, tuple(int(d) for d in shape), dtype, qp)
        self.ops.append(P.Op(kind, tuple(inputs), (name,), options, source=f"node_{kind.value.lower()}"))
        return name

    def build(self) -> P.Program:
        return P.Program(self.tensors, tuple(self.ops), tuple(self.inputs), (self.ops[-1].outputs[0],))

    def act(self, out_qp: P.QParams) -> P.Activation:
        kind = [P.FusedActivation.NONE, P.FusedActivation.RELU, P.FusedActivation.RELU6][self.rng.integers(3)]
        return O.activation(kind, out_qp)


def litert(data: bytes, *, reference: bool = True):
    """A LiteRT interpreter with the builtin reference kernels (or, with ``reference=False``, the default
    resolver and its XNNPACK delegate: what a phone's CPU path runs)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    it = Interpreter(model_content=data, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    return it


def compare_with_litert(
    tflite: bytes,
    program: P.Program,
    feeds: list[dict[str, np.ndarray]],
    stats: list[int],
    *,
    max_lsb: int,
    key: str,
) -> None:
    """Run ``tflite`` in LiteRT's reference kernels and ``program`` in edgeq's reference interpreter on each
    feed; accumulate ``stats`` = [elements, exact, max |diff|] and fail beyond ``max_lsb``."""
    from edgeq.lower.reference import run

    it = litert(tflite)
    for fd in feeds:
        want = run(program, fd)[program.outputs[0]]
        for detail, name in zip(it.get_input_details(), program.inputs, strict=True):
            it.set_tensor(detail["index"], fd[name])
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"])
        assert got.shape == want.shape and got.dtype == want.dtype
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        stats[0] += diff.size
        stats[1] += int((diff == 0).sum())
        stats[2] = max(stats[2], int(diff.max()))
        assert diff.max() <= max_lsb, f"{key}: LiteRT and the reference differ by up to {diff.max()} LSB"
