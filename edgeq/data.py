"""Samples for calibration and validation: image folders, .npy / .npz files, or Python iterables.

:func:`open_samples` turns any of these into :class:`Samples`, which yields one model input at a time as
``{input name: array}`` with the model's full input shape and dtype, validated as it goes. Files are read
lazily, one sample at a time, so memory does not grow with the number of samples.

What is accepted (anything else is a :class:`~edgeq.errors.DataError` saying where and what to do):

- **Shape**: per sample either the model's full input shape, or the shape without the leading batch axis when
  the model's batch is 1 (or free), in which case the batch axis is added. Free dimensions (``-1``) match any
  size. A .npy / .npz array holds ``N`` such samples stacked along a new first axis.
- **dtype**: for a float input, any float array (float16/32/64), converted to the input's dtype; float64
  values beyond float32's range become Inf and are reported. Integer or bool data for a float input is
  refused: edgeq does not guess a scale (pixels 0..255 vs 0..1); convert it yourself or use an image folder
  with a recipe.
  For an integer input, integer arrays whose values fit the input's dtype; for a bool input, bool arrays.
- **Values**: NaN and Inf are refused, naming the file, the sample index and the input.
- **Security**: arrays are read with pickling disabled; a pickled .npy or an object array is refused.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edgeq.config.recipe import ChannelOrder, Layout, Preprocess
from edgeq.errors import ConfigError, DataError
from edgeq.onnxutil import TensorSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABELS_KEY = "labels"

Sample = dict[str, np.ndarray]


class Samples:
    """A re-iterable (for files and in-memory arrays) stream of validated model inputs.

    Iterating yields one sample at a time as ``{input name: array}``, each array with the model's full input
    shape and dtype. ``len()`` works when the number of samples is known (files, sequences); otherwise it
    raises TypeError and :attr:`length` is None.
    """

    def __init__(
        self,
        produce: Callable[[], Iterator[Sample]],
        *,
        inputs: Sequence[TensorSpec],
        length: int | None,
        description: str,
        limit: int | None = None,
    ):
        self._produce = produce
        self.inputs: tuple[TensorSpec, ...] = tuple(inputs)
        self._length = length
        self.description = description
        self.limit = limit

    @property
    def length(self) -> int | None:
        """Number of samples this yields, or None when the source does not say."""
        if self._length is None:
            return None
        return self._length if self.limit is None else min(self._length, self.limit)

    def __len__(self) -> int:
        n = self.length
        if n is None:
            raise TypeError(f"the number of samples in {self.description} is not known before iterating")
        return n

    def __iter__(self) -> Iterator[Sample]:
        if self.limit is None:
            yield from self._produce()
            return
        if self.limit == 0:
            return
        for i, sample in enumerate(self._produce(), 1):
            yield sample
            if i >= self.limit:
                return

    def __repr__(self) -> str:
        return f"Samples({self.description}, length={self.length})"


# --------------------------------------------------------------------------------------------- validation


def _shape_str(shape: Sequence[int], *, stacked: bool = False) -> str:
    """``(1, 3, ?, ?)`` for a shape with free dimensions; ``(N, 1, 3, ?, ?)`` with ``stacked``."""
    dims = ["N"] if stacked else []
    dims += ["?" if d < 0 else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _matches(shape: Sequence[int], spec_shape: Sequence[int]) -> bool:
    return len(shape) == len(spec_shape) and all(
        s < 0 or s == d for d, s in zip(shape, spec_shape, strict=True)
    )


def _sample_shape(shape: tuple[int, ...], spec: TensorSpec) -> tuple[int, ...] | None:
    """The full input shape a sample of ``shape`` becomes (batch axis added if needed), or None."""
    if _matches(shape, spec.shape):
        return shape
    if spec.shape and spec.shape[0] in (1, -1) and _matches(shape, spec.shape[1:]):
        return (1, *shape)
    return None


def _expected(spec: TensorSpec) -> str:
    text = _shape_str(spec.shape)
    if spec.shape and spec.shape[0] in (1, -1):
        text += f" or {_shape_str(spec.shape[1:])} without the batch axis"
    return text


def _check_dtype(dtype: np.dtype, spec: TensorSpec, where: str) -> None:
    """Raise unless values of ``dtype`` may be converted to ``spec.dtype`` (see the module docstring)."""
    want = spec.dtype
    if dtype.hasobject:
        raise DataError(f"{where}: object array given for input '{spec.name}'; pass a numeric array")
    if want.kind == "f":
        if dtype.kind == "f":
            return
        if dtype.kind in "iub":
            raise DataError(
                f"{where}: {dtype} data given for {want} input '{spec.name}'; edgeq does not guess "
                "a scale: convert to float yourself (e.g. pixels / 255) or use an image folder with "
                "a calibration recipe"
            )
    elif want.kind in "iu":
        if dtype.kind in "iu":
            return
        if dtype.kind == "f":
            raise DataError(
                f"{where}: {dtype} data given for integer input '{spec.name}' ({want}); pass "
                "integers (edgeq does not round floats)"
            )
    elif want.kind == "b":
        if dtype.kind == "b":
            return
    else:
        raise DataError(f"{where}: input '{spec.name}' has dtype {want}, which edgeq cannot feed")
    raise DataError(f"{where}: {dtype} data given for {want} input '{spec.name}'; pass {want} data")


def _convert(array: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    """``array`` as ``spec.dtype`` (a fresh, writable copy), with range and NaN/Inf checks."""
    _check_dtype(array.dtype, spec, where)
    want = spec.dtype
    if want.kind in "iu" and array.size and array.dtype != want:
        info = np.iinfo(want)
        lo, hi = int(array.min()), int(array.max())
        if lo < info.min or hi > info.max:
            raise DataError(
                f"{where}: input '{spec.name}' has values in [{lo}, {hi}], outside {want}'s range "
                f"[{info.min}, {info.max}]"
            )
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes Inf, reported just below
        out = np.array(array, dtype=want, order="C", copy=True)
    if want.kind == "f" and not np.isfinite(out).all():
        bad = "NaN" if np.isnan(out).any() else "Inf"
        hint = " (a float64 value beyond float32's range?)" if array.dtype.itemsize > want.itemsize else ""
        raise DataError(f"{where}: input '{spec.name}' contains {bad}{hint}; remove or fix that sample")
    return out


def _conform(value: Any, spec: TensorSpec, where: str) -> np.ndarray:
    """One sample's value for ``spec``: shape checked (batch axis added if missing), dtype converted."""
    array = np.asarray(value)
    shape = _sample_shape(array.shape, spec)
    if shape is None:
        raise DataError(
            f"{where}: input '{spec.name}' has shape {_shape_str(array.shape)}, expected {_expected(spec)}"
        )
    return _convert(array.reshape(shape), spec, where)


