"""Hard model 3: a small attention block (transformer encoder layer) reading digits as a sequence of rows.

    python benchmarks/hard_models/attention.py --force      # rewrites attention.onnx / attention.json

scikit-learn's digits (the examples/digits split); each 8×8 image is a sequence of 8 tokens (its rows, 8
pixels each). A linear embedding plus a learned position embedding, one pre-norm transformer block
(LayerNorm → two-head self-attention → residual add; LayerNorm → MLP with ReLU → residual add), a final
LayerNorm, mean over tokens, linear classifier. The attention is written out with MatMul, Transpose and
Softmax so the exported graph has activation × activation matrix products.

Trained transformers grow a few *outlier dimensions*: LayerNorm scales of a handful of channels tens of
times larger than the rest, the reason BERT-class models fail W8A8 post-training quantization (Bondarenko et
al., "Understanding and Overcoming the Challenges of Efficient Transformer Quantization", 2021; Dettmers et
al., "LLM.int8()", 2022). A 1-minute model does not grow them, so after export two channels of every
LayerNorm feeding a linear layer get their scale and bias multiplied by 40 and the linear layer's weights
reading them divided by 40: the float function is unchanged (the script checks it), and every LayerNorm output
now has outlier channels that the per-tensor int8 grid must span.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, SEED, Dataset, deterministic_torch, digits_split, export_and_describe, fit

NAME = "attention"
EPOCHS = 40
DIM, HEADS, TOKENS = 32, 2, 8
OUTLIER, OUTLIER_CHANNELS = 100.0, 2


def dataset() -> Dataset:
    x_train, y_train, x_test, y_test = digits_split()
    return Dataset(x_train, x_test, y_test, x_train, y_train)


def build_model():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(DIM)
            self.qkv = nn.Linear(DIM, 3 * DIM)
            self.proj = nn.Linear(DIM, DIM)
            self.norm2 = nn.LayerNorm(DIM)
            self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.ReLU(), nn.Linear(2 * DIM, DIM))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            h = d // HEADS
            qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, HEADS, h).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attention = torch.softmax(q @ k.transpose(-1, -2) * (h**-0.5), dim=-1)
            y = (attention @ v).transpose(1, 2).reshape(b, t, d)
            x = x + self.proj(y)
            return x + self.mlp(self.norm2(x))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(8, DIM)
            self.position = nn.Parameter(torch.zeros(1, TOKENS, DIM))
            self.block = Block()
            self.norm = nn.LayerNorm(DIM)
            self.head = nn.Linear(DIM, 10)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = self.embed(image.reshape(-1, TOKENS, 8)) + self.position
            x = self.norm(self.block(x))
            return self.head(x.mean(dim=1))

    return Encoder()


def outlier_dimensions(model, *, seed: int = SEED):
    """Scale OUTLIER_CHANNELS channels of each LayerNorm by OUTLIER and their readers by 1 / OUTLIER."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    rng = np.random.default_rng(seed)
    arrays = {}
    for node in graph.node:
        if node.op_type != "LayerNormalization":
            continue
        readers = consumers.get(node.output[0], [])
        if len(readers) != 1:
            continue
        reader = readers[0]
        if reader.op_type == "ReduceMean":  # mean over tokens, then the classifier
            nxt = consumers.get(reader.output[0], [])
            reader = nxt[0] if len(nxt) == 1 else None
        if reader is None or reader.op_type not in ("MatMul", "Gemm") or reader.input[1] not in inits:
            continue
        gamma, beta = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in node.input[1:3])
        weight = numpy_helper.to_array(inits[reader.input[1]]).astype(np.float64)
        channels = rng.choice(gamma.size, OUTLIER_CHANNELS, replace=False)
        gamma[channels] *= OUTLIER
        beta[channels] *= OUTLIER
        transposed = reader.op_type == "Gemm" and any(a.name == "transB" and a.i for a in reader.attribute)
        if transposed:
            weight[:, channels] /= OUTLIER
        else:
            weight[channels, :] /= OUTLIER
        arrays.update({node.input[1]: gamma, node.input[2]: beta, reader.input[1]: weight})
    for name, array in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))
    return out


def check_unchanged(original, changed, x: np.ndarray) -> float:
    """Largest |difference| of the logits relative to their largest magnitude, over ``x``."""
    from edgeq.onnxutil import ort_session

    a, b = ort_session(original), ort_session(changed)
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
        module = fit(build_model(), data.train, data.train_labels, epochs=EPOCHS, lr=0.003)

    def transform(proto):
        changed = outlier_dimensions(proto)
        error = check_unchanged(proto, changed, data.test)
        if error > 1e-5:
            raise SystemExit(f"the outlier dimensions changed the logits by {error:.2e} relative")
        return changed

    export_and_describe(
        module,
        name=NAME,
        example=np.zeros((1, 1, 8, 8), np.float32),
        data=data,
        description="One pre-norm transformer encoder block (2-head self-attention written with MatMul/"
        "Softmax, "
        "ReLU MLP, LayerNorm) over the 8 rows of an 8x8 digit, mean pooling, linear classifier; "
        f"{OUTLIER_CHANNELS} outlier channels (x{OUTLIER:g}) per LayerNorm, float function unchanged.",
        training={"epochs": EPOCHS, "batch_size": 32, "optimizer": "Adam", "learning_rate": 0.003},
        out=args.out,
        force=args.force,
        started=started,
        transform=transform,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
