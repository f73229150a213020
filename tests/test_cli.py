"""The `edgeq` command: each verb end to end; bad input gives one clear line, exit 2 and no output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from builder import GraphBuilder, small_cnn
from conftest import EXAMPLE

from edgeq.cli import main


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    """Exit 2, exactly one line on stderr, no traceback, and the line names what it should."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgeq: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def cnn(tmp_path) -> Path:
    path = tmp_path / "float.onnx"
    path.write_bytes(small_cnn(shape=(1, 3, 16, 16)).SerializeToString())
    return path


@pytest.fixture
def cnn_data(tmp_path) -> Path:
    path = tmp_path / "data.npy"
    np.save(path, np.random.default_rng(0).normal(size=(24, 3, 16, 16)).astype(np.float32))
    return path


def test_pipeline_verbs_end_to_end(tmp_path, cnn, cnn_data, capsys):
    out = tmp_path / "out"
    code, _, err = run(["export", cnn, "-o", out / "f.onnx"], capsys)
    assert code == 0, err
    code, stdout, err = run(
        ["calibrate", out / "f.onnx", "--data", cnn_data, "--method", "percentile", "-o", out / "t.json"],
        capsys,
    )
    assert code == 0, err
    assert "percentile" in stdout
    code, stdout, err = run(
        ["quantize", out / "f.onnx", "--table", out / "t.json", "--target", "cpu-x86", "-o", out / "q.onnx"],
        capsys,
    )
    assert code == 0, err
    assert "int8" in stdout
    code, stdout, err = run(
        [
            "validate", "--float", out / "f.onnx", "--quantized", out / "q.onnx", "--data", cnn_data,
            "--min-sqnr", "15", "-o", out / "report",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["outputs"]
    assert (out / "report" / "report.html").is_file()
    # A threshold that cannot hold fails with exit status 1 and says why.
    code, _, err = run(
        [
            "validate", "--float", out / "f.onnx", "--quantized", out / "q.onnx", "--data", cnn_data,
            "--min-sqnr", "200", "-o", out / "report2",
        ],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert "SQNR" in err
    code, stdout, _ = run(["inspect", out / "q.onnx"], capsys)
    assert code == 0 and "cpu-x86" in stdout


def test_merge_of_shards_equals_the_whole(tmp_path, cnn, cnn_data, capsys):
    x = np.load(cnn_data)
    np.save(tmp_path / "a.npy", x[:10])
    np.save(tmp_path / "b.npy", x[10:])
    for name, data in (("a", "a.npy"), ("b", "b.npy"), ("all", "data.npy")):
        code, _, err = run(
            ["calibrate", cnn, "--data", tmp_path / data, "-o", tmp_path / f"{name}.json"], capsys
        )
        assert code == 0, err
    code, _, err = run(
        ["merge", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "ab.json"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "ab.json").read_bytes() == (tmp_path / "all.json").read_bytes()


def test_targets_and_recipes_list(capsys):
    code, out, _ = run(["targets"], capsys)
    assert code == 0
    for name in ("cpu-x86", "android-arm64", "raspberry-pi-4", "raspberry-pi-5", "cortex-m4"):
        assert name in out
    code, out, _ = run(["recipes"], capsys)
    assert code == 0 and "imagenet-224" in out


def test_truncated_onnx(tmp_path, cnn, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(cnn.read_bytes()[:300])
    code, _, err = run(["export", bad, "-o", tmp_path / "out.onnx"], capsys)
    assert_user_error(code, err, str(bad))
    assert not (tmp_path / "out.onnx").exists()


def test_unsupported_opset(tmp_path, capsys):
    g = GraphBuilder("input", (1, 3, 8, 8), opset=17)
    model = g.build(g.relu(g.input))
    model.opset_import[0].version = 5
    path = tmp_path / "old.onnx"
    path.write_bytes(model.SerializeToString())
    code, _, err = run(["export", path, "-o", tmp_path / "out.onnx"], capsys)
    assert_user_error(code, err, "opset")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize(
    "array, needle",
    [
        (np.zeros((4, 3, 8, 8), np.float32), "shape"),
        (np.zeros((4, 3, 16, 16), np.complex64), "complex64 data given for float32"),
        (np.full((4, 3, 16, 16), np.nan, np.float32), "NaN"),
        (
            np.concatenate([np.zeros((2, 3, 16, 16)), np.full((1, 3, 16, 16), np.inf)]).astype(np.float32),
            "Inf",
        ),
    ],
    ids=["shape", "dtype", "nan", "inf"],
)
def test_bad_calibration_data(tmp_path, cnn, capsys, array, needle):
    data = tmp_path / "bad.npy"
    np.save(data, array)
    code, _, err = run(["calibrate", cnn, "--data", data, "-o", tmp_path / "t.json"], capsys)
    assert_user_error(code, err, str(data))
    assert needle.lower() in err.lower()
    assert not (tmp_path / "t.json").exists()


def test_empty_data_folder(tmp_path, cnn, capsys):
    (tmp_path / "images").mkdir()
    code, _, err = run(["calibrate", cnn, "--data", tmp_path / "images", "-o", tmp_path / "t.json"], capsys)
    assert_user_error(code, err, "images")
    assert not (tmp_path / "t.json").exists()


def test_target_profile_with_unknown_key(tmp_path, cnn, cnn_data, capsys):
    code, _, err = run(["calibrate", cnn, "--data", cnn_data, "-o", tmp_path / "t.json"], capsys)
    assert code == 0, err
    profile = tmp_path / "board.toml"
    profile.write_text(
        'name = "board"\ndescription = "d"\nkind = "sbc"\nruntimes = ["onnxruntime"]\n'
        '[hardware]\ncpu = "a72"\narch = "aarch64"\n[quantization]\nactivation = "int8"\n'
    )
    code, _, err = run(
        ["quantize", cnn, "--table", tmp_path / "t.json", "--target", profile, "-o", tmp_path / "q.onnx"],
        capsys,
    )
    assert_user_error(code, err, str(profile), "quantization.activation", "activations")
    assert not (tmp_path / "q.onnx").exists()


def test_existing_output_needs_force(tmp_path, cnn, cnn_data, capsys):
    out = tmp_path / "t.json"
    out.write_text("precious")
    code, _, err = run(["calibrate", cnn, "--data", cnn_data, "-o", out], capsys)
    assert_user_error(code, err, str(out), "--force")
    assert out.read_text() == "precious"
    code, _, err = run(["calibrate", cnn, "--data", cnn_data, "-o", out, "--force"], capsys)
    assert code == 0, err
    assert out.read_text() != "precious"


def test_table_of_another_model_is_refused(tmp_path, cnn, cnn_data, capsys):
    code, _, err = run(["calibrate", cnn, "--data", cnn_data, "-o", tmp_path / "t.json"], capsys)
    assert code == 0, err
    other = tmp_path / "other.onnx"
    other.write_bytes(small_cnn(seed=1, shape=(1, 3, 16, 16)).SerializeToString())
    code, _, err = run(
        ["quantize", other, "--table", tmp_path / "t.json", "--target", "cpu-x86", "-o", tmp_path / "q.onnx"],
        capsys,
    )
    assert_user_error(code, err)
    assert not (tmp_path / "q.onnx").exists()


def test_quantize_is_byte_identical(tmp_path, cnn, cnn_data, capsys):
    run(["calibrate", cnn, "--data", cnn_data, "-o", tmp_path / "t.json"], capsys)
    for name in ("a", "b"):
        code, _, err = run(
            [
                "quantize",
                cnn,
                "--table",
                tmp_path / "t.json",
                "--target",
                "raspberry-pi-4",
                "-o",
                tmp_path / name,
            ],
            capsys,
        )
        assert code == 0, err
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    onnx.checker.check_model(str(tmp_path / "a"))


def test_demo_via_the_installed_command(tmp_path):
    """The README's first command: `edgeq demo` prints its report and keeps every stage's file."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgeq.cli", "demo", "-o", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "validation PASSED" in proc.stdout
    assert "top-1 accuracy" in proc.stdout
    for name in ("float.onnx", "table.json", "model.int8.onnx", "report/report.json", "report/report.html"):
        assert (tmp_path / "demo" / name).is_file(), name
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert report["outputs"]
    assert EXAMPLE.is_dir()


def test_analyze_and_accuracy_target(tmp_path, cnn, cnn_data, capsys):
    code, _, err = run(["calibrate", cnn, "--data", cnn_data, "-o", tmp_path / "t.json"], capsys)
    assert code == 0, err
    code, out, err = run(
        ["analyze", cnn, "--table", tmp_path / "t.json", "--data", cnn_data, "-o", tmp_path / "a.json"],
        capsys,
    )
    assert code == 0, err
    assert json.loads((tmp_path / "a.json").read_text())
    code, out, err = run(
        [
            "quantize", cnn, "--table", tmp_path / "t.json", "--target", "cpu-x86", "--data", cnn_data,
            "--max-drop", "5", "--algorithms", "none", "-o", tmp_path / "q.onnx",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "accuracy target" in out
    # --max-drop without samples to measure on is a user error, not a traceback.
    code, _, err = run(
        ["quantize", cnn, "--table", tmp_path / "t.json", "--target", "cpu-x86", "--max-drop", "1", "-o",
         tmp_path / "q2.onnx"],
        capsys,
    )  # fmt: skip
    assert_user_error(code, err, "--data")