def _row_shape(array_shape: tuple[int, ...], spec: TensorSpec, where: str) -> tuple[int, ...]:
    """Check an ``N × sample`` array's shape once; returns the full shape each row becomes."""
    shape = _sample_shape(array_shape[1:], spec) if array_shape else None
    if shape is None:
        rows = [_shape_str(spec.shape[1:], stacked=True)] if spec.shape and spec.shape[0] in (1, -1) else []
        rows.append(_shape_str(spec.shape, stacked=True))
        raise DataError(
            f"{where}: array of shape {_shape_str(array_shape)} does not hold samples for input "
            f"'{spec.name}' of shape {_shape_str(spec.shape)}: expected {' or '.join(rows)} "
            "(N samples stacked on the first axis)"
        )
    return shape


# ------------------------------------------------------------------------------------------ .npy streams


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype


def _read_header(f: BinaryIO, where: str) -> _Header:
    """Parse a .npy header from ``f`` (left at the start of the data), refusing pickles and object arrays."""
    start = f.read(6)
    if start != b"\x93NUMPY":
        if start[:1] == b"\x80":
            raise DataError(
                f"{where}: is a Python pickle, not a .npy array; pickles are refused because "
                "loading them can run code: save with numpy.save(..., allow_pickle=False)"
            )
        raise DataError(f"{where}: not a .npy array (bad magic bytes); save it with numpy.save")
    f.seek(-6, os.SEEK_CUR)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise DataError(
                f"{where}: .npy format version {version[0]}.{version[1]} is not supported; "
                "re-save the array with numpy.save"
            )
    except (ValueError, SyntaxError) as e:
        raise DataError(f"{where}: corrupt .npy header ({e}); re-save the array with numpy.save") from None
    if dtype.hasobject:
        raise DataError(
            f"{where}: holds Python objects (dtype {dtype}), which need pickle to load and are "
            "refused; save a numeric array"
        )
    if not shape:
        raise DataError(f"{where}: holds a single scalar; stack samples along the first axis")
    return _Header(tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype))


