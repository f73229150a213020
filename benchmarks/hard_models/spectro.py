"""Hard model 2: a sound classifier with a spectrogram front end (STFT as a convolution) feeding convs.

    python benchmarks/hard_models/spectro.py --force      # rewrites spectro.onnx / spectro.json

Synthetic audio, 8 kHz, 2048 samples (0.256 s), eight classes generated with numpy (seeded): low tone, high
tone, rising chirp, falling chirp, two tones, amplitude-modulated tone, band-limited noise burst, harmonic
complex; random frequencies, onsets, durations, levels (±12 dB) and white noise (SNR 5…30 dB).

Front end in the graph: a strided Conv1d with fixed Hann-windowed cosine and sine filters (the STFT,
n_fft 128, hop 64: 65 bins × 31 frames), squared (Mul) and summed per bin by a fixed 1×1 conv: the power
spectrum, whose values span several orders of magnitude (a tone puts its energy into one or two bins, the
noise floor is tens of dB below). A BatchNorm, two trained Conv1d + ReLU layers, average pooling and a linear
classifier follow. The per-tensor int8 grid of the power spectrum is what breaks: MinMax spends it on the
loudest bin of the loudest recording.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, SEED, Dataset, deterministic_torch, export_and_describe, fit

NAME = "spectro"
RATE = 8000
LENGTH = 2048
N_FFT = 128
HOP = 64
CLASSES = (
    "low tone",
    "high tone",
    "rising chirp",
    "falling chirp",
    "two tones",
    "AM tone",
    "noise burst",
    "harmonics",
)
EPOCHS = 30
TRAIN, CALIBRATION, TEST = 2400, 500, 800


def _tone(t: np.ndarray, f: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))


def _chirp(t: np.ndarray, f0: float, f1: float, rng: np.random.Generator) -> np.ndarray:
    duration = t[-1]
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration))
    return np.sin(phase + rng.uniform(0, 2 * np.pi))


def make_clip(label: int, rng: np.random.Generator) -> np.ndarray:
    """One float32 clip of class ``label``: the sound inside a random window, then noise."""
    t = np.arange(LENGTH) / RATE
    if label == 0:
        x = _tone(t, rng.uniform(150, 500), rng)
    elif label == 1:
        x = _tone(t, rng.uniform(1500, 3200), rng)
    elif label == 2:
        x = _chirp(t, rng.uniform(200, 600), rng.uniform(2000, 3500), rng)
    elif label == 3:
        x = _chirp(t, rng.uniform(2000, 3500), rng.uniform(200, 600), rng)
    elif label == 4:
        f = rng.uniform(400, 1200)
        x = 0.5 * (_tone(t, f, rng) + _tone(t, f * rng.uniform(1.6, 2.4), rng))
    elif label == 5:
        x = _tone(t, rng.uniform(600, 1400), rng) * (0.55 + 0.45 * _tone(t, rng.uniform(15, 40), rng))
    elif label == 6:
        spectrum = np.fft.rfft(rng.normal(size=LENGTH))
        freqs = np.fft.rfftfreq(LENGTH, 1 / RATE)
        lo = rng.uniform(800, 1800)
        spectrum[(freqs < lo) | (freqs > lo + rng.uniform(400, 1000))] = 0
        x = np.fft.irfft(spectrum, LENGTH)
        x /= np.max(np.abs(x)) + 1e-12
    else:
        f0 = rng.uniform(120, 300)
        x = sum(_tone(t, f0 * k, rng) / k for k in range(1, 7)) / 2.0
    start = int(rng.uniform(0, 0.3) * LENGTH)
    stop = start + int(rng.uniform(0.5, 1.0) * (LENGTH - start))
    envelope = np.zeros(LENGTH)
    envelope[start:stop] = np.hanning(stop - start)
    x = x * envelope * 10 ** (rng.uniform(-12, 12) / 20) * 0.3
    noise = rng.normal(size=LENGTH)
    snr_db = rng.uniform(5, 30)
    power = np.mean(x[start:stop] ** 2) + 1e-12
    x = x + noise * np.sqrt(power / 10 ** (snr_db / 10))
    return x.astype(np.float32)


def _clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    return np.stack([make_clip(int(k), rng) for k in labels])[:, None, :], labels.astype(np.int64)


def dataset() -> Dataset:
    """Train, calibration (the first training clips) and test clips, deterministic."""
    x_train, y_train = _clips(TRAIN, SEED + 1)
    x_test, y_test = _clips(TEST, SEED + 2)
    return Dataset(x_train[:CALIBRATION], x_test, y_test, x_train, y_train)


def stft_filters() -> np.ndarray:
    """(2·bins, 1, N_FFT): Hann-windowed cos then sin rows, normalised so a full-scale tone peaks near 1."""
    n = np.arange(N_FFT)
    window = np.hanning(N_FFT + 1)[:-1]
    k = np.arange(N_FFT // 2 + 1)[:, None]
    norm = 2.0 / window.sum()
    cos = window * np.cos(2 * np.pi * k * n / N_FFT) * norm
    sin = -window * np.sin(2 * np.pi * k * n / N_FFT) * norm
    return np.concatenate([cos, sin])[:, None, :].astype(np.float32)


def build_model():
    import torch
    from torch import nn

    bins = N_FFT // 2 + 1

    class Spectro(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stft = nn.Conv1d(1, 2 * bins, N_FFT, stride=HOP, bias=False)
            self.stft.weight.data = torch.from_numpy(stft_filters())
            self.stft.weight.requires_grad_(False)
            # re² + im² per bin: a fixed 1×1 conv adding row k and row bins + k
            self.power = nn.Conv1d(2 * bins, bins, 1, bias=False)
            eye = np.eye(bins, dtype=np.float32)
            self.power.weight.data = torch.from_numpy(np.concatenate([eye, eye], axis=1)[:, :, None])
            self.power.weight.requires_grad_(False)
            self.norm = nn.BatchNorm1d(bins)
            self.conv1 = nn.Conv1d(bins, 32, 3, padding=1)
            self.conv2 = nn.Conv1d(32, 32, 3, stride=2, padding=1)
            self.pool = nn.AdaptiveAvgPool1d(1)
            self.fc = nn.Linear(32, len(CLASSES))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.stft(x)
            p = self.norm(self.power(z * z))
            h = torch.relu(self.conv1(p))
            h = torch.relu(self.conv2(h))
            return self.fc(torch.flatten(self.pool(h), 1))

    return Spectro()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = dataset()
    with deterministic_torch():
        module = fit(build_model(), data.train, data.train_labels, epochs=EPOCHS, batch=64, lr=0.005)
    export_and_describe(
        module,
        name=NAME,
        example=np.zeros((1, 1, LENGTH), np.float32),
        data=data,
        description="Synthetic 8-class sound classifier: STFT as a fixed strided Conv1d (n_fft 128, hop 64), "
        "power spectrum (Mul + fixed 1x1 conv), BatchNorm, two Conv1d+ReLU, average pool, linear.",
        training={
            "epochs": EPOCHS,
            "batch_size": 64,
            "optimizer": "Adam",
            "learning_rate": 0.005,
            "classes": list(CLASSES),
            "rate_hz": RATE,
            "samples": LENGTH,
        },
        out=args.out,
        force=args.force,
        started=started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
