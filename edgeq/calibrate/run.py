"""Running the model over the samples and streaming every float activation into its observer.

The model is run in onnxruntime with all optimizations off (so tensor names survive) and every activation
added as an output. Samples go through in batches: the calibration copy gets a symbolic batch dimension, and
the first batch is checked against single-sample runs, bit for bit; when the batched copy does not load,
fails, or differs (hard-coded Reshape shapes, ops that mix samples), every sample is run alone. Statistics are
per value, so they do not depend on the batch size. The batch actually run is also capped so that one run's
activations take at most :data:`BATCH_BYTES`, which bounds memory (and small batches are no slower here).

While the main thread histograms one batch's activations, a worker thread already runs the next batch:
onnxruntime releases the GIL, so two cores are kept busy. Nothing of a past batch is kept.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnx

from edgeq.calibrate.activations import activation_names, calibration_model, float_outputs, producers
from edgeq.calibrate.histogram import NonFiniteError, Observer, TensorStats
from edgeq.calibrate.methods import method_config
from edgeq.calibrate.table import CalibrationTable, model_fingerprint
from edgeq.config.recipe import DEFAULT_RECIPE, CalibrationMethod, MethodConfig, Recipe, load_recipe
from edgeq.data import Samples, group_samples, open_samples, stack
from edgeq.errors import ConfigError, DataError, ModelError
from edgeq.onnxutil import input_specs, load_model, ort_session
from edgeq.progress import track

BATCH_BYTES = 64 * 2**20
"""Upper bound on the activations of one batched run (bytes); the batch is made smaller to respect it."""


@dataclass(frozen=True)
class CollectResult:
    """What :func:`collect` returns: the statistics and how they were gathered."""

    stats: dict[str, TensorStats]
    num_samples: int
    batch_size: int  # the batch actually run (1 when batching was not possible)


class _Runner:
    """One onnxruntime session over the calibration copy, fetching the float activations."""

    def __init__(self, model: onnx.ModelProto, tensors: list[str], *, dynamic: bool):
        import onnxruntime as ort

        self.dynamic = dynamic
        self.session = ort_session(calibration_model(model, tensors, dynamic_batch=dynamic), optimize=False)
        self.fetch = float_outputs(self.session, tensors)
        # Failures are reported as ModelError (or trigger the batch-1 fallback); onnxruntime's own log line
        # on stderr would only repeat them.
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4

    @classmethod
    def open(cls, model: onnx.ModelProto, tensors: list[str]) -> _Runner:
        """The copy with a symbolic batch if onnxruntime accepts it, else the static copy."""
        try:
            return cls(model, tensors, dynamic=True)
        except ModelError:
            # e.g. a shape that contradicts a symbolic batch; the static copy loads wherever the model does.
            return cls(model, tensors, dynamic=False)

    def run(self, feed: Mapping[str, np.ndarray], first: int) -> list[np.ndarray]:
        try:
            return self.session.run(self.fetch, dict(feed), self.options)
        except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidArgument, …)
            n = len(next(iter(feed.values()))) if feed else 1
            where = f"sample {first}" if n == 1 else f"samples {first}…{first + n - 1}"
            raise ModelError(f"onnxruntime failed on {where}: {str(e).splitlines()[0][:300]}") from None


def _same(batched: list[np.ndarray], singles: list[list[np.ndarray]]) -> bool:
    for k, out in enumerate(batched):
        parts = [s[k] for s in singles]
        if out.ndim == 0 or any(p.ndim == 0 for p in parts):
            return False
        if out.shape[0] != sum(p.shape[0] for p in parts):
            return False
        if not np.array_equal(out, np.concatenate(parts, axis=0)):
            return False
    return True


class _Observers:
    def __init__(self, model: onnx.ModelProto, inputs: list[str], fetch: list[str]):
        self.inputs = inputs
        self.fetch = fetch
        self.by_name = {name: Observer() for name in [*inputs, *fetch]}
        self._producers = producers(model)

    def update(self, feed: Mapping[str, np.ndarray], outputs: list[np.ndarray], first: int, n: int) -> None:
        pairs = [(name, feed[name]) for name in self.inputs] + list(zip(self.fetch, outputs, strict=True))
        for name, value in pairs:
            try:
                self.by_name[name].update(value)
            except NonFiniteError as e:
                where = f"sample {first}" if n == 1 else f"samples {first}…{first + n - 1}"
                if n > 1 and value.ndim and value.shape[0] == n:  # batched: name the very sample
                    bad = ~np.isfinite(value.reshape(n, -1)).all(axis=1)
                    where = f"sample {first + int(np.argmax(bad))}"
                node = self._producers.get(name)
                made = f" (output of node '{node}')" if node else ""
                raise DataError(
                    f"tensor '{name}'{made} becomes {e} on {where}; check those inputs, or the "
                    "model for an overflow (e.g. exp or division by zero)"
                ) from None

    def stats(self) -> dict[str, TensorStats]:
        return {name: o.stats() for name, o in self.by_name.items()}


def collect(
    model: onnx.ModelProto, samples: Samples, *, batch_size: int = 16, progress: bool | None = None
) -> CollectResult:
    """Stream ``samples`` through ``model`` and return the statistics of every float activation."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, not {batch_size!r}")
    specs = input_specs(model)
    tensors = activation_names(model)
    runner = _Runner.open(model, tensors)
    stream: Iterator = iter(track(samples, description="calibrating", total=samples.length, show=progress))
    first = next(stream, None)
    if first is None:
        raise DataError(f"{samples.description}: no samples; calibration needs at least one")
    try:
        out0 = runner.run(first, 0)
    except ModelError:
        if not runner.dynamic:
            raise
        runner = _Runner(model, tensors, dynamic=False)
        out0 = runner.run(first, 0)
    observers = _Observers(model, [s.name for s in specs if s.dtype.kind == "f"], runner.fetch)
    per_sample = max(1, sum(a.nbytes for a in out0))
    batch = min(batch_size, max(1, BATCH_BYTES // per_sample)) if runner.dynamic else 1

    # The first batch is run both ways; only if batching reproduces the single runs exactly is it used.
    head = [first, *itertools.islice(stream, batch - 1)]
    singles = [out0] + [runner.run(s, i) for i, s in enumerate(head[1:], 1)]
    alike = next(group_samples(head, len(head)))  # leading samples of equal shapes (free dims may differ)
    batched_ok = False
    if len(alike) > 1:
        try:
            batched_ok = _same(runner.run(stack(alike), 0), singles[: len(alike)])
        except ModelError:
            pass
    if not batched_ok:
        batch = 1
    for i, (sample, outputs) in enumerate(zip(head, singles, strict=True)):
        observers.update(sample, outputs, i, 1)
    count = len(head)
    del head, singles, alike

    def finish(group: list, feed: Mapping[str, np.ndarray], future, first: int) -> None:
        try:
            outputs = future.result()
        except ModelError:
            if len(group) == 1:
                raise
            # A later batch that onnxruntime refuses (e.g. other sizes of free dimensions): run it sample by
            # sample, which is what the statistics are defined by anyway.
            for i, sample in enumerate(group):
                observers.update(sample, runner.run(sample, first + i), first + i, 1)
            return
        observers.update(feed, outputs, first, len(group))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeq-calibrate") as pool:
        pending = None
        for group in group_samples(stream, batch):
            feed = stack(group)
            future = pool.submit(runner.run, feed, count)
            if pending is not None:
                finish(*pending)
            pending = (group, feed, future, count)
            count += len(group)
        if pending is not None:
            finish(*pending)
    return CollectResult(observers.stats(), count, batch)


def calibrate(
    model: str | os.PathLike[str] | onnx.ModelProto,
    data,
    *,
    recipe: Recipe | str | None = None,
    method: MethodConfig | CalibrationMethod | str | None = None,
    num_samples: int | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
) -> CalibrationTable:
    """Calibrate ``model`` on ``data``: the statistics and ranges of every float activation.

    ``model``: a path or ModelProto. ``data``: anything :func:`edgeq.data.open_samples` accepts (image
    folder, .npy, .npz, arrays, iterable of ``{input name: array}``), checked against the model's inputs.
    ``recipe``: a shipped recipe name, a path or a Recipe; it gives the image preprocessing, the method, the
    sample count and the batch size (without one, images are preprocessed as the input's shape suggests and
    the defaults are minmax, 512 samples, batch 16). ``method``, ``num_samples`` and ``batch_size`` override
    the recipe; a bare method name keeps the recipe's percentile and bins. At most ``num_samples`` samples are
    used (fewer if the data has fewer). ``progress``: draw a progress bar (default: only on a terminal).
    """
    proto = load_model(model)
    rec = load_recipe(recipe)
    config = method_config(method, base=rec.method)
    for key, value in (("num_samples", num_samples), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key} must be a positive integer, not {value!r}")
    limit = num_samples if num_samples is not None else rec.num_samples
    samples = open_samples(
        data,
        inputs=input_specs(proto),
        preprocess=None if rec is DEFAULT_RECIPE else rec.preprocess,
        limit=limit,
    )
    result = collect(proto, samples, batch_size=batch_size or rec.batch_size, progress=progress)
    return CalibrationTable(model_fingerprint(proto), config, result.num_samples, result.stats)