def _read_rows(f: BinaryIO, header: _Header, where: str) -> Iterator[np.ndarray]:
    """Yield the rows of a C-order array whose data starts at ``f``'s position, one read each."""
    row_shape = header.shape[1:]
    row_bytes = header.dtype.itemsize * math.prod(row_shape)
    for i in range(header.shape[0]):
        buf = f.read(row_bytes)
        if len(buf) != row_bytes:
            raise DataError(f"{where}: file is truncated at sample {i} of {header.shape[0]}; re-save it")
        yield np.frombuffer(buf, dtype=header.dtype).reshape(row_shape)


def _npy_rows(path: Path, where: str) -> Iterator[np.ndarray]:
    with open(path, "rb") as f:
        header = _read_header(f, where)
        if header.fortran:
            # Fortran order stores a row's values far apart; a read-only memory map still avoids loading it.
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            for i in range(arr.shape[0]):
                yield np.array(arr[i])
            return
        yield from _read_rows(f, header, where)


def _npy_header(path: Path) -> _Header:
    where = str(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = _read_header(f, where)
            data_start = f.tell()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from None
    need = data_start + header.dtype.itemsize * math.prod(header.shape)
    if size < need:
        raise DataError(f"{path}: file is truncated ({size} bytes, the header promises {need}); re-save it")
    return header


# -------------------------------------------------------------------------------------------- sources


def _array_source(
    arrays: Mapping[str, tuple[_Header, Callable[[], Iterator[np.ndarray]]]],
    inputs: Sequence[TensorSpec],
    where: str,
) -> tuple[Callable[[], Iterator[Sample]], int]:
    """Samples from one ``N × sample`` array per input (rows produced lazily by each callable)."""
    counts = {name: h.shape[0] for name, (h, _) in arrays.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"'{k}': {v}" for k, v in counts.items())
        raise DataError(
            f"{where}: arrays hold different numbers of samples ({detail}); give every input the same number"
        )
    shapes = {
        s.name: _row_shape(arrays[s.name][0].shape, s, f"{where} ['{s.name}']" if len(arrays) > 1 else where)
        for s in inputs
    }
    for s in inputs:
        _check_dtype(arrays[s.name][0].dtype, s, where)
    n = next(iter(counts.values()))

    def produce() -> Iterator[Sample]:
        rows = {s.name: arrays[s.name][1]() for s in inputs}
        try:
            for i in range(n):
                yield {
                    s.name: _convert(next(rows[s.name]).reshape(shapes[s.name]), s, f"{where}, sample {i}")
                    for s in inputs
                }
        finally:
            for r in rows.values():
                close = getattr(r, "close", None)
                if close:
                    close()

    return produce, n


def _open_npy(path: Path, inputs: Sequence[TensorSpec]) -> tuple[Callable[[], Iterator[Sample]], int]:
    if len(inputs) != 1:
        names = ", ".join(s.name for s in inputs)
        raise DataError(
            f"{path}: a .npy file feeds a single-input model, but this model has inputs {names}; "
            "use a .npz with one array per input name"
        )
    header = _npy_header(path)
    return _array_source({inputs[0].name: (header, lambda: _npy_rows(path, str(path)))}, inputs, str(path))


def _npz_member_rows(path: Path, member: str, where: str) -> Iterator[np.ndarray]:
    with zipfile.ZipFile(path) as z, z.open(member) as f:
        header = _read_header(f, where)  # type: ignore[arg-type]
        if header.fortran:  # rare; a zip member cannot be memory-mapped, so this one array is read whole
            f.seek(0)
            arr = np.lib.format.read_array(f, allow_pickle=False)  # type: ignore[arg-type]
            yield from arr
            return
        yield from _read_rows(f, header, where)  # type: ignore[arg-type]


def _open_npz(path: Path, inputs: Sequence[TensorSpec]) -> tuple[Callable[[], Iterator[Sample]], int]:
    where = str(path)
    try:
        with zipfile.ZipFile(path) as z:
            members = {i.filename[:-4]: i.filename for i in z.infolist() if i.filename.endswith(".npy")}
            headers = {}
            for key, member in members.items():
                if key == LABELS_KEY:
                    continue
                with z.open(member) as f:
                    headers[key] = _read_header(f, f"{where} ['{key}']")  # type: ignore[arg-type]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz archive ({e}); save it with numpy.savez") from None
    if not headers:
        raise DataError(f"{path}: holds no arrays (besides '{LABELS_KEY}'); save one array per input name")
    names = [s.name for s in inputs]
    if len(inputs) == 1 and names[0] not in headers:
        if len(headers) != 1:
            raise DataError(
                f"{path}: no array named '{names[0]}' (arrays: {', '.join(sorted(headers))}); "
                f"name the input's array '{names[0]}' or keep a single array"
            )
        key = next(iter(headers))
        chosen = {names[0]: key}
    else:
        missing = [n for n in names if n not in headers]
        if missing:
            raise DataError(
                f"{path}: no array for input '{missing[0]}' (arrays: {', '.join(sorted(headers))}); "
                f"save one array per input name, e.g. numpy.savez(path, {missing[0]}=...)"
            )
        chosen = {n: n for n in names}
    arrays = {
        name: (headers[key], (lambda m=members[key], k=key: _npz_member_rows(path, m, f"{where} ['{k}']")))
        for name, key in chosen.items()
    }
    return _array_source(arrays, inputs, where)


def _memory_arrays(
    arrays: Mapping[str, Any], inputs: Sequence[TensorSpec], where: str
) -> tuple[Callable[[], Iterator[Sample]], int]:
    checked: dict[str, tuple[_Header, Callable[[], Iterator[np.ndarray]]]] = {}
    for s in inputs:
        if s.name not in arrays:
            raise DataError(f"{where}: no array for input '{s.name}' (keys: {', '.join(map(str, arrays))})")
        arr = np.asarray(arrays[s.name])
        if arr.ndim == 0:
            raise DataError(f"{where}: input '{s.name}' is a scalar; stack samples along the first axis")
        checked[s.name] = (_Header(arr.shape, False, arr.dtype), lambda a=arr: iter(a))
    return _array_source(checked, inputs, where)


def _iterable_source(items: Iterable[Any], inputs: Sequence[TensorSpec]) -> Callable[[], Iterator[Sample]]:
    def produce() -> Iterator[Sample]:
        for i, item in enumerate(items):
            where = f"sample {i}"
            if isinstance(item, np.ndarray) and len(inputs) == 1:
                item = {inputs[0].name: item}
            if not isinstance(item, Mapping):
                raise DataError(
                    f"{where}: is a {type(item).__name__}; each sample must be a dict {{input name: array}}"
                )
            missing = [s.name for s in inputs if s.name not in item]
            if missing:
                raise DataError(f"{where}: missing input '{missing[0]}' (has: {', '.join(map(str, item))})")
            yield {s.name: _conform(item[s.name], s, where) for s in inputs}

    return produce


# ------------------------------------------------------------------------------------------------ images


def _list_images(folder: Path) -> list[Path]:
    """Images under ``folder`` (recursively, hidden entries skipped), sorted by their path relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            Path(root, f) for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
        ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _infer_preprocess(spec: TensorSpec) -> Preprocess:
    """Preprocess for an image folder when no recipe is given: layout, channels and size from the input."""
    shape = spec.shape
    if len(shape) != 4:
        raise DataError(
            f"input '{spec.name}' has shape {_shape_str(shape)}; image folders need a 4-D image "
            "input, or pass a recipe that describes the preprocessing"
        )
    if shape[1] in (1, 3):
        layout, c, hw = Layout.NCHW, shape[1], shape[2:]
    elif shape[3] in (1, 3):
        layout, c, hw = Layout.NHWC, shape[3], shape[1:3]
    else:
        raise DataError(
            f"input '{spec.name}' of shape {_shape_str(shape)} has no 1- or 3-channel axis; pass a "
            "calibration recipe that says how to preprocess images"
        )
    resize = (hw[0], hw[1]) if hw[0] > 0 and hw[1] > 0 else None
    channels = ChannelOrder.GRAY if c == 1 else ChannelOrder.RGB
    return Preprocess(resize=resize, layout=layout, channels=channels)


def load_image(path: str | os.PathLike[str], preprocess: Preprocess) -> np.ndarray:
    """Decode one image and preprocess it as ``preprocess`` says; returns float32 with a batch axis of 1.

    Steps: decode (Pillow; alpha dropped) → colour order (rgb, bgr or gray) → resize to (H, W), bilinear, done
    in float32 per channel so that no 8-bit rounding happens in between (Pillow's bilinear filter: half-pixel
    centres, widened with the scale when shrinking, i.e. antialiased) → centre crop (offsets rounded as
    torchvision does) → × scale → (x - mean) / std per channel (mean/std in the order the model receives the
    channels; one value applies to all) → layout (nchw or nhwc) → batch axis. Arithmetic after the resize is
    done in float64 and rounded to float32 once.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise DataError(
                    f"{path}: {img.mode}-mode (16-bit or float) images are not supported; save the "
                    "images as 8-bit PNG or JPEG"
                )
            gray = preprocess.channels is ChannelOrder.GRAY
            img = img.convert("L" if gray else "RGB")
            planes = (
                [np.asarray(img, dtype=np.float32)]
                if gray
                else list(np.moveaxis(np.asarray(img, dtype=np.float32), -1, 0))
            )
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"{path}: cannot read the image ({type(e).__name__}: {str(e)[:120]}); replace or remove the file"
        ) from None
    if preprocess.channels is ChannelOrder.BGR:
        planes.reverse()
    if preprocess.resize is not None:
        h, w = preprocess.resize
        planes = [
            np.asarray(Image.fromarray(p).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
            for p in planes
        ]
    x = np.stack(planes).astype(np.float64)  # C, H, W
    if preprocess.crop is not None:
        ch, cw = preprocess.crop
        h, w = x.shape[1:]
        if ch > h or cw > w:
            raise DataError(
                f"{path}: preprocess.crop ({ch}, {cw}) is larger than the image ({h}, {w}) after "
                "resizing; set preprocess.resize at least as large as the crop"
            )
        top, left = round((h - ch) / 2.0), round((w - cw) / 2.0)
        x = x[:, top : top + ch, left : left + cw]
    c = x.shape[0]
    for key in ("mean", "std"):
        values = getattr(preprocess, key)
        if len(values) not in (1, c):
            raise ConfigError(
                f"preprocess.{key} has {len(values)} values but channels = "
                f"'{preprocess.channels}' gives {c}; give 1 or {c} values"
            )
    mean = np.asarray(preprocess.mean, dtype=np.float64).reshape(-1, 1, 1)
    std = np.asarray(preprocess.std, dtype=np.float64).reshape(-1, 1, 1)
    x = (x * preprocess.scale - mean) / std
    if preprocess.layout is Layout.NHWC:
        x = np.moveaxis(x, 0, -1)
    return np.ascontiguousarray(x, dtype=np.float32)[np.newaxis]


def _open_images(
    folder: Path, inputs: Sequence[TensorSpec], preprocess: Preprocess | None
) -> tuple[Callable[[], Iterator[Sample]], int]:
    if len(inputs) != 1:
        names = ", ".join(s.name for s in inputs)
        raise DataError(
            f"{folder}: an image folder feeds a single-input model, but this model has inputs "
            f"{names}; use a .npz with one array per input name"
        )
    spec = inputs[0]
    if spec.dtype.kind != "f":
        raise DataError(
            f"{folder}: input '{spec.name}' is {spec.dtype}; image folders feed float inputs only, "
            "use a .npy of ready-made inputs"
        )
    files = _list_images(folder)
    if not files:
        raise DataError(
            f"{folder}: no PNG or JPEG images found (searched recursively); put the calibration "
            "images there or pass a .npy/.npz file"
        )
    pre = preprocess if preprocess is not None else _infer_preprocess(spec)

    def produce() -> Iterator[Sample]:
        for path in files:
            x = load_image(path, pre)
            if not _matches(x.shape, spec.shape):
                raise DataError(
                    f"{path}: preprocessed image has shape {_shape_str(x.shape)} but input "
                    f"'{spec.name}' needs {_shape_str(spec.shape)}; set preprocess.resize/crop/"
                    "layout/channels in the recipe to match the model"
                )
            yield {spec.name: _convert(x, spec, str(path))}

    return produce, len(files)


# -------------------------------------------------------------------------------------------- public API


def open_samples(
    source: Any,
    *,
    inputs: Sequence[TensorSpec],
    preprocess: Preprocess | None = None,
    limit: int | None = None,
) -> Samples:
    """Open ``source`` as a stream of model inputs for the model whose inputs are ``inputs``.

    ``source`` is a folder of PNG/JPEG images (single-input models; searched recursively, sorted by path,
    preprocessed by :func:`load_image` with ``preprocess``, or, when None, with the layout, channels and size
    read off the input's shape and pixels scaled to [0, 1]); a .npy file (N samples stacked on the first
    axis); a .npz file (one array per input name, or a single array for a single-input model; an array named
    ``labels`` is ignored); an in-memory array or ``{name: array}`` mapping laid out like those files; an
    existing :class:`Samples`; or any iterable of ``{input name: array}`` dicts (a bare array per item is
    accepted for a single-input model). ``limit`` caps the number of samples yielded.

    Shapes and dtypes are checked against ``inputs`` as described in the module docstring.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer or None, not {limit!r}")
    inputs = tuple(inputs)
    if not inputs:
        raise DataError("the model has no inputs to feed")
    if isinstance(source, Samples):
        if source.inputs == inputs:
            lim = (
                limit if source.limit is None else source.limit if limit is None else min(limit, source.limit)
            )
            return Samples(
                source._produce,
                inputs=inputs,
                length=source._length,
                description=source.description,
                limit=lim,
            )
        return Samples(
            _iterable_source(source, inputs),
            inputs=inputs,
            length=source.length,
            description=source.description,
            limit=limit,
        )
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            produce, n = _open_images(path, inputs, preprocess)
        elif not path.exists():
            raise DataError(f"{path}: not found; pass a folder of images, a .npy or a .npz file")
        elif path.suffix.lower() == ".npy":
            produce, n = _open_npy(path, inputs)
        elif path.suffix.lower() == ".npz":
            produce, n = _open_npz(path, inputs)
        else:
            raise DataError(
                f"{path}: unknown data file type '{path.suffix}'; pass a folder of PNG/JPEG images, "
                "a .npy or a .npz file"
            )
        return Samples(produce, inputs=inputs, length=n, description=str(path), limit=limit)
    if isinstance(source, np.ndarray):
        if len(inputs) != 1:
            names = ", ".join(s.name for s in inputs)
            raise DataError(
                f"an array feeds a single-input model, but this model has inputs {names}; pass "
                "{name: array} with one array per input"
            )
        if source.ndim == 0:
            raise DataError("the data array is a scalar; stack samples along the first axis")
        produce, n = _memory_arrays({inputs[0].name: source}, inputs, "data array")
        return Samples(produce, inputs=inputs, length=n, description="data array", limit=limit)
    if isinstance(source, Mapping):
        produce, n = _memory_arrays(source, inputs, "data mapping")
        return Samples(produce, inputs=inputs, length=n, description="data mapping", limit=limit)
    if isinstance(source, Iterable):
        length = len(source) if isinstance(source, Sequence) else None
        return Samples(
            _iterable_source(source, inputs),
            inputs=inputs,
            length=length,
            description=f"{type(source).__name__} of samples",
            limit=limit,
        )
    raise DataError(
        f"cannot read samples from a {type(source).__name__}; pass a folder of images, a .npy/.npz "
        "path, an array or an iterable of {input name: array} dicts"
    )


def group_samples(samples: Iterable[Mapping[str, np.ndarray]], batch_size: int) -> Iterator[list[Sample]]:
    """Consecutive runs of up to ``batch_size`` samples whose arrays have equal shapes and dtypes."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")
    pending: list[Sample] = []
    key: tuple | None = None
    for sample in samples:
        k = tuple((name, a.shape[1:], a.dtype.str) for name, a in sample.items())
        if pending and (k != key or len(pending) >= batch_size):
            yield pending
            pending = []
        key = k
        pending.append(dict(sample))
    if pending:
        yield pending


