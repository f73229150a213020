"""The C backend: an integer :class:`~edgeq.lower.program.Program` → C99 sources for a bare-metal core.

Output (``emit_c``): ``model.h`` (``int edgeq_run(const int8_t *input, int8_t *output)``, sizes and the
quantization of every input and output), ``model.c`` (the schedule: one kernel call per op, pointers into one
static arena at offsets from the memory planner), ``model_data.c`` (weights, biases, requantization tables as
const arrays, i.e. flash) and ``runtime/`` (the kernels the model uses). Nothing is allocated at run time and
nothing from libc beyond memcpy/memset is called. The same program and target give byte-identical files.

Storage: program inputs are read where the caller keeps them (``input``, possibly flash), program outputs are
written straight into the caller's ``output``; every other activation lives in the arena. RESHAPE costs
nothing (its output is its input's bytes), and elementwise ops (ADD, SUB, MUL, PRELU, table lookups,
requantization) write over an input that dies with them. With several inputs (outputs), ``input``
(``output``) holds them one after another in the program's order, at the offsets model.h names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from edgeq._compat import StrEnum
from edgeq.backends.c.memplan import Buffer, MemoryPlan, plan_memory
from edgeq.backends.c.runtime_files import kernel_sources
from edgeq.config import Target, load_target
from edgeq.errors import UnsupportedError
from edgeq.lower.program import DType, Op, OpKind, Program, TensorInfo
from edgeq.lower.reference import FcRescale

#: Ops whose output may overwrite the input at the given positions (same shape, read once per element).
_IN_PLACE: dict[OpKind, tuple[int, ...]] = {
    OpKind.ADD: (0, 1),
    OpKind.SUB: (0, 1),
    OpKind.MUL: (0, 1),
    OpKind.PRELU: (0,),
    OpKind.LOGISTIC: (0,),
    OpKind.HARD_SWISH: (0,),
    OpKind.LEAKY_RELU: (0,),
    OpKind.RELU: (0,),
    OpKind.RELU6: (0,),
    OpKind.QUANTIZE: (0,),
}

#: The runtime source file each op kind needs (headers are always shipped).
_KERNEL_FILE: dict[OpKind, str] = {
    OpKind.CONV_2D: "conv.c",
    OpKind.DEPTHWISE_CONV_2D: "depthwise.c",
    OpKind.FULLY_CONNECTED: "fully_connected.c",
    OpKind.ADD: "elementwise.c",
    OpKind.SUB: "elementwise.c",
    OpKind.MUL: "elementwise.c",
    OpKind.PRELU: "elementwise.c",
    OpKind.MAX_POOL_2D: "pooling.c",
    OpKind.AVERAGE_POOL_2D: "pooling.c",
    OpKind.MEAN: "mean.c",
    OpKind.SOFTMAX: "softmax.c",
    OpKind.LOGISTIC: "data_movement.c",
    OpKind.HARD_SWISH: "data_movement.c",
    OpKind.LEAKY_RELU: "data_movement.c",
    OpKind.RELU: "data_movement.c",
    OpKind.RELU6: "data_movement.c",
    OpKind.QUANTIZE: "data_movement.c",
    OpKind.PAD: "data_movement.c",
    OpKind.CONCATENATION: "data_movement.c",
    OpKind.TRANSPOSE: "data_movement.c",
    OpKind.RESIZE_NEAREST_NEIGHBOR: "data_movement.c",
    OpKind.RESIZE_BILINEAR: "data_movement.c",
    OpKind.RESHAPE: "",
}

_ARENA_ALIGNMENT = 4

#: ADD/SUB of at least this many elements use per-input tables of rescaled values (2 KB of flash per op).
_ADD_TABLE_MIN = 512


class Place(StrEnum):
    """Where a tensor's bytes are."""

    ARENA = "arena"
    INPUT = "input"  # the caller's input buffer
    OUTPUT = "output"  # the caller's output buffer
    CONST = "const"  # a const array (flash)


@dataclass(frozen=True)
class OpInfo:
    """One op of the schedule, for reports: what it is, where it came from, its cost."""

    index: int
    kind: str
    source: str
    output: str
    output_shape: tuple[int, ...]
    macs: int
    weight_bytes: int
    emitted: bool  # False for ops that cost nothing (RESHAPE aliasing)


@dataclass(frozen=True)
class TensorIO:
    """A program input or output as the C API sees it."""

    name: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    offset: int  # bytes into the input (output) buffer
    size: int


@dataclass(frozen=True)
class CModel:
    """Everything :func:`generate` produced: the files and the facts the packager and reports need."""

    files: dict[str, bytes]
    plan: MemoryPlan
    ops: tuple[OpInfo, ...]
    inputs: tuple[TensorIO, ...]
    outputs: tuple[TensorIO, ...]
    weight_bytes: int  # const data emitted (weights, biases, multipliers, tables, params excluded)
    scratch_bytes: int  # the part of the arena that is kernel scratch (im2col columns)
    activation_bound: int  # the liveness bound over activations alone
    dsp: bool  # firmware builds use the DSP-extension kernels (else -DEDGEQ_PORTABLE)
    largest_tensors: tuple[tuple[str, int], ...] = field(default=())

    @property
    def input_size(self) -> int:
        return sum(t.size for t in self.inputs)

    @property
    def output_size(self) -> int:
        return sum(t.size for t in self.outputs)

    @property
    def profiled_ops(self) -> tuple[OpInfo, ...]:
        """The ops that leave a profiling mark, in order (EDGEQ_PROFILE builds mark after each one)."""
        return tuple(o for o in self.ops if o.emitted)


# ---- helpers -----------------------------------------------------------------------------------------------


def _comment(text: str) -> str:
    """Text safe inside a C block comment, on one line."""
    return re.sub(r"[^\x20-\x7e]", "?", text).replace("*/", "* /")


def _c_float(x: float) -> str:
    """A float32 literal that reads back to the same float32 (9 significant digits always do)."""
    return f"{float(np.float32(x)):.9g}f"


