"""Shared fixtures. Tests build tiny models with tests/builder.py and use real runtimes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SHARED_MODELS = ROOT.parent / "shared" / "models"
EXAMPLE = ROOT / "examples" / "digits"

sys.path.insert(0, str(TESTS))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not (SHARED_MODELS / "digits_float_nhwc.onnx").is_file():
        pytest.skip(
            f"benchmark models not found at {SHARED_MODELS} (they sit beside the repository in shared/)"
        )
    return SHARED_MODELS


# The sshd and emulated-Raspberry-Pi fixtures (real /usr/sbin/sshd on 127.0.0.1, qemu-aarch64 userland).
pytest_plugins = ["pi_fixtures"]