def stack(group: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One batch from samples of equal shapes: each input's arrays concatenated along axis 0."""
    if len(group) == 1:
        return dict(group[0])
    return {name: np.concatenate([g[name] for g in group], axis=0) for name in group[0]}


def iter_batches(
    samples: Iterable[Mapping[str, np.ndarray]], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Group ``samples`` into batches of up to ``batch_size``, concatenated along axis 0 per input.

    A batch ends early when the next sample's shapes differ from the batch's (inputs with free dimensions), so
    every batch is one array per input; the last batch may be smaller.
    """
    for group in group_samples(samples, batch_size):
        yield stack(group)


def load_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Class labels as a 1-D int64 array from a .npy of integers, a .npz with ``labels``, or a text file.

    A text file holds one integer label per line (blank lines are skipped). Float arrays are accepted when
    every value is a whole number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: labels file not found")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        try:
            loaded = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"{path}: refused ({e}); save plain integers with numpy.save") from None
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: not a readable {suffix} file ({e})") from None
        if suffix == ".npz" or isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                if LABELS_KEY not in loaded.files:
                    raise DataError(
                        f"{path}: no array named '{LABELS_KEY}' (arrays: {', '.join(loaded.files)}); "
                        "save the labels as numpy.savez(path, labels=...)"
                    )
                labels = loaded[LABELS_KEY]
        else:
            labels = loaded
        where = str(path)
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read the labels as text ({e}); one integer per line") from None
        values = []
        for n, line in enumerate(lines, 1):
            text = line.strip()
            if not text:
                continue
            try:
                values.append(int(text))
            except ValueError:
                raise DataError(
                    f"{path}:{n}: '{text[:40]}' is not an integer class index; write one integer "
                    "label per line"
                ) from None
        labels = np.asarray(values, dtype=np.int64)
        where = str(path)
    return _as_labels(labels, where)


def _as_labels(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(
            f"{where}: labels have shape {_shape_str(labels.shape)}; expected one label per sample (N,)"
        )
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise DataError(
                f"{where}: labels must be whole numbers (class indices); found fractional or "
                "non-finite values"
            )
    elif labels.dtype.kind not in "iub":
        raise DataError(f"{where}: labels have dtype {labels.dtype}; expected integer class indices")
    return labels.astype(np.int64)