def _shape4(shape: tuple[int, ...], what: str, op: Op) -> tuple[int, int, int, int]:
    if len(shape) > 4:
        raise UnsupportedError(
            f"{op.kind} ({op.source}): {what} has rank {len(shape)}; the C backend handles up to 4 dimensions"
        )
    s = (1,) * (4 - len(shape)) + tuple(shape)
    return s  # type: ignore[return-value]


def _zp(t: TensorInfo) -> int:
    return t.qparams.zero_point[0] if t.qparams is not None else 0


def _scale(t: TensorInfo) -> float:
    return t.qparams.scale[0] if t.qparams is not None else 1.0


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
        return ra


# ---- storage -----------------------------------------------------------------------------------------------


@dataclass
class _Storage:
    place: Place
    offset: int = 0  # within input/output buffers; arena offsets come from the plan
    const_of: str = ""  # for CONST: the constant tensor whose array this is


class _Layout:
    """Decides where every tensor lives: union of aliases (reshape, in place), then arena planning."""

    def __init__(self, program: Program, dsp: bool):
        self.p = program
        self.dsp = dsp
        self.uf = _UnionFind()
        self.copies: dict[int, tuple[str, str]] = {}  # op index → (src, dst) for reshapes that must copy
        self.in_place: set[int] = set()
        tensors = program.tensors
        self.last_use: dict[str, int] = {}
        self.first_def: dict[str, int] = {}
        for i, op in enumerate(program.ops):
            for n in op.inputs:
                self.last_use[n] = i
            for n in op.outputs:
                self.first_def[n] = i
        for n in program.outputs:
            self.last_use[n] = len(program.ops)  # outputs stay live to the end
        self.group_place: dict[str, _Storage] = {}
        off = 0
        for n in program.inputs:
            self.group_place[n] = _Storage(Place.INPUT, off)
            off += tensors[n].nbytes
        off = 0
        for n in program.outputs:
            if n in self.group_place:
                continue  # an input that is also an output: copied at the start (see _io_copies)
            self.group_place[n] = _Storage(Place.OUTPUT, off)
            off += tensors[n].nbytes
        for n, t in tensors.items():
            if t.is_constant:
                self.group_place[n] = _Storage(Place.CONST, const_of=n)
        self._alias()

    def storage(self, name: str) -> _Storage:
        return self.group_place.get(self.uf.find(name), _Storage(Place.ARENA))

    def _group_last_use(self, root: str) -> int:
        return max(self.last_use.get(n, self.first_def.get(n, 0)) for n in self.members(root))

    def members(self, root: str) -> list[str]:
        return [n for n in self.p.tensors if self.uf.find(n) == root]

    def _merge(self, a: str, b: str) -> bool:
        """Make a and b one storage group if their places are compatible."""
        ra, rb = self.uf.find(a), self.uf.find(b)
        if ra == rb:
            return True
        pa, pb = self.group_place.get(ra), self.group_place.get(rb)
        if pa is not None and pb is not None:
            return False  # two fixed places (input/output/const): cannot be the same bytes
        place = pa or pb
        root = self.uf.union(ra, rb)
        for r in (ra, rb):
            self.group_place.pop(r, None)
        if place is not None:
            self.group_place[root] = place
        return True

    def _alias(self) -> None:
        tensors = self.p.tensors
        for i, op in enumerate(self.p.ops):
            out = op.outputs[0]
            if op.kind is OpKind.RESHAPE:
                if not self._merge(op.inputs[0], out):
                    self.copies[i] = (op.inputs[0], out)
                continue
            positions = _IN_PLACE.get(op.kind, ())
            for k in positions:
                if k >= len(op.inputs):
                    continue
                src = op.inputs[k]
                st = self.storage(src)
                if st.place in (Place.INPUT, Place.CONST):
                    continue
                if tensors[src].shape != tensors[out].shape or tensors[src].nbytes != tensors[out].nbytes:
                    continue
                if any(op.inputs[j] == src for j in range(len(op.inputs)) if j != k):
                    continue  # the same tensor read twice (x + x)
                if self._group_last_use(self.uf.find(src)) != i:
                    continue  # read again later
                if self._merge(src, out):
                    self.in_place.add(i)
                    break

    def buffers(self) -> tuple[list[Buffer], dict[str, str]]:
        """Arena buffers (one per storage group living in the arena) and each tensor's buffer name."""
        groups: dict[str, list[str]] = {}
        for n, t in self.p.tensors.items():
            if t.is_constant:
                continue
            root = self.uf.find(n)
            if root in self.group_place:
                continue
            groups.setdefault(root, []).append(n)
        bufs = []
        buffer_of = {}
        for names in groups.values():
            size = max(self.p.tensors[n].nbytes for n in names)
            first = min(self.first_def.get(n, 0) for n in names)
            last = max(self.last_use.get(n, self.first_def.get(n, 0)) for n in names)
            bname = min(names, key=lambda n: (self.first_def.get(n, 0), n))
            bufs.append(Buffer(bname, size, first, last))
            for n in names:
                buffer_of[n] = bname
        bufs.sort(key=lambda b: (b.first, b.name))
        return bufs, buffer_of


# ---- the emitter -------------------------------------------------------------------------------------------


