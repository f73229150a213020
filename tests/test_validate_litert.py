"""validate_tflite / validate_android_package with real LiteRT, onnxruntime and edgeq's reference interpreter.

The digits example goes through the real pipeline (edgeq.calibrate on calibration.npz, edgeq.quantize for
android-arm64, lower, write_tflite) and is validated on the held-out test.npz: the builtin reference kernels
must be bit-exact with edgeq's reference interpreter (≥ 99.9 % of elements, ≤ 1 LSB) and agree with float
on ≥ 99 % of top-1 predictions. Tiny seeded models cover several outputs, NCHW outputs and float32 I/O.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from builder import GraphBuilder, small_cnn
from conftest import EXAMPLE, ROOT

from edgeq.backends.tflite import write_tflite
from edgeq.calibrate import calibrate
from edgeq.errors import ConfigError, DataError, ModelError, UnsupportedError
from edgeq.lower import Program, lower
from edgeq.onnxutil import ort_session
from edgeq.quantize import quantize
from edgeq.validate import Report, compare
from edgeq.validate.litert import Check, Delegate, Exactness, validate_android_package, validate_tflite

TEST = EXAMPLE / "test.npz"


@dataclass(frozen=True)
class Digits:
    float_model: Path
    qdq_model: Path
    program: Program
    tflite: Path


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Digits:
    if not (EXAMPLE / "digits_cnn.onnx").is_file():
        pytest.skip(f"the digits example is not built yet ({EXAMPLE / 'digits_cnn.onnx'} missing)")
    out = tmp_path_factory.mktemp("digits")
    fm = EXAMPLE / "digits_cnn.onnx"
    table = calibrate(fm, EXAMPLE / "calibration.npz")
    qdq = quantize(fm, table, target="android-arm64").save(out / "model.int8.onnx")
    program = lower(qdq)
    tflite = out / "model.tflite"
    tflite.write_bytes(write_tflite(program))
    return Digits(fm, qdq, program, tflite)


def _only(report: Report, check: Check) -> Exactness:
    (e,) = Exactness.from_report(report, check)
    return e


def test_digits_tflite_is_bit_exact_and_agrees_with_float(digits, tmp_path):
    report = validate_tflite(
        digits.tflite,
        float_model=digits.float_model,
        data=TEST,
        labels=TEST,
        qdq_model=digits.qdq_model,
        latency_runs=20,
    )
    (out,) = report.outputs
    exact = _only(report, Check.REFERENCE_INTERPRETER)
    assert (exact.output, exact.delegate, exact.samples, exact.elements) == ("logits", "reference", 360, 3600)
    assert exact.exact_pct >= 99.9 and exact.max_diff_lsb <= 1
    assert out.samples == 360 and out.agreement_pct >= 99.0
    float_acc = json.loads((EXAMPLE / "model.json").read_text(encoding="utf-8"))["float_test_accuracy"]
    assert out.float_correct == round(360 * float_acc)  # onnxruntime here gives the example's own figure
    assert out.quant_accuracy_pct >= out.float_accuracy_pct - 1.0
    assert out.step == digits.program.tensors["logits"].qparams.scale[0]
    assert report.environment.device == "local" and report.environment.runtime.startswith("litert ")
    assert report.quant_model.size_bytes == digits.tflite.stat().st_size
    assert report.float_model.size_bytes == digits.float_model.stat().st_size
    assert report.quant_model.latency.median_ms > 0 and report.float_model.latency.runs == 20
    assert report.passed

    folder = report.write(tmp_path / "report")
    assert (folder / "report.html").is_file()
    back = Report.load(folder)
    assert Exactness.from_report(back) == (exact,)
    assert back.to_json() == report.to_json()
    print(
        f"\ndigits .tflite: {exact.exact_pct:.2f} % bit-exact, max {exact.max_diff_lsb} LSB; agreement "
        f"{out.agreement_pct:.2f} %, accuracy float {out.float_accuracy_pct:.2f} % int8 "
        f"{out.quant_accuracy_pct:.2f} %, SQNR {out.sqnr_db:.2f} dB; latency float "
        f"{report.float_model.latency.median_ms:.3f} ms, LiteRT reference kernels "
        f"{report.quant_model.latency.median_ms:.3f} ms; size {report.float_model.size_bytes} B → "
        f"{report.quant_model.size_bytes} B",
        file=sys.stderr,
    )


def test_metrics_equal_compare_on_independently_computed_outputs(digits):
    """The report's metrics are compare()'s on outputs computed here with the program's own I/O helpers."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    n = 60
    report = validate_tflite(
        digits.tflite, float_model=digits.float_model, data=TEST, labels=TEST, num_samples=n, latency_runs=0
    )
    z = np.load(TEST, allow_pickle=False)
    x, labels = z["input"][:n], z["labels"][:n]
    sess = ort_session(digits.float_model)
    it = Interpreter(model_path=str(digits.tflite), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    p = digits.program
    floats, quants = [], []
    for sample in x:
        floats.append(sess.run(None, {"input": sample[None]})[0])
        it.set_tensor(it.get_input_details()[0]["index"], p.quantize_input("input", sample[None]))
        it.invoke()
        quants.append(p.dequantize_output("logits", it.get_tensor(it.get_output_details()[0]["index"])))
    want = compare(
        {"logits": np.concatenate(floats)},
        {"logits": np.concatenate(quants)},
        labels=labels,
        steps={"logits": p.tensors["logits"].qparams.scale[0]},
    )
    assert report.outputs == want
    assert report.float_model.latency is None and report.quant_model.latency is None


def test_reruns_give_identical_json(digits):
    def run() -> str:
        return validate_tflite(
            digits.tflite.read_bytes(),
            float_model=digits.float_model,
            data=TEST,
            labels=TEST,
            qdq_model=digits.program,
            num_samples=30,
            latency_runs=0,
        ).to_json()

    first = run()
    assert run() == first
    assert '"path": null' in first  # the .tflite was given as bytes


def test_xnnpack_delegate_drifts_by_few_lsb(digits):
    report = validate_tflite(
        digits.tflite,
        float_model=digits.float_model,
        data=TEST,
        labels=TEST,
        qdq_model=digits.qdq_model,
        delegate="xnnpack",
        latency_runs=5,
    )
    e = _only(report, Check.REFERENCE_INTERPRETER)
    assert e.delegate is Delegate.XNNPACK and e.elements == 3600
    assert e.max_diff_lsb <= 4  # XNNPACK's int8 arithmetic is not TFLite's reference arithmetic
    assert report.outputs[0].agreement_pct >= 99.0
    assert "XNNPACK" in report.environment.runtime
    print(
        f"\ndigits, XNNPACK vs edgeq reference: {100 - e.exact_pct:.1f} % of elements differ, max "
        f"{e.max_diff_lsb} LSB",
        file=sys.stderr,
    )


def test_reference_samples_limits_the_reference_run(digits):
    report = validate_tflite(
        digits.tflite,
        float_model=digits.float_model,
        data=TEST,
        qdq_model=digits.program,
        num_samples=40,
        reference_samples=7,
        latency_runs=0,
    )
    assert report.samples == 40
    assert _only(report, Check.REFERENCE_INTERPRETER).samples == 7


def test_without_edgeq_metadata_the_layout_is_inferred(digits):
    """A .tflite edgeq did not write (no metadata): inputs paired by name and the NHWC transpose inferred."""
    from ai_edge_litert import schema_py_generated as fb

    m = fb.ModelT.InitFromPackedBuf(bytearray(digits.tflite.read_bytes()), 0)
    m.metadata = [e for e in m.metadata if e.name not in (b"edgeq", "edgeq")]
    import flatbuffers

    b = flatbuffers.Builder(1 << 16)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    foreign = bytes(b.Output())
    kwargs = dict(float_model=digits.float_model, data=TEST, labels=TEST, num_samples=50, latency_runs=0)
    plain = validate_tflite(foreign, qdq_model=digits.program, **kwargs)
    assert plain.outputs == validate_tflite(digits.tflite, **kwargs).outputs
    assert any("inferred from shapes" in n for n in plain.notes)
    assert _only(plain, Check.REFERENCE_INTERPRETER).exact_pct == 100.0


# ---- tiny models: several outputs, NCHW outputs, float32 I/O ----------------------------------------------


def _two_output_model() -> onnx.ModelProto:
    g = GraphBuilder("image", (1, 3, 6, 6), seed=1)
    feat = g.relu(g.conv(g.input, 3, 4, 3))
    logits = g.gemm(g.flatten(g.gap(feat)), 4, 5)
    return g.build(logits, feat)


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    fm = _two_output_model()
    calib = rng.uniform(-1, 1, (64, 1, 3, 6, 6)).astype(np.float32)
    test = rng.uniform(-1, 1, (30, 1, 3, 6, 6)).astype(np.float32)
    table = calibrate(fm, calib)
    return fm, table, test


@pytest.mark.parametrize("io_type", ["int8", "float32"])
def test_tiny_model_with_two_outputs(tiny, io_type):
    fm, table, test = tiny
    program = lower(quantize(fm, table, target="android-arm64").model)
    data = write_tflite(program, io_type=io_type)
    report = validate_tflite(data, float_model=fm, data=test, qdq_model=program, latency_runs=3)
    names = [o.name for o in report.outputs]
    assert names == [o.name for o in fm.graph.output]  # the float model's order
    feat = report.outputs[1]
    assert feat.shape == (1, 4, 6, 6)  # compared in the ONNX layout (NCHW), not the .tflite's NHWC
    for o in report.outputs:
        assert o.sqnr_db > 25, o.name
    exact = Exactness.from_report(report, Check.REFERENCE_INTERPRETER)
    assert [e.output for e in exact] == names
    assert all(e.exact_pct == 100.0 and e.samples == 30 for e in exact)
    assert sum(e.elements for e in exact) == 30 * (5 + 4 * 6 * 6)


def test_float_io_quantizes_ties_as_tflite_does(tiny):
    """A float32-I/O .tflite quantizes inside with TFLite's QUANTIZE, which rounds half away from zero
    (ONNX QuantizeLinear rounds half to even): inputs exactly between two steps must still be bit-exact."""
    fm, table, _ = tiny
    ranges = dict(table.ranges())
    ranges["image"] = (-2.0, 127 / 64)  # scale 1/64, zero point 0: (k + 0.5)/64 is an exact tie
    program = lower(quantize(fm, ranges, target="android-arm64").model)
    assert program.tensors["image"].qparams.scale == (1 / 64,)
    k = np.random.default_rng(1).integers(-128, 127, (20, 1, 3, 6, 6))
    ties = ((k + 0.5) / 64).astype(np.float32)
    for io_type in ("float32", "int8"):
        report = validate_tflite(
            write_tflite(program, io_type=io_type),
            float_model=fm,
            data=ties,
            qdq_model=program,
            latency_runs=0,
        )
        for e in Exactness.from_report(report):
            assert e.exact_pct == 100.0, (io_type, e.note())


# ---- Android packages -------------------------------------------------------------------------------------


def _litert_only_target(tmp_path: Path) -> Path:
    """android-arm64 with LiteRT only: the same package minus the .ort (whose conversion takes ~10 s)."""
    text = (ROOT / "targets" / "android-arm64.toml").read_text(encoding="utf-8")
    text = text.replace('name = "android-arm64"', 'name = "android-litert"')
    text = text.replace('runtimes = ["litert", "onnxruntime"]', 'runtimes = ["litert"]')
    assert 'runtimes = ["litert"]' in text
    path = tmp_path / "android-litert.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_android_package_reports_drift_and_bit_exactness(digits, tmp_path):
    from edgeq.packaging import package

    pkg = package(
        digits.qdq_model,
        target=_litert_only_target(tmp_path),
        output=tmp_path / "pkg",
        float_model=digits.float_model,
    ).path
    # The package holds the QDQ model (with a float model it is packaged for validation): the .tflite is
    # checked bit for bit against edgeq's reference interpreter.
    report = validate_android_package(pkg, data=TEST, labels=TEST, latency_runs=10)
    exact = _only(report, Check.REFERENCE_INTERPRETER)
    assert exact.delegate is Delegate.REFERENCE and exact.exact_pct >= 99.9 and exact.max_diff_lsb <= 1
    drift = _only(report, Check.XNNPACK_DRIFT)
    assert drift.delegate is Delegate.XNNPACK and drift.elements == 3600 and drift.max_diff_lsb <= 4
    assert report.outputs[0].agreement_pct >= 99.0
    assert any(n.startswith("XNNPACK, output 'logits': top-1 agreement") for n in report.notes)
    assert "latency with the XNNPACK delegate" in report.environment.runtime

    with_ref = report
    with_ref.write(tmp_path / "report")
    print(
        f"\nAndroid package: reference kernels {exact.exact_pct:.2f} % bit-exact (max {exact.max_diff_lsb} "
        f"LSB); XNNPACK vs reference kernels {100 - drift.exact_pct:.1f} % differ, max {drift.max_diff_lsb} "
        f"LSB ({' '.join(f'{d}:{c}' for d, c in drift.diff_counts)}); latency XNNPACK "
        f"{report.quant_model.latency.median_ms:.3f} ms, float {report.float_model.latency.median_ms:.3f} ms",
        file=sys.stderr,
    )


@pytest.mark.slow
def test_full_android_arm64_package(digits, tmp_path):
    """The shipped android-arm64 target: .tflite and .ort side by side; validation uses the .tflite."""
    from edgeq.packaging import package

    pkg = package(
        digits.qdq_model, target="android-arm64", output=tmp_path / "pkg", float_model=digits.float_model
    )
    assert (pkg.path / "model.ort").is_file()
    report = validate_android_package(pkg.path, data=TEST, labels=TEST, num_samples=100, latency_runs=0)
    assert report.samples == 100 and report.outputs[0].agreement_pct >= 99.0
    assert _only(report, Check.XNNPACK_DRIFT).samples == 100


def test_android_package_errors(digits, tmp_path):
    from edgeq.packaging import package

    pkg = package(
        digits.qdq_model,
        target=_litert_only_target(tmp_path),
        output=tmp_path / "pkg",
        float_model=digits.float_model,
    ).path
    damaged = tmp_path / "damaged"
    shutil.copytree(pkg, damaged)
    data = bytearray((damaged / "model.tflite").read_bytes())
    data[-1] ^= 1
    (damaged / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="model.tflite differs from what package.json lists"):
        validate_android_package(damaged, data=TEST)

    bare = tmp_path / "bare"  # no package.json: the files alone
    bare.mkdir()
    shutil.copy(pkg / "model.tflite", bare / "model.tflite")
    with pytest.raises(ModelError, match=r"no float\.onnx.*--float"):
        validate_android_package(bare, data=TEST)
    shutil.copy(pkg / "float.onnx", bare / "float.onnx")
    (bare / "metadata.json").write_text(json.dumps({"source_model": "../model.int8.onnx"}))
    report = validate_android_package(bare, data=TEST, num_samples=5, latency_runs=0)
    assert Exactness.from_report(report, Check.REFERENCE_INTERPRETER) == ()  # a path outside is never read
    (bare / "model.tflite").unlink()
    with pytest.raises(ModelError, match="no model.tflite"):
        validate_android_package(bare, data=TEST)
    with pytest.raises(ModelError, match="package folder not found"):
        validate_android_package(tmp_path / "nowhere", data=TEST)


# ---- errors ------------------------------------------------------------------------------------------------


def test_tflite_runtime_interpreter(digits):
    try:
        from tflite_runtime import interpreter  # noqa: F401

        installed = True
    except Exception:
        installed = False
    kwargs = dict(float_model=digits.float_model, data=TEST, num_samples=10, latency_runs=0)
    if not installed:
        print("\ntflite_runtime is not installed (it needs numpy<2): checking the error", file=sys.stderr)
        with pytest.raises(UnsupportedError, match=r"tflite-runtime.*numpy<2.*interpreter='litert'"):
            validate_tflite(digits.tflite, interpreter="tflite-runtime", **kwargs)
        return
    report = validate_tflite(digits.tflite, interpreter="tflite-runtime", qdq_model=digits.program, **kwargs)
    assert report.environment.runtime.startswith("tflite-runtime ")
    assert _only(report, Check.REFERENCE_INTERPRETER).max_diff_lsb <= 1


def test_user_mistakes_raise_clear_errors(digits, tmp_path):
    kwargs = dict(float_model=digits.float_model, data=TEST, latency_runs=0)
    with pytest.raises(ConfigError, match=r"delegate='gpu'.*'reference', 'xnnpack'"):
        validate_tflite(digits.tflite, delegate="gpu", **kwargs)
    with pytest.raises(ConfigError, match=r"interpreter='tflite'.*'litert', 'tflite-runtime'"):
        validate_tflite(digits.tflite, interpreter="tflite", **kwargs)
    with pytest.raises(ConfigError, match="num_samples=0"):
        validate_tflite(digits.tflite, num_samples=0, **kwargs)
    with pytest.raises(ModelError, match="not found"):
        validate_tflite(tmp_path / "missing.tflite", **kwargs)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ModelError, match=r"junk\.tflite.*not a TFLite flatbuffer"):
        validate_tflite(junk, **kwargs)
    with pytest.raises(
        ModelError, match=r"input 'input' is \[1, 3, 16, 16\] in the float model but \[1, 8, 8, 1\]"
    ):
        validate_tflite(digits.tflite, float_model=small_cnn(), data=TEST)
    renamed = GraphBuilder("pixels", (1, 1, 8, 8))
    renamed = renamed.build(renamed.gemm(renamed.flatten(renamed.input), 64, 10))
    with pytest.raises(
        ModelError, match=r"input 'input' of the \.tflite is not an input of the float model \(pixels\)"
    ):
        validate_tflite(digits.tflite, float_model=renamed, data=TEST)
    with pytest.raises(DataError, match="labels"):
        validate_tflite(digits.tflite, labels=np.zeros(5, np.int64), **kwargs)

    # A QDQ model from another calibration: its output scale is not the .tflite's.
    other = quantize(
        digits.float_model, calibrate(digits.float_model, TEST, num_samples=8), target="android-arm64"
    ).model
    with pytest.raises(ModelError, match=r"output 'logits' is .* in the QDQ model but .* in the \.tflite"):
        validate_tflite(digits.tflite, qdq_model=other, **kwargs)


def test_exactness_note_round_trip():
    e = Exactness(
        check=Check.XNNPACK_DRIFT,
        output="head's 'out'",
        delegate=Delegate.XNNPACK,
        samples=3,
        elements=30,
        equal=21,
        max_diff_lsb=7,
        diff_counts=((0, 21), (1, 8), (7, 1)),
    )
    assert Exactness.parse(e.note()) == e
    empty = dataclasses.replace(e, elements=0, equal=0, max_diff_lsb=0, diff_counts=(), samples=0)
    assert Exactness.parse(empty.note()) == empty and empty.exact_pct == 100.0
    assert Exactness.parse("latency: batch 1") is None
    assert Exactness.parse("[other-check] output 'x' (reference kernels): 1 of 1 int8 elements") is None
