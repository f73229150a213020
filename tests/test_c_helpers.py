"""Helpers for the C-backend and MCU tests (no tests here): hand-built integer programs and QDQ models.

:class:`ProgramBuilder` makes small :class:`~edgeq.lower.program.Program` values with seeded random weights
and quantization, each op's options computed by :mod:`edgeq.lower.options` exactly as the lowering does, so
the C kernels can be checked op by op against the reference interpreter. :func:`benchmark_qdq` builds the QDQ
int8 models of the two benchmark networks with onnxruntime's quantizer (cached per test session).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.lower import options as O
from edgeq.lower.fixedpoint import f64, requant
from edgeq.lower.program import (
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    FullyConnectedOptions,
    Op,
    OpKind,
    PadOptions,
    Pool2DOptions,
    Program,
    QParams,
    ReshapeOptions,
    ResizeOptions,
    TensorInfo,
    TransposeOptions,
)


class ProgramBuilder:
    """Append ops one by one; every call returns the new tensor's name. Seeded: same seed, same program."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.tensors: dict[str, TensorInfo] = {}
        self.ops: list[Op] = []
        self.inputs: list[str] = []
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def qp(self) -> QParams:
        return QParams.per_tensor(float(self.rng.uniform(0.01, 0.1)), int(self.rng.integers(-30, 30)))

    def act(self, shape: tuple[int, ...], qparams: QParams | None = None) -> str:
        name = self._name("t")
        self.tensors[name] = TensorInfo(name, shape, DType.INT8, qparams or self.qp())
        return name

    def input(self, shape: tuple[int, ...], qparams: QParams | None = None) -> str:
        name = self.act(shape, qparams)
        self.inputs.append(name)
        return name

    def const(self, array: np.ndarray, dtype: DType, qparams: QParams | None = None) -> str:
        name = self._name("c")
        self.tensors[name] = TensorInfo(name, array.shape, dtype, qparams, array)
        return name

    def q(self, name: str) -> QParams:
        return self.tensors[name].qparams

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def _op(self, kind: OpKind, inputs, out: str, options) -> str:
        self.ops.append(Op(kind, tuple(inputs), (out,), options, f"{kind.value.lower()}_{len(self.ops)}"))
        return out

    # -- convolutions --

    def conv(
        self,
        x: str,
        out_c: int,
        k: int = 3,
        *,
        stride: int = 1,
        pad: int | None = None,
        dilation: int = 1,
        act: str = "NONE",
        depthwise: bool = False,
        multiplier: int = 1,
        per_tensor: bool = False,
        big: bool = False,
    ) -> str:
        n, h, w, c = self.shape(x)
        pad = (k // 2) * dilation if pad is None else pad
        eff = (k - 1) * dilation + 1
        oh, ow = (h + 2 * pad - eff) // stride + 1, (w + 2 * pad - eff) // stride + 1
        if depthwise:
            out_c = c * multiplier
            wt = self.rng.integers(-127, 128, (1, k, k, out_c)).astype(np.int8)
            axis = 3
        else:
            wt = self.rng.integers(-127, 128, (out_c, k, k, c)).astype(np.int8)
            axis = 0
        # big: scales that make the real multiplier > 0.5 (a left shift in the requantization)
        lo, hi = (0.05, 0.2) if big else (0.0005, 0.005)
        ws = (float(self.rng.uniform(lo, hi)),) * (1 if per_tensor else out_c)
        wq = QParams(ws, (0,) * len(ws), None if per_tensor else axis)
        wn = self.const(wt, DType.INT8, wq)
        in_s = self.q(x).scale[0]
        bias = self.rng.integers(-3000, 3000, out_c).astype(np.int32)
        bn = self.const(
            bias, DType.INT32, QParams(tuple(in_s * s for s in (ws * out_c)[:out_c]), (0,) * out_c, 0)
        )
        y = self.act((n, oh, ow, out_c))
        r = O.conv_requant(self.q(x), wq, self.q(y), out_c)
        a = O.activation(act, self.q(y))
        if depthwise:
            opt = DepthwiseConv2DOptions((stride, stride), (dilation, dilation), (pad,) * 4, multiplier, a, r)
            return self._op(OpKind.DEPTHWISE_CONV_2D, (x, wn, bn), y, opt)
        opt = Conv2DOptions((stride, stride), (dilation, dilation), (pad,) * 4, a, r)
        return self._op(OpKind.CONV_2D, (x, wn, bn), y, opt)

    def fc(self, x: str, out_n: int, *, act: str = "NONE", per_channel: bool = True) -> str:
        in_n = self.shape(x)[-1]
        wt = self.rng.integers(-127, 128, (out_n, in_n)).astype(np.int8)
        ws = tuple(float(v) for v in self.rng.uniform(0.001, 0.01, out_n if per_channel else 1))
        wq = QParams(ws, (0,) * len(ws), 0 if per_channel else None)
        wn = self.const(wt, DType.INT8, wq)
        in_s = self.q(x).scale[0]
        full = ws if per_channel else ws * out_n
        bias = self.rng.integers(-3000, 3000, out_n).astype(np.int32)
        bn = self.const(bias, DType.INT32, QParams(tuple(in_s * s for s in full), (0,) * out_n, 0))
        y = self.act((*self.shape(x)[:-1], out_n))
        scales = O.effective_scales(self.q(x), wq, self.q(y), out_n)
        opt = FullyConnectedOptions(O.activation(act, self.q(y)), requant(*scales), False, scales)
        return self._op(OpKind.FULLY_CONNECTED, (x, wn, bn), y, opt)

    # -- elementwise --

    def add(self, a: str, b: str, *, act: str = "NONE", sub: bool = False) -> str:
        y = self.act(tuple(np.broadcast_shapes(self.shape(a), self.shape(b))))
        opt = O.add_options(self.q(a), self.q(b), self.q(y), O.activation(act, self.q(y)))
        return self._op(OpKind.SUB if sub else OpKind.ADD, (a, b), y, opt)

    def mul(self, a: str, b: str, *, act: str = "NONE") -> str:
        y = self.act(tuple(np.broadcast_shapes(self.shape(a), self.shape(b))))
        return self._op(
            OpKind.MUL,
            (a, b),
            y,
            O.mul_options(self.q(a), self.q(b), self.q(y), O.activation(act, self.q(y))),
        )

    def prelu(self, x: str, alpha_shape: tuple[int, ...]) -> str:
        aq = QParams.per_tensor(0.01, 3)
        alpha = self.const(self.rng.integers(-100, 100, alpha_shape).astype(np.int8), DType.INT8, aq)
        y = self.act(self.shape(x))
        return self._op(OpKind.PRELU, (x, alpha), y, O.prelu_options(self.q(x), aq, self.q(y)))

    def unary(self, kind: OpKind, x: str, *, alpha: float = 0.1) -> str:
        if kind is OpKind.LOGISTIC:
            y = self.act(self.shape(x), O.PROBABILITY_QPARAMS)
            return self._op(kind, (x,), y, O.logistic_options(self.q(x), self.q(y)))
        y = self.act(self.shape(x))
        if kind is OpKind.HARD_SWISH:
            opt = O.hard_swish_options(self.q(x), self.q(y))
        elif kind in (OpKind.RELU, OpKind.RELU6):
            opt = O.relu_options(self.q(x), self.q(y), six=kind is OpKind.RELU6)
        elif kind is OpKind.LEAKY_RELU:
            opt = O.leaky_relu_options(alpha, self.q(x), self.q(y))
        else:
            raise ValueError(kind)
        return self._op(kind, (x,), y, opt)

    def softmax(self, x: str, beta: float = 1.0) -> str:
        y = self.act(self.shape(x), O.PROBABILITY_QPARAMS)
        return self._op(OpKind.SOFTMAX, (x,), y, O.softmax_options(beta, self.q(x)))

    def requantize(self, x: str) -> str:
        y = self.act(self.shape(x))
        return self._op(OpKind.QUANTIZE, (x,), y, O.requantize_options(self.q(x), self.q(y)))

    # -- pooling, reduction, data movement --

    def pool(
        self, x: str, k: int, *, stride: int, pad: int = 0, average: bool = False, act: str = "NONE"
    ) -> str:
        n, h, w, c = self.shape(x)
        oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        y = self.act((n, oh, ow, c), self.q(x))
        opt = Pool2DOptions((k, k), (stride, stride), (pad,) * 4, O.activation(act, self.q(y)))
        return self._op(OpKind.AVERAGE_POOL_2D if average else OpKind.MAX_POOL_2D, (x,), y, opt)

    def mean(self, x: str) -> str:
        n, h, w, c = self.shape(x)
        y = self.act((n, 1, 1, c))
        return self._op(OpKind.MEAN, (x,), y, O.mean_options(self.q(x), self.q(y), h * w))

    def reshape(self, x: str, shape: tuple[int, ...]) -> str:
        y = self.act(shape, self.q(x))
        return self._op(OpKind.RESHAPE, (x,), y, ReshapeOptions(shape))

    def pad(self, x: str, paddings: tuple[tuple[int, int], ...]) -> str:
        shape = tuple(d + a + b for d, (a, b) in zip(self.shape(x), paddings, strict=True))
        y = self.act(shape, self.q(x))
        return self._op(OpKind.PAD, (x,), y, PadOptions(paddings, self.q(x).zero_point[0]))

    def concat(self, xs: list[str], axis: int) -> str:
        shapes = [self.shape(x) for x in xs]
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        y = self.act(tuple(out), self.q(xs[0]))
        return self._op(OpKind.CONCATENATION, xs, y, ConcatenationOptions(axis))

    def transpose(self, x: str, perm: tuple[int, ...]) -> str:
        y = self.act(tuple(self.shape(x)[p] for p in perm), self.q(x))
        pn = self.const(np.asarray(perm, np.int32), DType.INT32)
        return self._op(OpKind.TRANSPOSE, (x, pn), y, TransposeOptions(perm))

    def resize(
        self,
        x: str,
        size: tuple[int, int],
        *,
        bilinear: bool,
        align_corners: bool = False,
        half_pixel_centers: bool = False,
    ) -> str:
        n, _, _, c = self.shape(x)
        y = self.act((n, *size, c), self.q(x))
        sn = self.const(np.asarray(size, np.int32), DType.INT32)
        opt = ResizeOptions(size, align_corners, half_pixel_centers)
        kind = OpKind.RESIZE_BILINEAR if bilinear else OpKind.RESIZE_NEAREST_NEIGHBOR
        return self._op(kind, (x, sn), y, opt)

    def program(self, outputs: list[str]) -> Program:
        p = Program(self.tensors, tuple(self.ops), tuple(self.inputs), tuple(outputs))
        p.validate()
        return p


def random_inputs(program: Program, n: int, seed: int = 1) -> np.ndarray:
    """(n, input bytes) int8: every program input, concatenated per sample, uniformly random."""
    rng = np.random.default_rng(seed)
    size = sum(program.tensors[t].nbytes for t in program.inputs)
    return rng.integers(-128, 128, (n, size)).astype(np.int8)


def reference_outputs(program: Program, x: np.ndarray, **kw) -> np.ndarray:
    """(n, output bytes) int8 from the reference interpreter, laid out as edgeq_run writes them."""
    from edgeq.lower import run

    rows = []
    for sample in x:
        feed, off = {}, 0
        for t in program.inputs:
            info = program.tensors[t]
            feed[t] = sample[off : off + info.nbytes].reshape(info.shape)
            off += info.nbytes
        out = run(program, feed, **kw)
        rows.append(np.concatenate([out[t].ravel() for t in program.outputs]))
    return np.stack(rows)


# ---- the benchmark networks as QDQ int8 (onnxruntime's quantizer) -----------------------------------------


def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)


