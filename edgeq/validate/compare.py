"""Comparing float and int8 outputs produced anywhere: on this host, over SSH on a Pi, on an emulated MCU."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from edgeq.errors import DataError
from edgeq.validate.metrics import OutputAccumulator, OutputMetrics


def as_labels(labels: np.ndarray | Sequence[int] | str | os.PathLike[str] | None) -> np.ndarray | None:
    """Labels as a flat int64 array; a path is read with ``edgeq.data.load_labels``."""
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        from edgeq.data import load_labels  # lazily: edgeq.data pulls in image decoding

        labels = load_labels(labels)
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iub":
        raise DataError(
            f"labels: expected integer class indices, got dtype {arr.dtype}; "
            "give one integer label per sample"
        )
    if arr.ndim != 1:
        raise DataError(f"labels: expected a 1-D array with one label per sample, got shape {arr.shape}")
    return arr.astype(np.int64)


def check_labels(labels: np.ndarray, accumulators: Sequence[OutputAccumulator], samples: int | None) -> None:
    """Raise DataError unless every classifier output has one label per prediction, all in range.

    ``samples`` None: the sample count is not known yet; only the range is checked.
    """
    classifiers = [a for a in accumulators if a.classifier]
    if not classifiers:
        shapes = ", ".join(f"'{a.name}' {a.shape}" for a in accumulators)
        raise DataError(
            f"labels were given but no output is classifier-shaped (rank 2, last dim > 1): {shapes}; "
            "leave labels out to compare outputs only"
        )
    for a in classifiers:
        rows = None if samples is None else samples * a.rows_per_sample
        if rows is not None and labels.size != rows:
            per = "" if a.rows_per_sample == 1 else f" ({a.rows_per_sample} predictions per sample)"
            raise DataError(
                f"labels: {labels.size} labels for {samples} samples{per} of output '{a.name}'; "
                f"give exactly one label per prediction ({rows})"
            )
        bad = np.flatnonzero((labels < 0) | (labels >= a.shape[-1]))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"labels: label {int(labels[i])} at index {i} is outside the {a.shape[-1]} classes of "
                f"output '{a.name}'; check that the labels belong to this data"
            )


def compare(
    float_outputs: Mapping[str, np.ndarray],
    quant_outputs: Mapping[str, np.ndarray],
    *,
    labels: np.ndarray | Sequence[int] | str | os.PathLike[str] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    steps: Mapping[str, float] | None = None,
) -> tuple[OutputMetrics, ...]:
    """Metrics of int8 against float for outputs computed elsewhere (a device, an emulator, another runtime).

    ``float_outputs`` and ``quant_outputs`` map each output name to the outputs of all N samples, sample
    after sample along axis 0: either stacked, ``(N, *output_shape)``, or concatenated along a batch-1
    model's batch axis, ``(N, *output_shape[1:])``. ``shapes`` gives an output's per-sample shape (batch axis
    included) to tell the two apart; without it an ``(N, C)`` array is read as N classifier outputs of shape
    ``(1, C)`` and any other array as ``(N, *per_sample_shape)``. ``labels``: one integer class per sample
    (array or a file that ``edgeq.data.load_labels`` reads). ``steps``: the quantization step of an int8
    output, to express its errors in LSB. Returns one :class:`OutputMetrics` per output, in the float
    outputs' order; the numbers are bit-identical to what :func:`edgeq.validate.validate` computes from the
    same outputs.
    """
    shapes = dict(shapes or {})
    steps = dict(steps or {})
    missing = [n for n in float_outputs if n not in quant_outputs]
    extra = [n for n in quant_outputs if n not in float_outputs]
    if missing or extra:
        what = (
            (f"int8 outputs lack {missing}" if missing else "")
            + (" and " if missing and extra else "")
            + (f"int8 outputs have {extra} that the float outputs do not" if extra else "")
        )
        raise DataError(f"{what}; both sides must hold the same outputs")
    if not float_outputs:
        raise DataError("no outputs to compare: both mappings are empty")
    stacks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    accumulators = []
    samples: int | None = None
    for name in float_outputs:
        f, q = np.asarray(float_outputs[name]), np.asarray(quant_outputs[name])
        if f.shape != q.shape:
            raise DataError(
                f"output '{name}': float outputs have shape {f.shape} but int8 outputs {q.shape}; "
                "both must come from the same samples"
            )
        if f.ndim == 0:
            raise DataError(f"output '{name}': expected N samples along axis 0, got a scalar")
        if name in shapes:
            shape = tuple(int(d) for d in shapes[name])
            per = int(np.prod(shape))
            if per == 0 or f.size % per:
                raise DataError(f"output '{name}': {f.shape} does not split into samples of shape {shape}")
        else:
            shape = (1, f.shape[1]) if f.ndim == 2 else f.shape[1:]
        f, q = f.reshape(-1, *shape), q.reshape(-1, *shape)
        if samples is not None and f.shape[0] != samples:
            first = next(iter(stacks))
            raise DataError(
                f"output '{name}' holds {f.shape[0]} samples but output '{first}' holds {samples}"
            )
        samples = f.shape[0]
        stacks[name] = (f, q)
        accumulators.append(OutputAccumulator(name, shape, step=steps.get(name)))
    if not samples:
        raise DataError("no samples to compare: the output arrays are empty")
    lab = as_labels(labels)
    if lab is not None:
        check_labels(lab, accumulators, samples)
    for acc in accumulators:
        f, q = stacks[acc.name]
        rows = acc.rows_per_sample
        for i in range(samples):
            acc.update(f[i], q[i], labels=None if lab is None or not rows else lab[i * rows : (i + 1) * rows])
    return tuple(acc.result(labelled=lab is not None) for acc in accumulators)
