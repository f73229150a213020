"""Hard model 1: a depthwise-separable CNN whose per-channel ranges differ by orders of magnitude.

    python benchmarks/hard_models/dw_ranges.py --force      # rewrites dw_ranges.onnx / dw_ranges.json

Trained on scikit-learn's digits (8×8, the examples/digits split): stem conv → two depthwise-separable
blocks (depthwise 3×3 + BN + ReLU → pointwise 1×1 + BN + ReLU) → global average pooling → linear.

After export (BatchNorm folded), each channel ``c`` of every conv that feeds a ReLU and then another conv is
multiplied by ``s_c`` (log-uniform in [1/40, 40], seeded) and the consumer's input channel ``c`` by
``1 / s_c``. ReLU is positively homogeneous, so the float function is unchanged (the script checks it); the
weights are now what BatchNorm folding gives a MobileNet whose channels have very different running
variances (Nagel et al., "Data-Free Quantization", 2019: MobileNetV2 falls to 0.1 % top-1 with per-tensor
int8 weights). Per-channel weights do not save it here: the activation between depthwise and pointwise convs
is quantized per tensor, and its channels now span three orders of magnitude.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, SEED, Dataset, deterministic_torch, digits_split, export_and_describe, fit

NAME = "dw_ranges"
EPOCHS = 12
SPREAD = 40.0  # channel scales lie in [1/SPREAD, SPREAD]


def dataset() -> Dataset:
    x_train, y_train, x_test, y_test = digits_split()
    return Dataset(x_train, x_test, y_test, x_train, y_train)


def build_model():
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int, *, stride: int = 1, groups: int = 1):
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )

    return nn.Sequential(
        conv_bn(1, 16, 3),
        conv_bn(16, 16, 3, groups=16),
        conv_bn(16, 32, 1),
        conv_bn(32, 32, 3, stride=2, groups=32),
        conv_bn(32, 32, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def rescale_channels(model, *, seed: int = SEED, spread: float = SPREAD):
    """Conv → Relu → Conv: scale the producer's output channels by s and the consumer's inputs by 1/s."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    arrays = {name: numpy_helper.to_array(t).astype(np.float64) for name, t in inits.items()}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    rng = np.random.default_rng(seed)
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        relu = consumers.get(node.output[0], [])
        if len(relu) != 1 or relu[0].op_type != "Relu":
            continue
        nxt = consumers.get(relu[0].output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "Conv":
            continue
        consumer = nxt[0]
        w1, b1 = arrays[node.input[1]], arrays[node.input[2]]
        w2 = arrays[consumer.input[1]]
        s = np.exp(rng.uniform(-np.log(spread), np.log(spread), w1.shape[0]))
        w1 *= s[:, None, None, None]
        b1 *= s
        group = next((a.i for a in consumer.attribute if a.name == "group"), 1)
        if group == 1:
            w2 /= s[None, :, None, None]
        else:  # depthwise: input channel c is read by output channel c only
            w2 /= s[:, None, None, None]
    for name, t in inits.items():
        t.CopyFrom(numpy_helper.from_array(arrays[name].astype(np.float32), name))
    return out


def check_unchanged(original, rescaled, x: np.ndarray) -> float:
    """Largest |difference| of the logits relative to their largest magnitude, over ``x``."""
    from edgeq.onnxutil import ort_session

    a, b = ort_session(original), ort_session(rescaled)
    fa = np.concatenate([a.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    fb = np.concatenate([b.run(None, {"input": x[i : i + 1]})[0] for i in range(len(x))])
    return float(np.max(np.abs(fa - fb)) / np.max(np.abs(fa)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = dataset()
    with deterministic_torch():
        module = fit(build_model(), data.train, data.train_labels, epochs=EPOCHS)
    originals = {}

    def transform(proto):
        originals["float"] = proto
        rescaled = rescale_channels(proto)
        error = check_unchanged(proto, rescaled, data.test)
        if error > 1e-5:
            raise SystemExit(f"rescaling changed the logits by {error:.2e} relative")
        return rescaled

    export_and_describe(
        module,
        name=NAME,
        example=np.zeros((1, 1, 8, 8), np.float32),
        data=data,
        description="Depthwise-separable CNN on 8x8 digits (ReLU), BatchNorm folded; channels then rescaled "
        f"by log-uniform factors in [1/{SPREAD:g}, {SPREAD:g}] across each Conv-ReLU-Conv pair "
        "(float function unchanged), as BN folding does to channels with very different variances.",
        training={"epochs": EPOCHS, "batch_size": 32, "optimizer": "Adam", "learning_rate": 0.01},
        out=args.out,
        force=args.force,
        started=started,
        transform=transform,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
