"""The Android package: model.tflite (LiteRT), model.ort (ONNX Runtime Mobile), and what an app needs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builder import small_cnn
from test_tflite_util import litert, quantize_qdq

from edgeq.config import Preprocess, load_target
from edgeq.errors import ConfigError, ModelError
from edgeq.lower import lower, run
from edgeq.onnxutil import ort_session, save_model
from edgeq.packaging import package
from edgeq.packaging.android import package_android
from edgeq.packaging.base import Package

LABELS = [f"class_{i}" for i in range(10)]
PRE = Preprocess(resize=(16, 16), scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("android")
    float_path = save_model(small_cnn(0), folder / "float.onnx")
    samples = np.random.default_rng(0).uniform(0, 1, (16, 3, 16, 16)).astype(np.float32)
    return float_path, quantize_qdq(small_cnn(0), samples, folder / "model.qdq.onnx")


@pytest.fixture(scope="module")
def built(models, tmp_path_factory):
    float_path, qdq = models
    out = tmp_path_factory.mktemp("pkg") / "android"
    out.mkdir()
    manifest = package_android(
        qdq, target="android-arm64", output_dir=out, float_model=float_path, labels=LABELS, preprocess=PRE
    )
    return out, manifest


def test_package_files_and_manifest(built):
    out, manifest = built
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "model.tflite",
            "model.ort",
            "required_operators.config",
            "mobile_usability.json",
            "metadata.json",
            "README.md",
            "float.onnx",
            "model.int8.onnx",
        ]
    )
    assert manifest["kind"] == "android"
    assert {r: m["file"] for r, m in manifest["models"].items()} == {
        "tflite": "model.tflite",
        "ort": "model.ort",
        "float": "float.onnx",
        "int8": "model.int8.onnx",
    }
    assert manifest["tflite"]["min_runtime_version"] == "1.14.0"
    assert manifest["mobile_usability"]["NNAPI"]["coverage"] == 1.0


def test_tflite_and_ort_models_run(built, models):
    out, _ = built
    _, qdq = models
    program = lower(qdq)
    x_name, y_name = program.inputs[0], program.outputs[0]
    it = litert((out / "model.tflite").read_bytes())
    ort_model, qdq_model = ort_session(out / "model.ort"), ort_session(qdq)
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)
        q = program.quantize_input(x_name, x)
        it.set_tensor(it.get_input_details()[0]["index"], q)
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int64)
        assert np.abs(got - run(program, {x_name: q})[y_name]).max() <= 1
        step = program.tensors[y_name].qparams.scale[0]
        a, b = ort_model.run(None, {"input": x})[0], qdq_model.run(None, {"input": x})[0]
        assert np.abs(a - b).max() <= 2 * step + 1e-6  # model.ort is optimised for ARM; here it runs on x86


def test_metadata_describes_io_preprocessing_labels(built):
    out, _ = built
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["labels"] == LABELS and meta["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    lite = meta["runtimes"]["litert"]
    (inp,), (outp,) = lite["inputs"], lite["outputs"]
    assert inp["name"] == "input" and inp["shape"] == [1, 16, 16, 3] and inp["layout"] == "NHWC"
    assert inp["onnx_shape"] == [1, 3, 16, 16] and inp["perm_from_onnx"] == [0, 2, 3, 1]
    assert inp["dtype"] == "int8" and set(inp["quantization"]) == {"scale", "zero_point"}
    assert outp["shape"] == [1, 10] and "labels[i]" in outp["meaning"] and "argmax" in outp["meaning"]
    ort = meta["runtimes"]["onnxruntime"]
    assert ort["inputs"] == [{"name": "input", "shape": [1, 3, 16, 16], "dtype": "float32"}]
    assert ort["target_platform"] == "arm" and ort["optimization_style"] == "Fixed"
    usability = json.loads((out / "mobile_usability.json").read_text())
    assert [p["provider"] for p in usability["providers"]] == ["NNAPI", "XNNPACK"]


def test_readme_has_gradle_and_kotlin_for_both_runtimes(built):
    out, _ = built
    text = (out / "README.md").read_text()
    assert 'implementation("com.google.ai.edge.litert:litert:' in text
    assert 'implementation("com.microsoft.onnxruntime:onnxruntime-android:' in text
    assert 'CompiledModel.create(context.assets, "model.tflite"' in text and "writeInt8" in text
    assert "env.createSession(" in text and "addXnnpack" in text and 'mapOf("input" to input)' in text
    assert "class_0, class_1" in text


@pytest.mark.slow
def test_packaging_is_deterministic_except_the_ort_file(built, models, tmp_path):
    out, manifest = built
    float_path, qdq = models
    again = tmp_path / "again"
    again.mkdir()
    manifest2 = package_android(
        qdq, target="android-arm64", output_dir=again, float_model=float_path, labels=LABELS, preprocess=PRE
    )
    for name in sorted(p.name for p in out.iterdir()):
        if (
            name != "model.ort"
        ):  # ONNX Runtime's .ort serializer lays the same content out differently per run
            assert (out / name).read_bytes() == (again / name).read_bytes(), name
    assert manifest2 == manifest


@pytest.mark.slow
def test_through_the_package_dispatcher(models, tmp_path):
    float_path, qdq = models
    pkg = package(qdq, target=load_target("android-arm64"), output=tmp_path / "pkg", float_model=float_path)
    loaded = Package.load(pkg.path)  # checks every file's size and SHA-256
    assert loaded.model("tflite").name == "model.tflite" and loaded.model("ort").name == "model.ort"
    assert "package.json" in loaded.files


def test_user_mistakes(models, tmp_path):
    _, qdq = models
    with pytest.raises(ModelError, match="missing.onnx: int8 model not found"):
        package_android(tmp_path / "missing.onnx", target="android-arm64", output_dir=tmp_path)
    with pytest.raises(ConfigError, match="labels: the label list has duplicates"):
        package_android(qdq, target="android-arm64", output_dir=tmp_path, labels=["a", "a"])