_SESSION_DIR: list[Path] = []


def _session_dir() -> Path:
    """One temporary folder per test session for the quantized benchmark models (removed at exit)."""
    if not _SESSION_DIR:
        import atexit
        import shutil
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="edgeq-test-qdq-"))
        atexit.register(shutil.rmtree, path, True)
        _SESSION_DIR.append(path)
    return _SESSION_DIR[0]


def benchmark_qdq(shared: Path, name: str, folder: Path | None = None, *, calibration: int = 100) -> Path:
    """QDQ int8 (per-channel weights, int8 activations) of shared/models/{name}_float_nhwc.onnx.

    ORT's pre-processing folds the Mul/Add pairs into the convolutions first, as TFLite's converter does.
    Quantized once per test session (``folder`` is ignored: the session's cache folder is used).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = _session_dir()
    out = folder / f"{name}_{calibration}_qdq.onnx"
    if out.is_file():
        return out
    x_train = digits_split()[0][:calibration]
    if name == "mbv2_32":
        cal = [np.repeat(np.repeat(x, 4, 0), 4, 1)[..., None].repeat(3, -1) for x in x_train]
    else:
        cal = [x[..., None] for x in x_train]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(cal)

        def get_next(self):
            v = next(self.it, None)
            return None if v is None else {"input": v[None].astype(np.float32)}

    pre = folder / f"{name}_{calibration}_pre.onnx"
    quant_pre_process(str(shared / f"{name}_float_nhwc.onnx"), str(pre))
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": False},
    )
    return out


__all__ = ["ProgramBuilder", "benchmark_qdq", "digits_split", "f64", "random_inputs", "reference_outputs"]
