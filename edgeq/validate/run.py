"""validate(): run the float and the int8 model on the same samples in onnxruntime and compare them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from edgeq import onnxutil
from edgeq.errors import DataError, ModelError
from edgeq.progress import track
from edgeq.validate.compare import as_labels, check_labels
from edgeq.validate.latency import time_pair
from edgeq.validate.layers import dq_step, tensor_pairs, tensor_values, with_outputs
from edgeq.validate.metrics import ErrorStats, LayerMetrics, OutputAccumulator
from edgeq.validate.report import Environment, ModelStats, Report
from edgeq.validate.thresholds import Thresholds

if TYPE_CHECKING:
    from edgeq.config import Preprocess

NO_THRESHOLDS = Thresholds()


def _check_io(fm: onnx.ModelProto, qm: onnx.ModelProto) -> list[str]:
    """Raise ModelError unless both models take the same inputs and give the same outputs; output names."""
    f_in = {s.name: s for s in onnxutil.input_specs(fm)}
    q_in = {s.name: s for s in onnxutil.input_specs(qm)}
    for name, spec in f_in.items():
        other = q_in.get(name)
        if other is None:
            raise ModelError(
                f"input '{name}' of the float model is not an input of the int8 model (its inputs: "
                f"{sorted(q_in)}); pass the int8 model quantized from this float model"
            )
        if other.shape != spec.shape or other.dtype != spec.dtype:
            raise ModelError(
                f"input '{name}': the float model takes {spec.dtype}{list(spec.shape)} but the int8 "
                f"model {other.dtype}{list(other.shape)}; both must take the same input"
            )
    for name in q_in:
        if name not in f_in:
            raise ModelError(
                f"input '{name}' of the int8 model is not an input of the float model; pass the "
                "int8 model quantized from this float model"
            )
    f_out = [s.name for s in onnxutil.output_specs(fm)]
    q_out = {s.name for s in onnxutil.output_specs(qm)}
    for name in f_out:
        if name not in q_out:
            raise ModelError(
                f"output '{name}' of the float model is not an output of the int8 model (its "
                f"outputs: {sorted(q_out)}); pass the int8 model quantized from this float model"
            )
    return f_out


def _size(model: str | os.PathLike[str] | onnx.ModelProto, proto: onnx.ModelProto) -> tuple[str | None, int]:
    if isinstance(model, onnx.ModelProto):
        return None, len(onnxutil.serialize(proto))
    return str(model), os.path.getsize(model)


def _known_length(samples: object) -> int | None:
    try:
        return len(samples)  # type: ignore[arg-type]
    except TypeError:  # a generator, or Samples over one: the count is only known at the end
        return None


def _run(
    session, names: list[str], feed: dict[str, np.ndarray], *, side: str, sample: int
) -> list[np.ndarray]:
    try:
        return session.run(names, feed)
    except Exception as e:  # onnxruntime raises its own exception types for bad feeds and kernel failures
        raise DataError(
            f"sample {sample}: onnxruntime failed to run the {side} model: {str(e).splitlines()[0][:300]}"
        ) from None


def validate(
    float_model: str | os.PathLike[str] | onnx.ModelProto,
    quantized_model: str | os.PathLike[str] | onnx.ModelProto,
    data: object,
    *,
    labels: np.ndarray | Sequence[int] | str | os.PathLike[str] | None = None,
    thresholds: Thresholds = NO_THRESHOLDS,
    threads: int = 1,
    num_samples: int | None = None,
    preprocess: Preprocess | None = None,
    layers: bool = True,
    latency_runs: int = 50,
    progress: bool | None = None,
) -> Report:
    """Compare an int8 model with its float original on ``data``, in onnxruntime on this machine.

    ``data``: anything ``edgeq.data.open_samples`` accepts (a .npy/.npz file, an image folder with the
    recipe's ``preprocess``, an iterable of {input name: array}); samples are streamed and only running sums
    are kept. ``labels``: one class per sample (array or file) for top-1 accuracy. ``num_samples`` takes the
    first samples and their labels. Output metrics come from sessions with graph optimizations on (as
    deployed); per-layer SQNR (``layers``) from unoptimized sessions that output every paired tensor, so that
    each exists under its name. Latency: ``latency_runs`` single-threaded batch-1 runs of each model, timed
    alternately after warm-up on sessions without extra outputs (0 skips timing).
    """
    from edgeq.data import open_samples  # lazily: edgeq.data pulls in image decoding

    if threads < 1:
        raise DataError(f"threads={threads}: expected 1 or more")
    if latency_runs < 0:
        raise DataError(f"latency_runs={latency_runs}: expected 0 (no timing) or more")
    if num_samples is not None and num_samples < 1:
        raise DataError(f"num_samples={num_samples}: expected 1 or more, or None for all samples")
    fm, qm = onnxutil.load_model(float_model), onnxutil.load_model(quantized_model)
    out_names = _check_io(fm, qm)
    f_sess = onnxutil.ort_session(fm, threads=threads)
    q_sess = onnxutil.ort_session(qm, threads=threads)

    notes: list[str] = []
    pairs = []
    if layers:
        pairs, source = tensor_pairs(fm, qm)
        if pairs:
            notes.append(f"per-layer SQNR of {len(pairs)} tensors, paired by {source}")
            f_inst = onnxutil.ort_session(
                with_outputs(fm, [p.tensor for p in pairs]), threads=threads, optimize=False
            )
            q_inst = onnxutil.ort_session(
                with_outputs(qm, [p.quant_tensor for p in pairs]), threads=threads, optimize=False
            )
            f_inst_names = [o.name for o in f_inst.get_outputs()]
            q_inst_names = [o.name for o in q_inst.get_outputs()]
        else:
            notes.append(f"per-layer SQNR skipped: no quantized activation found by {source}")
    layer_stats = [ErrorStats(full=False) for _ in pairs]

    samples = open_samples(data, inputs=onnxutil.input_specs(fm), preprocess=preprocess, limit=num_samples)
    total = _known_length(samples)
    lab = as_labels(labels)
    accs: list[OutputAccumulator] = []
    first_feed: dict[str, np.ndarray] | None = None
    n = 0
    for feed in track(samples, description="validating", total=total, show=progress):
        fo = _run(f_sess, out_names, feed, side="float", sample=n)
        qo = _run(q_sess, out_names, feed, side="int8", sample=n)
        if not accs:
            first_feed = {k: np.array(v) for k, v in feed.items()}
            for name, f, q in zip(out_names, fo, qo, strict=True):
                if f.shape != q.shape:
                    raise ModelError(
                        f"output '{name}': the float model gives shape {list(f.shape)} but the "
                        f"int8 model {list(q.shape)}"
                    )
                accs.append(OutputAccumulator(name, f.shape, step=dq_step(qm, name)))
            if lab is not None:
                if num_samples is not None:  # labels belong to the whole data source; a limit takes its head
                    lab = lab[: num_samples * max(a.rows_per_sample for a in accs)]
                check_labels(lab, accs, total)
        for acc, f, q in zip(accs, fo, qo, strict=True):
            rows = acc.rows_per_sample
            sample_labels = None
            if lab is not None and rows:
                sample_labels = lab[n * rows : (n + 1) * rows]
                if sample_labels.size < rows:
                    raise DataError(
                        f"labels: {lab.size} labels but the data has more than {n} samples; "
                        "give exactly one label per sample"
                    )
            acc.update(f, q, labels=sample_labels)
        if pairs:
            fv = dict(
                zip(f_inst_names, _run(f_inst, f_inst_names, feed, side="float", sample=n), strict=True)
            )
            qv = dict(zip(q_inst_names, _run(q_inst, q_inst_names, feed, side="int8", sample=n), strict=True))
            for p, stats in zip(pairs, layer_stats, strict=True):
                f, q = tensor_values(fv, feed, p.tensor), qv[p.quant_tensor]
                if f.shape != q.shape:
                    raise ModelError(
                        f"tensor '{p.tensor}' has shape {list(f.shape)} in the float model but its "
                        f"int8 twin '{p.quant_tensor}' {list(q.shape)}; the tensor map is wrong"
                    )
                stats.update(f, q, n)
        n += 1
    if n == 0:
        raise DataError("the validation data holds no samples; give at least one")
    if lab is not None:
        check_labels(lab, accs, n)

    ranked = sorted(
        zip(pairs, layer_stats, strict=True), key=lambda ps: (ps[1].sqnr_db, ps[0].order)
    )  # worst first
    layer_metrics = [
        LayerMetrics(
            tensor=p.tensor,
            quant_tensor=p.quant_tensor,
            op_type=p.op_type,
            sqnr_db=s.sqnr_db,
            max_abs_error=s.max_abs,
            step=p.step,
            nonfinite=s.float_nonfinite + s.quant_nonfinite,
        )
        for p, s in ranked
    ]

    f_lat = q_lat = None
    if latency_runs:
        # Sessions without extra outputs (those block fusion), single-threaded: what a device runs.
        timed = (f_sess, q_sess) if threads == 1 else (onnxutil.ort_session(fm), onnxutil.ort_session(qm))
        f_lat, q_lat = time_pair(timed, first_feed, runs=latency_runs)
    f_path, f_size = _size(float_model, fm)
    q_path, q_size = _size(quantized_model, qm)
    return Report(
        outputs=tuple(a.result(labelled=lab is not None) for a in accs),
        layers=tuple(layer_metrics),
        float_model=ModelStats(path=f_path, size_bytes=f_size, latency=f_lat),
        quant_model=ModelStats(path=q_path, size_bytes=q_size, latency=q_lat),
        environment=Environment.host(),
        thresholds=thresholds,
        notes=tuple(notes),
    )
