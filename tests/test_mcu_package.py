"""Microcontroller packages: C sources, memory report against the budget, build snippets, TFLM array."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from test_c_helpers import benchmark_qdq

from edgeq.config import load_target
from edgeq.errors import UnsupportedError
from edgeq.packaging.base import Package, write_manifest
from edgeq.packaging.mcu import package_mcu

ARM = shutil.which("arm-none-eabi-gcc")
needs_arm = pytest.mark.skipif(ARM is None, reason="arm-none-eabi-gcc not installed (gcc-arm-none-eabi)")


def make(tmp_path, shared, name="digits", target="cortex-m4", out="pkg", **kw):
    t = load_target(target)
    folder = tmp_path / out
    folder.mkdir()
    manifest = package_mcu(benchmark_qdq(shared, name, tmp_path), target=t, output_dir=folder, **kw)
    write_manifest(folder, target=t, manifest=manifest)
    return folder, manifest


@needs_arm
def test_digits_package_contents_and_measured_memory(tmp_path, shared_models):
    folder, manifest = make(tmp_path, shared_models, float_model=shared_models / "digits_float_nhwc.onnx")
    for rel in (
        "model.int8.onnx",
        "model.float.onnx",
        "c/model.h",
        "c/model.c",
        "c/model_data.c",
        "c/runtime/conv.c",
        "c/edgeq_model.mk",
        "c/edgeq_model.cmake",
        "memory_report.json",
        "memory_report.txt",
        "README.md",
    ):
        assert (folder / rel).is_file(), rel
    report = json.loads((folder / "memory_report.json").read_text())
    assert report["measured"] and report["compiler"] == "arm-none-eabi-gcc"
    ram, flash = report["ram"], report["flash"]
    assert ram["arena_bytes"] == manifest["memory"]["arena_bytes"] <= 1.05 * ram["arena_lower_bound_bytes"]
    assert ram["total_bytes"] == ram["arena_bytes"] + ram["stack_bytes"] + ram["io_buffers_bytes"]
    assert 0 < ram["stack_bytes"] < 2048 and ram["stack_path"][0] == "edgeq_run"
    assert flash["weights_bytes"] > 2000 and 2000 < flash["code_bytes"] < 40_000
    assert flash["total_bytes"] < flash["budget_bytes"] == 1024 * 1024
    text = (folder / "memory_report.txt").read_text()
    assert "liveness lower bound" in text and "of 1,048,576 B" in text
    pkg = Package.load(folder)  # every file listed with its hash
    assert pkg.has("c") and pkg.has("int8")


@needs_arm
def test_package_is_deterministic(tmp_path, shared_models):
    a, _ = make(tmp_path, shared_models, out="a")
    b, _ = make(tmp_path, shared_models, out="b")
    assert (a / "package.json").read_bytes() == (b / "package.json").read_bytes()


@needs_arm
def test_a_model_too_big_for_the_board_names_the_numbers_and_largest_layers(tmp_path, shared_models):
    with pytest.raises(UnsupportedError) as e:
        make(tmp_path, shared_models, name="mbv2_32", target="cortex-m4")
    msg = str(e.value)
    assert "does not fit cortex-m4" in msg and "\n" not in msg
    assert re.search(r"flash [\d,]+ B .* exceeds the 1,048,576 B budget \(hardware\.flash_kb in", msg)
    assert re.search(r"RAM [\d,]+ B \(arena 319,488 B", msg) and "hardware.sram_kb" in msg
    assert "largest layers: " in msg and "largest tensors: " in msg


@needs_arm
@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_makefile_snippet_builds_the_sources(tmp_path, shared_models):
    folder, _ = make(tmp_path, shared_models)
    (tmp_path / "Makefile").write_text(
        f"EDGEQ_MODEL_DIR := {folder / 'c'}\ninclude $(EDGEQ_MODEL_DIR)/edgeq_model.mk\n"
        "OBJS := $(notdir $(EDGEQ_MODEL_SRCS:.c=.o))\nvpath %.c $(sort $(dir $(EDGEQ_MODEL_SRCS)))\n"
        "all: $(OBJS)\n%.o: %.c\n\t$(CC) $(CFLAGS) $(EDGEQ_MODEL_CFLAGS) -c $< -o $@\n"
    )
    cflags = " ".join(
        ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2", "-Wall", "-Werror"]
    )
    proc = subprocess.run(
        ["make", "-C", str(tmp_path), f"CC={ARM}", f"CFLAGS={cflags}"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "model.o").is_file() and (tmp_path / "conv.o").is_file()


@needs_arm
def test_tflite_c_array_matches_the_flatbuffer(tmp_path, shared_models):
    pytest.importorskip("edgeq.backends.tflite")
    folder, manifest = make(tmp_path, shared_models)
    if "tflite" not in manifest["models"]:
        pytest.skip(f"the tflite writer could not express the model: {manifest.get('notes')}")
    data = (folder / "model.tflite").read_bytes()
    src = (folder / "c" / "model_tflite.c").read_text()
    body = src.split("= {", 1)[1]
    values = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body))
    assert values == data and f"edgeq_model_tflite_len = {len(data)};" in src
    assert "aligned(16)" in src


@needs_arm
@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm not installed")
def test_validate_the_package_on_an_emulated_m4(tmp_path, shared_models):
    from edgeq.devices.qemu_mcu import validate_on_mcu
    from edgeq.validate import Thresholds

    folder, _ = make(tmp_path, shared_models, float_model=shared_models / "digits_float_nhwc.onnx")
    labels = np.load(shared_models / "test_labels.npy", allow_pickle=False)
    report = validate_on_mcu(
        folder,
        machine="mps2-an386",
        data=shared_models / "digits_test_inputs.npy",
        labels=labels,
        num_samples=120,
        thresholds=Thresholds(min_agreement=0.95),
    )
    assert report.passed, report.failures
    assert report.samples == 120 and report.environment.emulated
    assert report.environment.device == "qemu:mps2-an386"
    assert any("instructions per inference" in n for n in report.notes)
