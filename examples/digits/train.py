"""Train the digits example: a MobileNetV2-style CNN on scikit-learn's bundled 8×8 digits.

    python examples/digits/train.py --force        # rewrites the files next to this script

Writes, next to this script (or to ``--out``):

- ``digits_cnn.onnx``  the float model, exported through ``edgeq.export`` (BatchNorm folded, static shapes);
                       input ``input`` float32 [1, 1, 8, 8] in [0, 1], output ``logits`` float32 [1, 10]
- ``calibration.npz``  ``input``: the 1,437 training images, float32 [N, 1, 8, 8] (already divided by 16)
- ``test.npz``         ``input``: the 360 held-out images, float32 [N, 1, 8, 8]; ``labels``: int64 [N]
- ``model.json``       description, class names, preprocessing and the float test accuracy (onnxruntime)

The width is chosen so that the int8 model pays off: most of the ~2.8 M multiply-adds sit in two 96×192
pointwise convs, large enough that onnxruntime's int8 kernels beat its float ones with one thread at batch 1
(a 1.7 K-parameter version of this net ran slower in int8, all per-op overhead). README.md has the figures.

Training is seeded and deterministic (one thread, deterministic algorithms): the same torch build gives the
same files byte for byte. The split is the one /work/shared/models/README.md used for its Keras model
(``train_test_split(test_size=0.2, random_state=0, stratify=y)``), so accuracies are comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0
EPOCHS = 6
BATCH = 64
LEARNING_RATE = 0.01
CLASSES = [str(i) for i in range(10)]
WIDTH = 96  # channels of the stem and the residual stream, 8×8
EXPANSION = 2  # the inverted residual's hidden width is WIDTH × EXPANSION
HEAD = 192  # channels after the strided block, 4×4, into global average pooling
# load_digits pixels are counts of set pixels in 4×4 blocks of a 32×32 bitmap: 0..16.
PIXEL_SCALE = 1.0 / 16.0


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 NCHW in [0, 1] and int64 labels: (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) * np.float32(PIXEL_SCALE))[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return x_train, y_train, x_test, y_test


def build_model():
    """Stem conv → residual inverted bottleneck → strided depthwise-separable block → GAP → linear."""
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int, *, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            hidden = WIDTH * EXPANSION
            self.stem = conv_bn(1, WIDTH, 3)
            # MobileNetV2's inverted residual: expand 1×1, depthwise 3×3, project 1×1 with no activation
            # before the add (a linear bottleneck). The two wide 1×1 convs hold most of the arithmetic, which
            # is what lets int8 GEMMs beat float ones on a CPU.
            self.block = nn.Sequential(
                conv_bn(WIDTH, hidden, 1),
                conv_bn(hidden, hidden, 3, groups=hidden),
                conv_bn(hidden, WIDTH, 1, act=False),
            )
            self.down = nn.Sequential(
                conv_bn(WIDTH, WIDTH, 3, stride=2, groups=WIDTH), conv_bn(WIDTH, HEAD, 1)
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(HEAD, len(CLASSES))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = x + self.block(x)
            x = self.down(x)
            return self.classifier(torch.flatten(self.pool(x), 1))

    return DigitsCNN()


@contextlib.contextmanager
def deterministic_torch():
    """One thread, deterministic kernels, seeded; torch's global settings are restored afterwards."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also NaN-fills every new tensor (so that a kernel reading uninitialised memory would
    # show); that fill was over half of the training time here, and every kernel this model uses writes its
    # whole output. The slow test re-trains and compares the files byte for byte, which would catch it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.manual_seed(SEED)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def train(x_train: np.ndarray, y_train: np.ndarray, *, epochs: int):
    """Adam with a cosine schedule, minibatches in a seeded order; returns the model in eval mode."""
    import torch

    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH):
            idx = order[start : start + BATCH]
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """np.savez_compressed's format with fixed zip timestamps, so the same arrays give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def onnx_accuracy(model, x: np.ndarray, y: np.ndarray) -> int:
    """Number of correct top-1 predictions of the ONNX model, one sample at a time as a device runs it."""
    from edgeq.onnxutil import ort_session

    session = ort_session(model)
    return sum(
        int(np.argmax(session.run(["logits"], {"input": x[i : i + 1]})[0]) == y[i]) for i in range(len(x))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)

    import torch

    from edgeq import fileio
    from edgeq.export import export

    started = time.perf_counter()
    x_train, y_train, x_test, y_test = load_split()
    with deterministic_torch():
        model = train(x_train, y_train, epochs=args.epochs)
    with torch.no_grad():
        torch_correct = int((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).sum())
    trained = time.perf_counter() - started

    out: Path = args.out
    onnx_model = export(
        model,
        example_inputs=torch.zeros(1, 1, 8, 8),
        input_names=["input"],
        output_names=["logits"],
        output=out / "digits_cnn.onnx",
        force=args.force,
    )
    correct = onnx_accuracy(onnx_model, x_test, y_test)
    fileio.write_bytes(out / "calibration.npz", npz_bytes(input=x_train), force=args.force)
    fileio.write_bytes(out / "test.npz", npz_bytes(input=x_test, labels=y_test), force=args.force)
    params = sum(p.numel() for p in model.parameters())
    meta = {
        "name": "digits_cnn",
        "description": "MobileNetV2-style CNN (stem conv, residual inverted bottleneck: 1x1 expand, "
        "depthwise 3x3, linear 1x1 project; strided depthwise-separable block, global average pooling, "
        "linear classifier) trained on scikit-learn's 8x8 digits; BatchNorm folded into the convs by "
        "edgeq.export.",
        "architecture": {"width": WIDTH, "expansion": EXPANSION, "head": HEAD, "activation": "ReLU6"},
        "input": {"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": [1, 10], "dtype": "float32"},
        "classes": CLASSES,
        "preprocessing": {
            "scale": PIXEL_SCALE,
            "offset": 0.0,
            "description": "load_digits pixel values 0..16 divided by 16, giving [0, 1]; "
            "calibration.npz and test.npz hold inputs already preprocessed",
        },
        "split": "sklearn train_test_split(test_size=0.2, random_state=0, stratify=y) of load_digits",
        "training": {
            "epochs": args.epochs,
            "batch_size": BATCH,
            "optimizer": "Adam",
            "learning_rate": LEARNING_RATE,
            "schedule": "cosine",
            "seed": SEED,
            "torch": torch.__version__,
        },
        "parameters": params,
        "test_samples": len(y_test),
        "test_correct": correct,
        "float_test_accuracy": correct / len(y_test),
    }
    fileio.write_text(out / "model.json", json.dumps(meta, indent=2) + "\n", force=args.force)
    print(
        f"trained {args.epochs} epochs in {trained:.1f} s; {params} parameters; float test accuracy "
        f"{correct}/{len(y_test)} = {100 * correct / len(y_test):.2f} % (onnxruntime; torch: {torch_correct})"
    )
    if correct != torch_correct:
        print("warning: the exported model's accuracy differs from torch's", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
