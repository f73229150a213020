"""The ``edgeq`` command: a verb per pipeline stage, plus ``demo``, ``targets``, ``recipes``, ``inspect``.

Every verb reads the previous stage's file and writes its own, so any stage can be re-run alone. A user's
mistake prints one line (``edgeq: error: …``) and exits with status 2; a validation that misses its
thresholds exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeq.errors import ConfigError, EdgeqError

EPILOG = """\
pipeline:
  edgeq export model.onnx -o float.onnx --input-shape input=1,3,224,224
  edgeq calibrate float.onnx --data images/ --recipe imagenet-224 -o table.json
  edgeq quantize float.onnx --table table.json --target cpu-x86 -o model.int8.onnx
  edgeq validate --float float.onnx --quantized model.int8.onnx --data test.npz -o report/
  edgeq package model.int8.onnx --float float.onnx --target raspberry-pi-4 -o build/rpi4

`edgeq demo` runs all of it on the bundled digits model. `edgeq VERB --help` explains each verb.
"""


def _shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        shape = tuple(int(d) for d in dims.split(","))
        if any(d <= 0 for d in shape):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not NAME=D1,D2,... with positive dims (e.g. input=1,3,224,224)"
        ) from None
    return name, shape


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="replace the output if it exists")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeq",
        description="Take a float model to a phone, a Raspberry Pi or a microcontroller as int8, and prove "
        "it still works.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from edgeq import __version__

    parser.add_argument("--version", action="version", version=f"edgeq {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")

    p = sub.add_parser(
        "export",
        help="check and simplify an ONNX model (opset, static shapes, BN folding)",
        description="Check an ONNX model and prepare it for quantization: onnx.checker, shape "
        "inference, dynamic dimensions fixed, opset upgraded to >= 13, BatchNorm folded into "
        "Conv, constants folded. (PyTorch modules are exported with the Python API: "
        "edgeq.export(module, example_inputs=...).)",
    )
    p.add_argument("model", type=Path, help="input .onnx file")
    p.add_argument("-o", "--output", type=Path, required=True, help="output float .onnx")
    p.add_argument(
        "--input-shape",
        type=_shape_arg,
        action="append",
        default=[],
        metavar="NAME=D1,D2,...",
        help="fix a dynamic input shape (repeatable)",
    )
    p.add_argument("--opset", type=int, default=17, help="opset to upgrade old models to (default 17)")
    _add_force(p)

    p = sub.add_parser(
        "calibrate",
        help="stream samples through the model and record activation ranges",
        description="Run calibration samples through the float model in onnxruntime, batch by "
        "batch, keeping bounded statistics per tensor (min/max and a mergeable histogram), "
        "and write a calibration table.",
    )
    p.add_argument("model", type=Path, help="float .onnx (from edgeq export)")
    p.add_argument("--data", required=True, help="folder of images, .npy or .npz file")
    p.add_argument("--recipe", help="calibration recipe name (`edgeq recipes`) or .toml file")
    p.add_argument(
        "--method",
        choices=["minmax", "percentile", "entropy", "mse"],
        help="range selection method (default: the recipe's, else minmax)",
    )
    p.add_argument("--percentile", type=float, help="percentile for --method percentile (default 99.999)")
    p.add_argument("--num-samples", type=int, help="use at most this many samples (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="samples per onnxruntime run (default: the recipe's)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output table .json")
    _add_force(p)

    p = sub.add_parser(
        "merge",
        help="merge calibration tables computed on disjoint shards of the data",
        description="Merge calibration tables of the same model and method: the result equals "
        "the table of the union of the shards.",
    )
    p.add_argument("tables", type=Path, nargs="+", help="table .json files")
    p.add_argument("-o", "--output", type=Path, required=True, help="merged table .json")
    _add_force(p)

    p = sub.add_parser(
        "quantize",
        help="static int8 quantization (QDQ) for a target",
        description="Write a static int8 QDQ model: int8 symmetric per-channel weights, int32 "
        "bias, activations in the target's scheme (uint8 on x86, int8 on ARM).",
    )
    p.add_argument("model", type=Path, help="float .onnx (the one the table was calibrated on)")
    p.add_argument("--table", type=Path, required=True, help="calibration table .json")
    p.add_argument("--target", required=True, help="target name (`edgeq targets`) or profile .toml")
    p.add_argument("--exclude", action="append", default=[], metavar="NODE", help="keep this node in float")
    p.add_argument("--data", help="calibration samples, for --max-drop and --algorithms")
    p.add_argument(
        "--max-drop",
        type=float,
        metavar="PTS",
        help="keep the fewest, most sensitive layers float until --metric drops by at most PTS",
    )
    p.add_argument(
        "--metric",
        choices=["agreement", "sqnr", "accuracy"],
        default="agreement",
        help="what --max-drop measures (accuracy needs --labels; default agreement)",
    )
    p.add_argument("--labels", type=Path, help="labels of the --data samples, for --metric accuracy")
    p.add_argument(
        "--algorithms",
        metavar="LIST",
        help="accuracy algorithms, comma-separated: equalization, bias_correction, float_outputs, "
        "weight_clipping (mse); 'default' = the first three; 'none'. Default: the recipe's with --recipe, "
        "else 'default' when --data is given",
    )
    p.add_argument("--recipe", help="calibration recipe (its [algorithms] table), name or .toml")
    p.add_argument("-o", "--output", type=Path, required=True, help="output int8 .onnx")
    _add_force(p)

    p = sub.add_parser(
        "analyze",
        help="per-layer sensitivity: the error each layer adds when quantized alone",
        description="Quantize one layer at a time (and, with --kept-float, all but one) and rank layers by "
        "the loss they cause; writes a table and a plot (.html, .json, .png or .txt by suffix).",
    )
    p.add_argument("model", type=Path, help="float .onnx")
    p.add_argument("--table", type=Path, required=True, help="calibration table .json")
    p.add_argument("--data", required=True, help="samples to measure on (held-out ones are best)")
    p.add_argument("--target", default="cpu-x86", help="target profile (default cpu-x86)")
    p.add_argument("--metric", choices=["agreement", "sqnr", "accuracy"], default="agreement")
    p.add_argument("--labels", type=Path, help="labels, for --metric accuracy")
    p.add_argument("--num-samples", type=int, default=200, help="samples used (default 200)")
    p.add_argument("--kept-float", action="store_true", help="also score 'all int8 but this layer'")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .html, .json, .png or .txt")
    _add_force(p)

    p = sub.add_parser(
        "validate",
        help="float vs int8 on the same held-out inputs: accuracy, SQNR, latency",
        description="Run the float and the int8 model on the same held-out inputs and report "
        "agreement, accuracy (with --labels), SQNR per output and per layer, latency and size. "
        "Exit status 1 when a threshold fails. With --device, PACKAGE (from edgeq package) is "
        "validated on that device.",
    )
    p.add_argument("package", type=Path, nargs="?", help="package folder, for --device validation")
    p.add_argument("--float", dest="float_model", type=Path, help="float .onnx")
    p.add_argument("--quantized", type=Path, help="int8 .onnx")
    p.add_argument("--data", required=True, help="held-out inputs: .npy, .npz or folder of images")
    p.add_argument("--labels", type=Path, help="labels: .npy, .npz (key 'labels') or text, one per line")
    p.add_argument("--recipe", help="preprocessing for image folders: recipe name or .toml")
    p.add_argument("--num-samples", type=int, help="use at most this many samples")
    p.add_argument("--max-top1-drop", type=float, metavar="PTS", help="fail if top-1 drops by more points")
    p.add_argument("--min-agreement", type=float, metavar="PCT", help="fail if top-1 agreement is lower (%%)")
    p.add_argument("--min-sqnr", type=float, metavar="DB", help="fail if output SQNR is lower (dB)")
    p.add_argument(
        "--device",
        help="local (default), ssh://user@host[:port], qemu-aarch64[:cpu], qemu:MACHINE (microcontroller)",
    )
    p.add_argument("--target", help="target profile of the package (for --device)")
    p.add_argument(
        "--runtime",
        choices=["onnxruntime", "litert", "tflite-runtime"],
        default="onnxruntime",
        help="runtime on the device (--device): litert/tflite-runtime run the package's .tflite",
    )
    p.add_argument(
        "--trust-new-host", action="store_true", help="ssh: accept and remember an unknown host key"
    )
    p.add_argument("--identity", type=Path, help="ssh: private key file (default: ~/.ssh keys and the agent)")
    p.add_argument("--known-hosts", type=Path, help="ssh: known_hosts file (default ~/.ssh/known_hosts)")
    p.add_argument("--remote-python", help="ssh: the device's Python command (default python3)")
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="report folder (report.json, report.html)"
    )
    _add_force(p)

    p = sub.add_parser(
        "package",
        help="write the files a device needs (per target profile)",
        description="Package an int8 model for a target: .tflite/.ort for Android, runner and "
        "models for a Raspberry Pi, C sources and a memory report for a microcontroller.",
    )
    p.add_argument("model", type=Path, help="int8 .onnx (from edgeq quantize)")
    p.add_argument("--target", required=True, help="target name (`edgeq targets`) or profile .toml")
    p.add_argument(
        "--float", dest="float_model", type=Path, help="float .onnx, packaged for on-device validation"
    )
    p.add_argument("--labels", type=Path, help="class names, one per line, for the package's metadata")
    p.add_argument("--recipe", help="preprocessing recorded in the metadata: recipe name or .toml")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _add_force(p)

    p = sub.add_parser("targets", help="list the target profiles")
    p.add_argument("--verbose", "-v", action="store_true", help="show each profile's file and scheme")
    sub.add_parser("recipes", help="list the calibration recipes")

    p = sub.add_parser("inspect", help="describe a model, calibration table or report")
    p.add_argument("file", type=Path)

    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the bundled digits model",
        description="Export, calibrate, quantize (cpu-x86) and validate the bundled digits CNN, "
        "writing every stage's file into a folder, and print the report.",
    )
    p.add_argument(
        "-o", "--output", type=Path, default=Path("edgeq-demo"), help="folder (default edgeq-demo)"
    )
    p.add_argument("--target", default="cpu-x86", help="target profile (default cpu-x86)")
    _add_force(p)
    return parser


def _cmd_export(a: argparse.Namespace) -> int:
    from edgeq.export import export
    from edgeq.fileio import check_output

    check_output(a.output, force=a.force)
    export(a.model, input_shapes=dict(a.input_shape) or None, opset=a.opset, output=a.output, force=a.force)
    print(f"wrote {a.output}")
    return 0


def _method(a: argparse.Namespace):
    from edgeq.config import CalibrationMethod, MethodConfig, load_recipe

    recipe = load_recipe(a.recipe)
    if a.method is None and a.percentile is None:
        return recipe, None
    base = recipe.method
    name = CalibrationMethod(a.method) if a.method else base.name
    if a.percentile is not None and name is not CalibrationMethod.PERCENTILE:
        raise ConfigError("--percentile applies only to --method percentile")
    try:
        return recipe, MethodConfig(name=name, percentile=a.percentile or base.percentile, bins=base.bins)
    except ValueError as e:
        raise ConfigError(f"--percentile: {e}") from None


def _cmd_calibrate(a: argparse.Namespace) -> int:
    from edgeq.calibrate import calibrate
    from edgeq.fileio import check_output

    check_output(a.output, force=a.force)
    recipe, method = _method(a)
    table = calibrate(
        a.model, a.data, recipe=recipe, method=method, num_samples=a.num_samples, batch_size=a.batch_size
    )
    table.save(a.output, force=a.force)
    print(
        f"wrote {a.output}: {len(table.ranges())} tensors, {table.num_samples} samples, {table.method.name}"
    )
    return 0


def _cmd_merge(a: argparse.Namespace) -> int:
    from edgeq.calibrate import CalibrationTable
    from edgeq.fileio import check_output

    check_output(a.output, force=a.force)
    tables = [CalibrationTable.load(p) for p in a.tables]
    merged = tables[0]
    for t in tables[1:]:
        merged = merged.merge(t)
    merged.save(a.output, force=a.force)
    print(f"wrote {a.output}: {merged.num_samples} samples from {len(tables)} tables")
    return 0


def _algorithms(a: argparse.Namespace):
    from edgeq.config import Algorithms, WeightClipping, load_recipe

    if a.algorithms is None:
        if a.recipe is not None:
            return load_recipe(a.recipe).algorithms
        # Given samples, edgeq uses them: the guarded algorithms are the default whenever --data is.
        if a.data is not None:
            from edgeq.accuracy import DEFAULT_ALGORITHMS

            return DEFAULT_ALGORITHMS
        return Algorithms()
    names = {n.strip().replace("-", "_") for n in a.algorithms.split(",") if n.strip()}
    if names == {"none"}:
        return Algorithms()
    if names == {"default"}:
        names = {"equalization", "bias_correction", "float_outputs"}
    known = {"equalization", "bias_correction", "float_outputs", "weight_clipping"}
    if names - known:
        raise ConfigError(
            f"--algorithms: unknown {', '.join(sorted(names - known))}; known: {', '.join(sorted(known))}, "
            "default, none"
        )
    return Algorithms(
        equalization="equalization" in names,
        bias_correction="bias_correction" in names,
        float_outputs="float_outputs" in names,
        weight_clipping=WeightClipping.MSE if "weight_clipping" in names else WeightClipping.NONE,
    )


def _cmd_quantize(a: argparse.Namespace) -> int:
    from edgeq.calibrate import CalibrationTable
    from edgeq.config import load_target
    from edgeq.fileio import check_output
    from edgeq.onnxutil import load_model, save_model
    from edgeq.quantize import quantize

    check_output(a.output, force=a.force)
    target = load_target(a.target)
    table = CalibrationTable.load(a.table)
    algorithms = _algorithms(a)
    labels = None
    if a.labels:
        from edgeq.data import load_labels

        labels = load_labels(a.labels)
    if (algorithms.any or a.max_drop is not None) and a.data is None:
        raise ConfigError("--max-drop and accuracy algorithms need calibration samples: add --data PATH")
    model = load_model(a.model)
    extra = ""
    if algorithms.any:
        from edgeq.accuracy import quantize_accurately

        # The algorithms change weights, so the model is re-calibrated with the table's method and size.
        accurate = quantize_accurately(
            model,
            a.data,
            target=target,
            algorithms=algorithms,
            method=table.method,
            num_samples=table.num_samples,
            max_drop=a.max_drop,
            metric=a.metric,
            labels=labels,
        )
        result, extra = accurate.result, accurate.text()
    elif a.max_drop is not None:
        from edgeq.accuracy import quantize_to_target

        found = quantize_to_target(
            model,
            table,
            a.data,
            target=target,
            max_drop=a.max_drop,
            metric=a.metric,
            labels=labels,
            exclude=a.exclude,
        )
        result, extra = found.result, found.text()
    else:
        result = quantize(model, table, target=target, exclude=a.exclude)
    save_model(result.model, a.output, force=a.force)
    print(result.summary.text())
    if extra:
        print(extra)
    print(f"wrote {a.output}")
    return 0


def _cmd_analyze(a: argparse.Namespace) -> int:
    from edgeq.accuracy import analyze
    from edgeq.calibrate import CalibrationTable
    from edgeq.fileio import check_output

    check_output(a.output, force=a.force)
    if a.output.suffix not in (".html", ".json", ".png", ".txt"):
        raise ConfigError(f"{a.output}: give an output ending in .html, .json, .png or .txt")
    labels = None
    if a.labels:
        from edgeq.data import load_labels

        labels = load_labels(a.labels)
    report = analyze(
        a.model,
        CalibrationTable.load(a.table),
        a.data,
        target=a.target,
        metric=a.metric,
        labels=labels,
        num_samples=a.num_samples,
        kept_float=a.kept_float,
    )
    report.save(a.output, force=a.force)
    print(report.text())
    print(f"wrote {a.output}")
    return 0


def _thresholds(a: argparse.Namespace):
    from edgeq.validate import Thresholds

    return Thresholds(max_top1_drop=a.max_top1_drop, min_agreement=a.min_agreement, min_sqnr_db=a.min_sqnr)


def _cmd_validate(a: argparse.Namespace) -> int:
    from edgeq.config import load_recipe
    from edgeq.data import load_labels
    from edgeq.fileio import check_output

    check_output(a.output, force=a.force)
    labels = load_labels(a.labels) if a.labels else None
    preprocess = load_recipe(a.recipe).preprocess if a.recipe else None
    if a.device and a.device != "local":
        if a.package is None:
            raise ConfigError("--device needs the package folder from `edgeq package` as argument")
        report = _validate_on_device(a, labels, preprocess)
    elif a.package is not None:
        report = _validate_package_here(a, labels, preprocess)
    else:
        if a.float_model is None or a.quantized is None:
            raise ConfigError("validate needs --float and --quantized, or a package folder (with --device)")
        from edgeq.validate import validate

        report = validate(
            a.float_model,
            a.quantized,
            a.data,
            labels=labels,
            thresholds=_thresholds(a),
            num_samples=a.num_samples,
            preprocess=preprocess,
        )
    report.write(a.output, force=a.force)
    print(report.text())
    print(f"wrote {a.output}/report.json and report.html")
    if not report.passed:
        for failure in report.failures:
            print(f"edgeq: validation failed: {failure}", file=sys.stderr)
        return 1
    return 0


def _validate_package_here(a: argparse.Namespace, labels, preprocess):
    """A package validated on this machine: an Android package in LiteRT (reference kernels and XNNPACK),
    any other package through the local device, exactly as it would run on the device."""
    from edgeq.packaging.base import Package

    kind = Package.load(a.package).manifest.get("kind")
    if kind == "android":
        from edgeq.validate.litert import validate_android_package

        if preprocess is not None:
            raise ConfigError(
                "--recipe is not supported for Android packages; give preprocessed .npy/.npz data"
            )
        return validate_android_package(
            a.package, data=a.data, labels=labels, thresholds=_thresholds(a), num_samples=a.num_samples
        )
    if kind == "mcu":
        raise ConfigError(
            "a microcontroller package is validated on an emulated core: add --device qemu:MACHINE "
            "(e.g. qemu:mps2-an386 for a Cortex-M4)"
        )
    a.device = "local"
    return _validate_on_device(a, labels, preprocess)


def _validate_on_device(a: argparse.Namespace, labels, preprocess):
    from edgeq.config import load_target

    target = load_target(a.target) if a.target else None
    if a.device.startswith("qemu:"):
        from edgeq.devices.qemu_mcu import validate_on_mcu

        return validate_on_mcu(
            a.package,
            machine=a.device.split(":", 1)[1],
            data=a.data,
            labels=labels,
            thresholds=_thresholds(a),
            num_samples=a.num_samples,
            target=target,
        )
    from edgeq.devices import open_device
    from edgeq.devices.remote_validation import validate_on_device

    options = {}
    if a.device.startswith("ssh://"):
        options = {
            "trust_new_host": a.trust_new_host,
            "key_filename": a.identity,
            "known_hosts": a.known_hosts,
        }
        if a.remote_python:
            options["python"] = a.remote_python
    elif a.trust_new_host or a.identity or a.known_hosts or a.remote_python:
        raise ConfigError(
            "--trust-new-host, --identity, --known-hosts and --remote-python apply to ssh:// only"
        )
    device = open_device(a.device, **options)
    with device:
        return validate_on_device(
            a.package,
            device=device,
            data=a.data,
            labels=labels,
            preprocess=preprocess,
            thresholds=_thresholds(a),
            num_samples=a.num_samples,
            target=target,
            runtime=a.runtime,
        )


def _cmd_package(a: argparse.Namespace) -> int:
    from edgeq.config import load_recipe, load_target
    from edgeq.packaging import package

    target = load_target(a.target)
    labels = None
    if a.labels:
        try:
            labels = [ln.strip() for ln in a.labels.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"{a.labels}: cannot read class names ({e}); give a text file, one per line"
            ) from None
    preprocess = load_recipe(a.recipe).preprocess if a.recipe else None
    pkg = package(
        a.model,
        target=target,
        output=a.output,
        float_model=a.float_model,
        labels=labels,
        preprocess=preprocess,
        force=a.force,
    )
    print(f"wrote {pkg.path} for {target.name}: {', '.join(pkg.files)}")
    return 0


def _cmd_targets(a: argparse.Namespace) -> int:
    from edgeq.config import list_targets

    targets = list_targets()
    width = max(len(t.name) for t in targets)
    for t in targets:
        print(f"{t.name:<{width}}  {t.description}")
        if a.verbose:
            q = t.quantization
            print(
                f"{'':<{width}}  runtimes: {', '.join(map(str, t.runtimes))}; activations {q.activations}, "
                f"{'per-channel' if q.per_channel else 'per-tensor'} weights"
                f"{', TFLite constraints' if q.tflite_constraints else ''}; {t.source}"
            )
    return 0


def _cmd_recipes(a: argparse.Namespace) -> int:
    from edgeq.config import list_recipes

    recipes = list_recipes()
    width = max(len(r.name) for r in recipes)
    for r in recipes:
        print(f"{r.name:<{width}}  {r.description}")
    return 0


def _cmd_inspect(a: argparse.Namespace) -> int:
    from edgeq.inspect import describe

    print(describe(a.file))
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from edgeq.demo import run_demo

    report = run_demo(a.output, target=a.target, force=a.force)
    return 0 if report.passed else 1


COMMANDS = {
    "export": _cmd_export,
    "calibrate": _cmd_calibrate,
    "merge": _cmd_merge,
    "quantize": _cmd_quantize,
    "analyze": _cmd_analyze,
    "validate": _cmd_validate,
    "package": _cmd_package,
    "targets": _cmd_targets,
    "recipes": _cmd_recipes,
    "inspect": _cmd_inspect,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgeq`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.verb](args)
    except EdgeqError as e:
        print(f"edgeq: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgeq: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
