"""What the hard-model training scripts share: seeded torch, the digits split, export and a description file.

Every script trains one small model in well under a minute on one core, exports it through
``edgeq.export`` (BatchNorm folded, static shapes) to ``<name>.onnx`` next to the scripts and writes
``<name>.json`` (what the model is, how it was trained, its float test accuracy in onnxruntime). The data
is never stored: each script's ``dataset()`` rebuilds it deterministically from what installed packages carry
(scikit-learn's bundled digits) or from a seeded numpy generator (the synthetic audio), so the benchmark and
the tests regenerate exactly the samples the model was trained and measured on.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Calibration inputs (from the training split), test inputs and test labels; float32 / int64."""

    calibration: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    train: np.ndarray | None = None
    train_labels: np.ndarray | None = None


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 NCHW in [0, 1]: (x_train, y_train, x_test, y_test).

    The split is the one examples/digits and shared/models use (test_size=0.2, random_state=0, stratified).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return x_train, y_train, x_test, y_test


@contextlib.contextmanager
def deterministic_torch(seed: int = SEED) -> Iterator[None]:
    """One thread, deterministic kernels, seeded; torch's global settings are restored afterwards."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def fit(
    model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch: int = 32,
    lr: float = 0.01,
    weight_decay: float = 0.0,
    augment: Callable | None = None,
):
    """Adam with a cosine schedule over seeded minibatches; returns the model in eval mode."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), batch):
            idx = order[start : start + batch]
            xb = xt[idx] if augment is None else augment(xt[idx], generator)
            optimizer.zero_grad()
            loss_fn(model(xb), yt[idx]).backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def predict(model, x: np.ndarray) -> np.ndarray:
    """Top-1 classes of an ONNX model (path or ModelProto), one sample at a time as a device runs it."""
    from edgeq.onnxutil import ort_session

    session = ort_session(model)
    name = session.get_inputs()[0].name
    return np.array([int(np.argmax(session.run(None, {name: x[i : i + 1]})[0])) for i in range(len(x))])


def export_and_describe(
    module,
    *,
    name: str,
    example: np.ndarray,
    data: Dataset,
    description: str,
    training: dict,
    out: Path,
    force: bool,
    started: float,
    transform: Callable | None = None,
) -> None:
    """Export ``module`` to ``out/<name>.onnx`` (optionally transformed), and write ``out/<name>.json``."""
    import torch

    from edgeq import fileio
    from edgeq.export import export
    from edgeq.onnxutil import save_model

    with torch.no_grad():
        torch_pred = module(torch.from_numpy(data.test)).argmax(1).numpy()
    proto = export(
        module, example_inputs=torch.from_numpy(example), input_names=["input"], output_names=["logits"]
    )
    if transform is not None:
        proto = transform(proto)
    path = out / f"{name}.onnx"
    save_model(proto, path, force=force)
    pred = predict(proto, data.test)
    correct = int((pred == data.labels).sum())
    torch_correct = int((torch_pred == data.labels).sum())
    meta = {
        "name": name,
        "description": description,
        "input": {"name": "input", "shape": list(example.shape), "dtype": "float32"},
        "output": {"name": "logits"},
        "training": {**training, "seed": SEED, "torch": torch.__version__},
        "parameters": int(sum(p.numel() for p in module.parameters())),
        "onnx_bytes": path.stat().st_size,
        "calibration_samples": len(data.calibration),
        "test_samples": len(data.labels),
        "test_correct": correct,
        "float_test_accuracy": correct / len(data.labels),
        "torch_test_correct": torch_correct,
    }
    fileio.write_text(out / f"{name}.json", json.dumps(meta, indent=2) + "\n", force=force)
    print(
        f"{name}: trained in {time.perf_counter() - started:.1f} s; {meta['parameters']} parameters, "
        f"{meta['onnx_bytes']} bytes; float test accuracy {correct}/{len(data.labels)} "
        f"(onnxruntime; torch: {torch_correct})"
    )