class _Emitter:
    def __init__(self, program: Program, target: Target, *, dsp: bool, fc_rescale: FcRescale):
        program.validate()
        self.p = program
        self.fc_rescale = FcRescale(fc_rescale)
        self.target = target
        self.dsp = dsp
        self._check_io()
        self.layout = _Layout(program, dsp)
        self.data: list[str] = []  # model_data.c definitions
        self.externs: list[str] = []
        self.params: list[str] = []  # static const parameter blocks in model.c
        self.body: list[str] = []
        self.const_names: dict[str, str] = {}
        self.blob_names: dict[tuple[str, bytes], str] = {}
        self.weight_bytes = 0
        self.scratch: dict[int, int] = {}  # op index → scratch bytes
        self.kernel_files: set[str] = set()
        self.infos: list[OpInfo] = []

    # -- checks --

    def _check_io(self) -> None:
        for n in (*self.p.inputs, *self.p.outputs):
            t = self.p.tensors[n]
            if t.dtype is not DType.INT8:
                raise UnsupportedError(
                    f"tensor '{n}': the C backend needs int8 program inputs and outputs, this one is "
                    f"{t.dtype.value}; quantize the model with an int8 scheme (an MCU target profile)"
                )
        if len(set(self.p.outputs)) != len(self.p.outputs):
            raise UnsupportedError(
                "program lists the same output twice; the C backend needs distinct outputs"
            )

    # -- constants --

    def _blob(self, ctype: str, values: Iterable[int], hint: str, comment: str = "") -> str:
        arr = list(int(v) for v in values)
        key = (ctype, np.asarray(arr, dtype=np.int64).tobytes())
        if key in self.blob_names:
            return self.blob_names[key]
        name = f"edgeq_{hint}{len(self.blob_names)}"
        self.blob_names[key] = name
        itemsize = {"int8_t": 1, "int16_t": 2, "int32_t": 4}[ctype]
        self.weight_bytes += itemsize * len(arr)
        per_line = {"int8_t": 24, "int16_t": 16, "int32_t": 8}[ctype]
        lines = [", ".join(str(v) for v in arr[i : i + per_line]) for i in range(0, len(arr), per_line)]
        note = f"/* {_comment(comment)} */\n" if comment else ""
        self.data.append(
            f"{note}EDGEQ_WEIGHTS_ATTRIBUTES const {ctype} {name}[{len(arr)}] = {{\n    "
            + ",\n    ".join(lines)
            + "\n};\n"
        )
        self.externs.append(f"extern const {ctype} {name}[{len(arr)}];")
        return name

    def _double_blob(self, values: Iterable[float], comment: str) -> str:
        vals = [float(v) for v in values]
        key = ("double", np.asarray(vals, dtype=np.float64).tobytes())
        if key in self.blob_names:
            return self.blob_names[key]
        name = f"edgeq_scale{len(self.blob_names)}"
        self.blob_names[key] = name
        self.weight_bytes += 8 * len(vals)
        # 17 significant digits read back to the same double.
        body = ",\n    ".join(f"{v:.17g}" for v in vals)
        self.data.append(
            f"/* {_comment(comment)} */\nEDGEQ_WEIGHTS_ATTRIBUTES const double {name}[{len(vals)}] = "
            f"{{\n    {body}\n}};\n"
        )
        self.externs.append(f"extern const double {name}[{len(vals)}];")
        return name

    def _const(self, tensor: str, hint: str) -> str:
        t = self.p.tensors[tensor]
        if t.data is None:
            raise UnsupportedError(f"tensor '{tensor}' must be a constant for this op in the C backend")
        ctype = {DType.INT8: "int8_t", DType.INT32: "int32_t", DType.INT16: "int16_t"}.get(t.dtype)
        if ctype is None:
            raise UnsupportedError(f"constant '{tensor}': {t.dtype.value} constants are not supported in C")
        name = self._blob(ctype, t.data.ravel().tolist(), hint, f"{tensor} {t.shape}")
        self.const_names[tensor] = name
        return name

    # -- pointers --

    def ptr(self, tensor: str, *, write: bool = False) -> str:
        st = self.layout.storage(tensor)
        if st.place is Place.CONST:
            if write:
                raise RuntimeError(f"C backend: op writes the constant '{tensor}'")
            return self.const_names.get(st.const_of) or self._const(st.const_of, "c")
        if st.place is Place.INPUT:
            if write:
                raise RuntimeError(f"C backend: op writes into the input buffer ('{tensor}')")
            return f"input + {st.offset}" if st.offset else "input"
        if st.place is Place.OUTPUT:
            return f"output + {st.offset}" if st.offset else "output"
        return f"a + {self.plan.offsets[self.buffer_of[tensor]]}"

    # -- ops --

    def _param_block(self, ctype: str, index: int, values: dict[str, object]) -> str:
        name = f"op{index}"

        def fmt(v: object) -> str:
            if isinstance(v, (tuple, list)):
                return "{" + ", ".join(fmt(x) for x in v) + "}"
            if isinstance(v, str):
                return v  # an array name or NULL
            return str(int(v))  # type: ignore[arg-type]

        lines, line = [], ""
        for k, v in values.items():
            item = f".{k} = {fmt(v)},"
            if line and len(line) + len(item) > 104:
                lines.append(line)
                line = ""
            line = f"{line} {item}" if line else item
        lines.append(line)
        body = "\n    ".join(lines)
        self.params.append(f"static const {ctype} {name} = {{\n    {body}\n}};")
        return f"&{name}"

    def _requant_arrays(self, r, channels: int, index: int) -> tuple[str, str]:
        mult = list(r.multiplier)
        shift = list(r.shift)
        if len(mult) == 1 and channels > 1:
            mult, shift = mult * channels, shift * channels
        if len(mult) != channels:
            raise UnsupportedError(f"op {index}: {len(mult)} requantization entries for {channels} channels")
        return self._blob("int32_t", mult, "mult"), self._blob("int32_t", shift, "shift")

    def _bias(self, op: Op, channels: int) -> np.ndarray:
        if len(op.inputs) > 2 and self.p.tensors[op.inputs[2]].data is not None:
            return self.p.tensors[op.inputs[2]].data.astype(np.int64)
        return np.zeros(channels, np.int64)

    def _broadcast(self, op: Op, a: str, b: str) -> tuple[int, dict[str, object]]:
        sa = _shape4(self.p.tensors[a].shape, "input 1", op)
        sb = _shape4(self.p.tensors[b].shape, "input 2", op)
        so = _shape4(self.p.tensors[op.outputs[0]].shape, "output", op)
        if sa == sb == so:
            return int(np.prod(so)), {"shape": (1, 1, 1, 1), "stride1": (0,) * 4, "stride2": (0,) * 4}

        def strides(s: tuple[int, ...]) -> tuple[int, ...]:
            st = [0, 0, 0, 0]
            acc = 1
            for d in range(3, -1, -1):
                st[d] = 0 if s[d] == 1 and so[d] != 1 else acc
                acc *= s[d]
            return tuple(st)

        for s in (sa, sb):
            if any(x not in (1, y) for x, y in zip(s, so, strict=True)):
                raise UnsupportedError(
                    f"{op.kind} ({op.source}): shapes {sa} and {sb} do not broadcast to {so}"
                )
        return 0, {"shape": so, "stride1": strides(sa), "stride2": strides(sb)}

    def emit_op(self, i: int, op: Op) -> None:
        t = self.p.tensors
        out = op.outputs[0]
        y = t[out]
        comment = (
            f"/* op {i}: {op.kind.value} '{_comment(op.source or out)}' -> {'x'.join(map(str, y.shape))} */"
        )
        macs = 0
        wbytes = 0
        emitted = True
        call: list[str] = []
        k = op.kind
        o = op.options
        if _KERNEL_FILE.get(k):
            self.kernel_files.add(_KERNEL_FILE[k])
        if k is OpKind.CONV_2D:
            x, w = t[op.inputs[0]], t[op.inputs[1]]
            n, h, wd, c = _shape4(x.shape, "input", op)
            oc, kh, kw, ic = w.shape
            if ic != c:
                raise UnsupportedError(
                    f"CONV_2D ({op.source}): grouped convolution ({c} input channels, filter has {ic}) "
                    "is not supported by the C backend"
                )
            _, oh, ow, _ = y.shape
            wn = self._const(op.inputs[1], "w")
            bn = self._const(op.inputs[2], "b") if len(op.inputs) > 2 else "NULL"
            mn, sn = self._requant_arrays(o.requant, oc, i)
            prm = self._param_block(
                "edgeq_conv_params",
                i,
                dict(
                    batches=n,
                    in_h=h,
                    in_w=wd,
                    in_c=c,
                    out_h=oh,
                    out_w=ow,
                    out_c=oc,
                    k_h=kh,
                    k_w=kw,
                    **_window_params(o, x, y),
                    fast_requant=_fast_requant(o.requant, w.data.reshape(oc, -1), self._bias(op, oc)),
                ),
            )
            # Two int16 im2col columns, in the arena for the duration of this op.
            self.scratch[i] = 4 * kh * kw * c
            scratch = f"(int16_t *)(void *)(a + {self.plan.offsets[f'scratch{i}']})"
            call.append(
                f"edgeq_conv2d_s8({prm}, {self.ptr(op.inputs[0])}, {wn}, {bn}, {mn}, {sn}, "
                f"{self.ptr(out, write=True)}, {scratch});"
            )
            macs = n * oh * ow * oc * kh * kw * c
            wbytes = w.nbytes
        elif k is OpKind.DEPTHWISE_CONV_2D:
            x, w = t[op.inputs[0]], t[op.inputs[1]]
            n, h, wd, c = _shape4(x.shape, "input", op)
            _, kh, kw, cm = w.shape
            _, oh, ow, _ = y.shape
            mn, sn = self._requant_arrays(o.requant, cm, i)
            bias = self._bias(op, cm)
            prm = self._param_block(
                "edgeq_dw_params",
                i,
                dict(
                    batches=n,
                    in_h=h,
                    in_w=wd,
                    in_c=c,
                    out_h=oh,
                    out_w=ow,
                    out_c=cm,
                    depth_multiplier=o.depth_multiplier,
                    k_h=kh,
                    k_w=kw,
                    **_window_params(o, x, y),
                    fast_requant=_fast_requant(o.requant, w.data.reshape(-1, cm).T, bias),
                ),
            )
            fast = (
                (kh, kw) == (3, 3) and tuple(o.dilation) == (1, 1) and o.depth_multiplier == 1 and c % 4 == 0
            )
            if fast:
                # Four channels of every tap side by side (one 32-bit load), and the input offset folded into
                # the bias of pixels whose window lies inside the input: bias + offset * sum of the taps.
                wq = w.data.reshape(3, 3, c // 4, 4).transpose(2, 0, 1, 3)
                wn = self._blob("int8_t", wq.ravel().tolist(), "w", f"{op.inputs[1]} as [C/4][3][3][4]")
                taps = w.data.reshape(9, c).astype(np.int64).sum(axis=0)
                interior = _wrap32(bias.astype(np.int64) - _zp(x) * taps)
                bn = (
                    self._const(op.inputs[2], "b")
                    if len(op.inputs) > 2
                    else self._blob("int32_t", [0] * c, "b")
                )
                bi = self._blob(
                    "int32_t",
                    interior.tolist(),
                    "b",
                    f"{op.inputs[2] if len(op.inputs) > 2 else ''} + input offset x taps",
                )
                call.append(
                    f"edgeq_depthwise_conv3x3_s8({prm}, {self.ptr(op.inputs[0])}, {wn}, {bn}, {bi}, {mn}, "
                    f"{sn}, {self.ptr(out, write=True)});"
                )
            else:
                wn = self._const(op.inputs[1], "w")
                bn = self._const(op.inputs[2], "b") if len(op.inputs) > 2 else "NULL"
                call.append(
                    f"edgeq_depthwise_conv2d_s8({prm}, {self.ptr(op.inputs[0])}, {wn}, {bn}, {mn}, {sn}, "
                    f"{self.ptr(out, write=True)});"
                )
            macs = n * oh * ow * cm * kh * kw
            wbytes = w.nbytes
        elif k is OpKind.FULLY_CONNECTED:
            x, w = t[op.inputs[0]], t[op.inputs[1]]
            out_n, in_n = w.shape
            if x.shape[-1] != in_n:
                raise UnsupportedError(
                    f"FULLY_CONNECTED ({op.source}): input {x.shape} does not match weights {w.shape}"
                )
            if _zp(w) != 0:
                raise UnsupportedError(
                    f"FULLY_CONNECTED ({op.source}): weights need zero point 0 (symmetric)"
                )
            batches = x.size // in_n
            wn = self._const(op.inputs[1], "w")
            bn = self._const(op.inputs[2], "b") if len(op.inputs) > 2 else "NULL"
            per_channel = len(o.requant.multiplier) > 1
            mn = self._blob("int32_t", o.requant.multiplier, "mult")
            sn = self._blob("int32_t", o.requant.shift, "shift")
            scale = "NULL"
            if self.fc_rescale is FcRescale.DOUBLE:
                scales = o.effective_scale or _fc_effective_scales(x, w, y, out_n)
                scale = self._double_blob(scales, f"{op.source} effective scales")
            prm = self._param_block(
                "edgeq_fc_params",
                i,
                dict(
                    batches=batches,
                    in_n=in_n,
                    out_n=out_n,
                    per_channel=int(per_channel),
                    input_offset=-_zp(x),
                    output_offset=_zp(y),
                    act_min=o.activation.min,
                    act_max=o.activation.max,
                    fast_requant=_fast_requant(o.requant, w.data, self._bias(op, out_n)),
                    scale=scale,
                ),
            )
            call.append(
                f"edgeq_fully_connected_s8({prm}, {self.ptr(op.inputs[0])}, {wn}, {bn}, {mn}, {sn}, "
                f"{self.ptr(out, write=True)});"
            )
            macs = batches * in_n * out_n
            wbytes = w.nbytes
        elif k in (OpKind.ADD, OpKind.SUB):
            a, b = op.inputs[:2]
            size, bc = self._broadcast(op, a, b)
            t1 = t2 = "NULL"
            fast = 0
            if size >= _ADD_TABLE_MIN:
                # 256 rescaled values per input (2 KB of flash) replace two requantizations per element.
                tab1 = _add_table(_zp(t[a]), o.left_shift, o.input1)
                tab2 = _add_table(_zp(t[b]), o.left_shift, o.input2)
                t1 = self._blob("int32_t", tab1, "addtab", f"rescaled {a}")
                t2 = self._blob("int32_t", tab2, "addtab", f"rescaled {b}")
                bound = max(abs(v) for v in tab1) + max(abs(v) for v in tab2)
                fast = int(o.output.shift[0] <= -1 and bound < (1 << 30))
            prm = self._param_block(
                "edgeq_add_params",
                i,
                dict(
                    size=size,
                    subtract=int(k is OpKind.SUB),
                    table1=t1,
                    table2=t2,
                    bc=(bc["shape"], bc["stride1"], bc["stride2"]),
                    input1_offset=-_zp(t[a]),
                    input2_offset=-_zp(t[b]),
                    left_shift=o.left_shift,
                    input1_multiplier=o.input1.multiplier[0],
                    input1_shift=o.input1.shift[0],
                    input2_multiplier=o.input2.multiplier[0],
                    input2_shift=o.input2.shift[0],
                    output_multiplier=o.output.multiplier[0],
                    output_shift=o.output.shift[0],
                    output_offset=_zp(y),
                    act_min=o.activation.min,
                    act_max=o.activation.max,
                    fast_requant=fast,
                ),
            )
            call.append(f"edgeq_add_s8({prm}, {self.ptr(a)}, {self.ptr(b)}, {self.ptr(out, write=True)});")
        elif k is OpKind.MUL:
            a, b = op.inputs[:2]
            size, bc = self._broadcast(op, a, b)
            prm = self._param_block(
                "edgeq_mul_params",
                i,
                dict(
                    size=size,
                    bc=(bc["shape"], bc["stride1"], bc["stride2"]),
                    input1_offset=-_zp(t[a]),
                    input2_offset=-_zp(t[b]),
                    output_multiplier=o.requant.multiplier[0],
                    output_shift=o.requant.shift[0],
                    output_offset=_zp(y),
                    act_min=o.activation.min,
                    act_max=o.activation.max,
                ),
            )
            call.append(f"edgeq_mul_s8({prm}, {self.ptr(a)}, {self.ptr(b)}, {self.ptr(out, write=True)});")
        elif k is OpKind.PRELU:
            a, b = op.inputs[:2]
            size, bc = self._broadcast(op, a, b)
            prm = self._param_block(
                "edgeq_prelu_params",
                i,
                dict(
                    size=size,
                    bc=(bc["shape"], bc["stride1"], bc["stride2"]),
                    input_offset=-_zp(t[a]),
                    alpha_offset=-_zp(t[b]),
                    output_offset=_zp(y),
                    identity_multiplier=o.identity.multiplier[0],
                    identity_shift=o.identity.shift[0],
                    alpha_multiplier=o.alpha_requant.multiplier[0],
                    alpha_shift=o.alpha_requant.shift[0],
                ),
            )
            call.append(f"edgeq_prelu_s8({prm}, {self.ptr(a)}, {self.ptr(b)}, {self.ptr(out, write=True)});")
        elif k in (OpKind.MAX_POOL_2D, OpKind.AVERAGE_POOL_2D):
            x = t[op.inputs[0]]
            n, h, wd, c = _shape4(x.shape, "input", op)
            _, oh, ow, _ = y.shape
            fh, fw = o.filter
            top, left = o.padding[0], o.padding[1]
            for oy in range(oh):
                for ox in range(ow):
                    iy, ix = oy * o.stride[0] - top, ox * o.stride[1] - left
                    if min(iy + fh, h) <= max(iy, 0) or min(ix + fw, wd) <= max(ix, 0):
                        raise UnsupportedError(
                            f"{k} ({op.source}): a pooling window lies entirely in the padding"
                        )
            prm = self._param_block(
                "edgeq_pool_params",
                i,
                dict(
                    batches=n,
                    in_h=h,
                    in_w=wd,
                    channels=c,
                    out_h=oh,
                    out_w=ow,
                    k_h=fh,
                    k_w=fw,
                    stride_h=o.stride[0],
                    stride_w=o.stride[1],
                    pad_top=top,
                    pad_left=left,
                    act_min=o.activation.min,
                    act_max=o.activation.max,
                ),
            )
            fn = "edgeq_max_pool_s8" if k is OpKind.MAX_POOL_2D else "edgeq_avg_pool_s8"
            call.append(f"{fn}({prm}, {self.ptr(op.inputs[0])}, {self.ptr(out, write=True)});")
        elif k is OpKind.MEAN:
            x = t[op.inputs[0]]
            if len(x.shape) != 4 or tuple(sorted(o.axes)) != (1, 2):
                raise UnsupportedError(
                    f"MEAN ({op.source}): the C backend supports the mean over H and W of an NHWC tensor, "
                    f"got axes {o.axes} on shape {x.shape}"
                )
            n, h, wd, c = x.shape
            if o.count_requant is not None:
                cm, ce = o.count_requant.multiplier[0], o.count_requant.shift[0]
            else:
                from edgeq.lower.kernels import mean_count_multiplier

                cm, ce = mean_count_multiplier(o.requant.multiplier[0], o.requant.shift[0], h * wd)
            prm = self._param_block(
                "edgeq_mean_params",
                i,
                dict(
                    batches=n,
                    pixels=h * wd,
                    channels=c,
                    input_zero_point=_zp(x),
                    output_zero_point=_zp(y),
                    multiplier=cm,
                    shift=ce,
                ),
            )
            call.append(f"edgeq_mean_hw_s8({prm}, {self.ptr(op.inputs[0])}, {self.ptr(out, write=True)});")
        elif k is OpKind.RESHAPE:
            if i in self.layout.copies:
                src, dst = self.layout.copies[i]
                call.append(f"memcpy({self.ptr(dst, write=True)}, {self.ptr(src)}, {y.nbytes});")
            else:
                emitted = False
        elif k is OpKind.PAD:
            x = t[op.inputs[0]]
            if len(x.shape) > 4:
                raise UnsupportedError(f"PAD ({op.source}): rank {len(x.shape)} > 4 is not supported")
            lead = 4 - len(x.shape)
            before = (0,) * lead + tuple(p[0] for p in o.paddings)
            prm = self._param_block(
                "edgeq_pad_params",
                i,
                dict(
                    in_shape=_shape4(x.shape, "input", op),
                    before=before,
                    out_shape=_shape4(y.shape, "output", op),
                    value=o.value,
                ),
            )
            call.append(f"edgeq_pad_s8({prm}, {self.ptr(op.inputs[0])}, {self.ptr(out, write=True)});")
        elif k is OpKind.SOFTMAX:
            depth = y.shape[-1]
            prm = self._param_block(
                "edgeq_softmax_params",
                i,
                dict(
                    rows=y.size // depth,
                    depth=depth,
                    input_multiplier=o.input_multiplier,
                    input_left_shift=o.input_left_shift,
                    diff_min=o.diff_min,
                ),
            )
            call.append(f"edgeq_softmax_s8({prm}, {self.ptr(op.inputs[0])}, {self.ptr(out, write=True)});")
        elif k in (OpKind.LOGISTIC, OpKind.HARD_SWISH, OpKind.LEAKY_RELU, OpKind.RELU, OpKind.RELU6):
            lut = self._blob("int8_t", o.lut, "lut", f"{k.value} table")
            call.append(
                f"edgeq_lut_s8({y.size}, {lut}, {self.ptr(op.inputs[0])}, {self.ptr(out, write=True)});"
            )
        elif k is OpKind.QUANTIZE:
            x = t[op.inputs[0]]
            if o.requant is None or x.dtype is not DType.INT8:
                raise UnsupportedError(
                    f"QUANTIZE ({op.source}): only int8 → int8 requantization runs in the C backend "
                    "(the program's inputs must already be int8)"
                )
            prm = self._param_block(
                "edgeq_requantize_params",
                i,
                dict(
                    size=y.size,
                    input_zero_point=_zp(x),
                    output_zero_point=_zp(y),
                    multiplier=o.requant.multiplier[0],
                    shift=o.requant.shift[0],
                ),
            )
            call.append(f"edgeq_requantize_s8({prm}, {self.ptr(op.inputs[0])}, {self.ptr(out, write=True)});")
        elif k is OpKind.CONCATENATION:
            axis = o.axis % len(y.shape)
            outer = int(np.prod(y.shape[:axis], dtype=np.int64))
            chunks = [int(np.prod(t[n].shape[axis:], dtype=np.int64)) for n in op.inputs]
            cn = self._blob("int32_t", chunks, "chunk")
            ins = ", ".join(self.ptr(n) for n in op.inputs)
            call.append(f"{{ const int8_t *const ins[{len(op.inputs)}] = {{{ins}}};")
            call.append(
                f"  edgeq_concat_s8({len(op.inputs)}, {outer}, {cn}, ins, {self.ptr(out, write=True)}); }}"
            )
            if (o.activation.min, o.activation.max) != (-128, 127):
                clamp = self._blob(
                    "int8_t",
                    [min(max(q, o.activation.min), o.activation.max) for q in range(-128, 128)],
                    "lut",
                    "concatenation clamp",
                )
                call.append(f"edgeq_lut_s8({y.size}, {clamp}, {self.ptr(out)}, {self.ptr(out, write=True)});")
        elif k is OpKind.TRANSPOSE:
            x = t[op.inputs[0]]
            perm = tuple(o.perm)
            if len(perm) > 4:
                raise UnsupportedError(f"TRANSPOSE ({op.source}): rank {len(perm)} > 4 is not supported")
            in_strides = [int(np.prod(x.shape[d + 1 :], dtype=np.int64)) for d in range(len(x.shape))]
            lead = 4 - len(perm)
            prm = self._param_block(
                "edgeq_transpose_params",
                i,
                dict(
                    out_shape=_shape4(y.shape, "output", op),
                    in_stride=(0,) * lead + tuple(in_strides[p] for p in perm),
                ),
            )
            call.append(f"edgeq_transpose_s8({prm}, {self.ptr(op.inputs[0])}, {self.ptr(out, write=True)});")
        elif k in (OpKind.RESIZE_NEAREST_NEIGHBOR, OpKind.RESIZE_BILINEAR):
            x = t[op.inputs[0]]
            n, h, wd, c = _shape4(x.shape, "input", op)
            oh, ow = o.size
            prm = self._param_block(
                "edgeq_resize_params", i, dict(batches=n, in_h=h, in_w=wd, channels=c, out_h=oh, out_w=ow)
            )
            src, dst = self.ptr(op.inputs[0]), self.ptr(out, write=True)
            if k is OpKind.RESIZE_NEAREST_NEIGHBOR:
                yi = _nearest_indices(h, oh, o.align_corners, o.half_pixel_centers)
                xi = _nearest_indices(wd, ow, o.align_corners, o.half_pixel_centers)
                yn, xn = self._blob("int16_t", yi, "idx"), self._blob("int16_t", xi, "idx")
                call.append(f"edgeq_resize_nearest_s8({prm}, {yn}, {xn}, {src}, {dst});")
            else:
                ylo, yhi, yw = _bilinear_axis(h, oh, o.align_corners, o.half_pixel_centers)
                xlo, xhi, xw = _bilinear_axis(wd, ow, o.align_corners, o.half_pixel_centers)
                names = [self._blob("int16_t", v, "idx") for v in (ylo, yhi, yw, xlo, xhi, xw)]
                call.append(f"edgeq_resize_bilinear_s8({prm}, {', '.join(names)}, {src}, {dst});")
        else:
            raise UnsupportedError(
                f"{k.value} ({op.source or out}): not supported by the C backend; keep it out of the int8 "
                "model or use a target with another runtime (tflite-micro)"
            )
        self.body.append(f"    {comment}")
        for line in call:
            self.body.append(f"    {line}")
        if emitted:
            self.body.append("    EDGEQ_OP_DONE();")
        self.infos.append(OpInfo(i, k.value, op.source, out, y.shape, int(macs), int(wbytes), emitted))

    # -- the whole model --

    def plan_and_emit(self) -> CModel:
        bufs, self.buffer_of = self.layout.buffers()
        activation_bound = _bound(bufs)
        for i, op in enumerate(self.p.ops):
            if op.kind is OpKind.CONV_2D:
                _, kh, kw, c = self.p.tensors[op.inputs[1]].shape
                bufs.append(Buffer(f"scratch{i}", 4 * kh * kw * c, i, i))
        self.plan = plan_memory(bufs, alignment=_ARENA_ALIGNMENT)
        for i, op in enumerate(self.p.ops):
            self.emit_op(i, op)
        files = self._files()
        largest = sorted(((n, self.p.tensors[n].nbytes) for n in self.buffer_of), key=lambda x: (-x[1], x[0]))
        return CModel(
            files=files,
            plan=self.plan,
            ops=tuple(self.infos),
            inputs=self._io(self.p.inputs),
            outputs=self._io(self.p.outputs),
            weight_bytes=self.weight_bytes,
            scratch_bytes=sum(self.scratch.values()),
            activation_bound=activation_bound,
            dsp=self.dsp,
            largest_tensors=tuple(largest[:5]),
        )

    def _io(self, names: tuple[str, ...]) -> tuple[TensorIO, ...]:
        out, off = [], 0
        for n in names:
            t = self.p.tensors[n]
            out.append(TensorIO(n, t.shape, _scale(t), _zp(t), off, t.nbytes))
            off += t.nbytes
        return tuple(out)

    def _io_copies(self) -> list[str]:
        lines = []
        for io in self._io(self.p.outputs):
            st = self.layout.storage(io.name)
            # An output that is an input or a constant (or a reshape of one) is copied.
            if st.place is Place.INPUT or st.place is Place.CONST:
                lines.append(f"    memcpy(output + {io.offset}, {self.ptr(io.name)}, {io.size});")
        return lines

    def _files(self) -> dict[str, bytes]:
        gen = f"Generated by edgeq for target {self.target.name}. Do not edit."
        ins, outs = self._io(self.p.inputs), self._io(self.p.outputs)
        h = [
            f"/* {gen} */",
            "#ifndef EDGEQ_MODEL_H",
            "#define EDGEQ_MODEL_H",
            "",
            "#include <stdint.h>",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            "/* Bytes of all inputs (outputs) one after another, in this order; the arena is static. */",
            f"#define EDGEQ_INPUT_SIZE {sum(x.size for x in ins)}",
            f"#define EDGEQ_OUTPUT_SIZE {sum(x.size for x in outs)}",
            f"#define EDGEQ_ARENA_SIZE {self.plan.arena_size}",
            f"#define EDGEQ_NUM_INPUTS {len(ins)}",
            f"#define EDGEQ_NUM_OUTPUTS {len(outs)}",
            f"#define EDGEQ_NUM_PROFILED_OPS {sum(1 for x in self.infos if x.emitted)}",
            "",
        ]
        for kind, ios in (("INPUT", ins), ("OUTPUT", outs)):
            for j, io in enumerate(ios):
                h += [
                    f"/* {kind.lower()} {j}: '{_comment(io.name)}', int8, shape "
                    f"{' x '.join(map(str, io.shape)) or 'scalar'}; real = scale * (q - zero_point) */",
                    f"#define EDGEQ_{kind}{j}_OFFSET {io.offset}",
                    f"#define EDGEQ_{kind}{j}_SIZE {io.size}",
                    f"#define EDGEQ_{kind}{j}_SCALE {_c_float(io.scale)}",
                    f"#define EDGEQ_{kind}{j}_ZERO_POINT ({io.zero_point})",
                    "",
                ]
        h += [
            "/* Run the model once: reads EDGEQ_INPUT_SIZE bytes at input, writes EDGEQ_OUTPUT_SIZE bytes at",
            " * output.  Returns 0, or -1 if a pointer is NULL.  Not reentrant (one static arena). */",
            "int edgeq_run(const int8_t *input, int8_t *output);",
            "",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
            "#endif",
            "",
        ]
        c = [
            f"/* {gen} */",
            "#include <stddef.h>",
            "#include <string.h>",
            "",
            '#include "edgeq_nn.h"',
            '#include "model.h"',
            "",
            "#ifndef EDGEQ_ARENA_ATTRIBUTES",
            "#define EDGEQ_ARENA_ATTRIBUTES",
            "#endif",
            "#ifndef EDGEQ_WEIGHTS_ATTRIBUTES",
            "#define EDGEQ_WEIGHTS_ATTRIBUTES",
            "#endif",
            "",
        ]
        c += [
            "/* EDGEQ_PROFILE builds call edgeq_profile_mark() after every op (instruction counting). */",
            "#ifdef EDGEQ_PROFILE",
            "void edgeq_profile_mark(void);",
            "#define EDGEQ_OP_DONE() edgeq_profile_mark()",
            "#else",
            "#define EDGEQ_OP_DONE() ((void)0)",
            "#endif",
            "",
        ]
        c += [*self.externs, ""]
        words = max(1, (self.plan.arena_size + 3) // 4)
        c += [
            f"/* {self.plan.arena_size} bytes; liveness lower bound {self.plan.lower_bound} bytes. */",
            f"static int32_t edgeq_arena[{words}] EDGEQ_ARENA_ATTRIBUTES;",
            "",
        ]
        c += [*self.params, ""]
        c += [
            "int edgeq_run(const int8_t *input, int8_t *output)",
            "{",
            "    int8_t *const a = (int8_t *)(void *)edgeq_arena;",
            "    if (input == NULL || output == NULL) {",
            "        return -1;",
            "    }",
            "    (void)a;",
        ]
        c += self._io_copies()
        c += self.body
        c += ["    return 0;", "}", ""]
        d = [
            f"/* {gen} */",
            "#include <stdint.h>",
            "",
            "#ifndef EDGEQ_WEIGHTS_ATTRIBUTES",
            "#define EDGEQ_WEIGHTS_ATTRIBUTES",
            "#endif",
            "",
            *self.data,
        ]
        files = {"model.h": "\n".join(h), "model.c": "\n".join(c), "model_data.c": "\n".join(d)}
        result = {k: v.encode() for k, v in files.items()}
        for name, data in kernel_sources(sorted(self.kernel_files)).items():
            result[f"runtime/{name}"] = data
        return result


def _fc_effective_scales(x: TensorInfo, w: TensorInfo, y: TensorInfo, channels: int) -> tuple[float, ...]:
    from edgeq.lower.options import effective_scales

    return effective_scales(x.qparams, w.qparams, y.qparams, channels)


def _window_params(o, x, y) -> dict[str, int]:
    """Stride, dilation, padding, zero-point offsets and clamp: the fields conv and depthwise parameter blocks
    share, in their C structs' order."""
    return {
        "stride_h": o.stride[0],
        "stride_w": o.stride[1],
        "dil_h": o.dilation[0],
        "dil_w": o.dilation[1],
        "pad_top": o.padding[0],
        "pad_left": o.padding[1],
        "input_offset": -_zp(x),
        "output_offset": _zp(y),
        "act_min": o.activation.min,
        "act_max": o.activation.max,
    }


def _fast_requant(r, weights: np.ndarray, bias: np.ndarray) -> int:
    """1 when edgeq_requant_fast is exact for this op: every shift <= -1 and |accumulator| < 2^30 for any
    input (|q - zero point| <= 255), from the weights (one row per output channel) and the bias."""
    if any(s > -1 for s in r.shift):
        return 0
    bound = np.abs(bias.astype(np.int64)) + 255 * np.abs(weights.astype(np.int64)).sum(axis=1)
    return int(bool(bound.max(initial=0) < (1 << 30)))


def _wrap32(x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, dtype=np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _add_table(zero_point: int, left_shift: int, r) -> list[int]:
    """TFLite's rescaled ADD input for every int8 value: MBQMSmallerThanOneExp((q - zp) << left_shift)."""
    from edgeq.lower.fixedpoint import mbqm_smaller_than_one_np

    q = np.arange(-128, 128, dtype=np.int64)
    v = _wrap32((q - zero_point) << left_shift)
    return [int(x) for x in mbqm_smaller_than_one_np(v, r.multiplier[0], r.shift[0])]


def _bound(bufs: list[Buffer]) -> int:
    from edgeq.backends.c.memplan import liveness_lower_bound

    return liveness_lower_bound(bufs)[0]


def _nearest_indices(in_size: int, out_size: int, align_corners: bool, half_pixel_centers: bool) -> list[int]:
    from edgeq.lower.kernels import nearest_indices

    return [int(v) for v in nearest_indices(in_size, out_size, align_corners, half_pixel_centers)]


def _bilinear_axis(in_size: int, out_size: int, align_corners: bool, half_pixel_centers: bool):
    """TFLite ResizeBilinearInteger's per-axis (lower, upper, Q10 weight of upper) for every output index."""
    scale_10 = ((1 << 10) * in_size + out_size // 2) // out_size
    if align_corners and out_size > 1:
        scale_10 = ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)

    def c_div(a: int, b: int) -> int:  # C's truncating division
        q = abs(a) // b
        return q if a >= 0 else -q

    lo, hi, wt = [], [], []
    for v in range(out_size):
        scaled = v * scale_10 + scale_10 // 2 - (1 << 9) if half_pixel_centers else v * scale_10
        lower = max(c_div(scaled, 1 << 10), 0)
        upper = min(c_div(scaled + (1 << 10) - 1, 1 << 10), in_size - 1)
        lo.append(lower)
        hi.append(upper)
        wt.append(scaled - (1 << 10) * lower)
    return lo, hi, wt


def generate(
    program: Program,
    *,
    target: Target | str,
    dsp: bool | None = None,
    fc_rescale: FcRescale | str = FcRescale.DOUBLE,
) -> CModel:
    """Emit C for ``program`` and return the files with the memory plan and per-op facts.

    ``dsp`` (default: the target's ``hardware.dsp``) records which kernels the firmware builds of this model
    use: the sources are the same either way; a core without the DSP extension, or a build with
    ``-DEDGEQ_PORTABLE``, takes the portable kernels, with identical results. ``fc_rescale``:
    FULLY_CONNECTED as TFLite's builtin reference kernel (``double``, the default: outputs equal
    :func:`edgeq.lower.run` and LiteRT's reference kernels bit for bit) or as TFLite Micro / CMSIS-NN
    (``fixed-point``: no floating point at all).
    """
    target = load_target(target)
    use_dsp = target.hardware.dsp if dsp is None else dsp
    return _Emitter(program, target, dsp=use_dsp, fc_rescale=FcRescale(fc_rescale)).plan_and_emit()


def emit_c(
    program: Program, *, target: Target | str, fc_rescale: FcRescale | str = FcRescale.DOUBLE
) -> dict[str, bytes]:
    """C sources for ``program`` on ``target``: {relative file name: bytes} (see the module docstring)."""
    return generate(program, target=target, fc_rescale=fc_rescale).files


__all__ = ["CModel", "OpInfo", "Place", "TensorIO", "emit_c", "generate"]
