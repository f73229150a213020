#!/usr/bin/env python3
"""Run a model on this device and record its outputs and how it ran. Part of edgeq; standalone on purpose.

Needs only numpy and one runtime (onnxruntime, or ai_edge_litert / tflite_runtime for .tflite); it never
imports edgeq, so it can be copied to a Raspberry Pi as it is::

    python3 runner.py --model model.int8.onnx --inputs inputs.npy --output out.npz --stats stats.json

``--inputs``: a ``.npy`` (a model with one input) or a ``.npz`` keyed by input name, holding N samples on a
new leading axis, each with the input's full shape (N×1×8×8×1 for a 1×8×8×1 input). When the model's batch
dimension is 1 or free, N×8×8×1 is also accepted and each row is one sample. Every sample runs alone
(batch 1), like an app on the device would run it. ``--output``: a ``.npz`` of N×(output shape) arrays keyed
by output name, written to a temporary name and renamed (byte-identical for identical outputs).
``--stats``: JSON with latency (median/p90 of ``--latency-runs`` timed runs after warm-up), peak RSS,
runtime and library versions, machine and CPU. ``--self-check`` prints the environment and exits.
Exit status: 0 done, 2 bad arguments or inputs, 3 the runtime failed, 124 deadline passed, 125 parent died.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import sys
import threading
import time
import zipfile

RUNNER_VERSION = 1
RUNTIMES = ("onnxruntime", "litert", "tflite-runtime")
_TEMPS: set[str] = set()  # half-written files to delete if the run is aborted


class RunnerError(Exception):
    """A problem with the arguments or inputs (exit status 2)."""


class RuntimeFailure(Exception):
    """The runtime could not load or run the model (exit status 3)."""


# ---------------------------------------------------------------------------------------------- environment


# Linux's arch/arm64 HWCAP bit names, in bit order.
_HWCAP = (
    *("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp"),
    *("cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512"),
    *("sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg"),
)
_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16"}
_ARM_PARTS = {
    0xD03: "Cortex-A53",
    0xD04: "Cortex-A35",
    0xD05: "Cortex-A55",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",
    0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1",
    0xD0D: "Cortex-A77",
    0xD41: "Cortex-A78",
    0xD44: "Cortex-X1",
    0xD46: "Cortex-A510",
    0xD47: "Cortex-A710",
    0xD48: "Cortex-X2",
    0xD4D: "Cortex-A715",
}


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return None


def cpu_info() -> dict:
    """What can be learned about the CPU without privileges: board, core type, ISA features."""
    info: dict = {"count": os.cpu_count()}
    board = _read("/proc/device-tree/model")  # "Raspberry Pi 4 Model B Rev 1.4" on a Pi
    if board:
        info["board"] = board
    machine = platform.machine()
    cpuinfo = _read("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if machine in ("aarch64", "arm64", "armv7l"):
        midr = _read("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1")
        part = int(midr, 16) >> 4 & 0xFFF if midr else None
        if part is None and "CPU part" in fields:
            part = int(fields["CPU part"], 16)
        if part is not None:
            info["core"] = _ARM_PARTS.get(part, f"part 0x{part:03x}")
        info["features"] = _hwcaps()
    elif "model name" in fields:
        info["model"] = fields["model name"]
    return info


def _hwcaps() -> list[str]:
    """AT_HWCAP/AT_HWCAP2 bits: what the kernel (or QEMU) says this aarch64 core implements."""
    try:
        import ctypes

        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype = ctypes.c_ulong
        getauxval.argtypes = [ctypes.c_ulong]
        hwcap, hwcap2 = getauxval(16), getauxval(26)
    except (OSError, AttributeError):
        return []
    names = [name for bit, name in enumerate(_HWCAP) if hwcap >> bit & 1]
    return names + [name for bit, name in sorted(_HWCAP2.items()) if hwcap2 >> bit & 1]


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # kilobytes on Linux, bytes on macOS


def _version(module: str) -> str | None:
    try:
        return __import__(module, fromlist=["__version__"]).__version__
    except Exception:  # any import failure means "not usable here"
        return None


def environment() -> dict:
    import numpy as np

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
    }


# ---------------------------------------------------------------------------------------------------- files


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.part")
    _TEMPS.add(tmp)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        _TEMPS.discard(tmp)


def save_npz(path: str, arrays: dict) -> None:
    """np.savez with fixed timestamps, so identical arrays give identical bytes; written atomically."""
    import numpy as np

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)

    _atomic_write(path, write)


def save_json(path: str, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic_write(path, write)


def load_inputs(path: str) -> dict:
    """{name or "" for a bare .npy: array}; never unpickles (the file may come from anywhere)."""
    import numpy as np

    if not os.path.isfile(path):
        raise RunnerError(f"{path}: inputs file not found")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise RunnerError(f"{path}: not a readable .npy/.npz without pickles ({e})") from None
    if isinstance(data, np.ndarray):
        return {"": data}
    with data:
        return {name: data[name] for name in data.files}


# ------------------------------------------------------------------------------------------------- runtimes


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class OnnxRuntimeModel:
    def __init__(self, path: str, *, threads: int, optimize: bool):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerError(
                "onnxruntime is not installed on this device: pip install onnxruntime"
            ) from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise RuntimeFailure(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:300]}") from None
        self.runtime = {
            "name": "onnxruntime",
            "version": ort.__version__,
            "providers": self.session.get_providers(),
            "optimize": optimize,
        }
        self.inputs = [
            (i.name, list(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in self.session.get_inputs()
        ]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, feed: dict) -> list:
        return self.session.run(None, feed)


class TfliteModel:
    """LiteRT (ai_edge_litert) or tflite_runtime: the same Interpreter API."""

    def __init__(self, path: str, *, runtime: str, threads: int, reference_kernels: bool):
        try:
            if runtime == "litert":
                from ai_edge_litert import interpreter as tfl

                version = _version("ai_edge_litert")
            else:
                from tflite_runtime import interpreter as tfl

                version = _version("tflite_runtime")
        except ImportError:
            package = "ai-edge-litert" if runtime == "litert" else "tflite-runtime"
            raise RunnerError(f"{runtime} is not installed on this device: pip install {package}") from None
        kwargs = {"num_threads": threads}
        if reference_kernels:
            # Without the default XNNPACK delegate: TFLite's builtin kernels, the arithmetic the converter's
            # reference results use. XNNPACK (the default) is what an app gets and may differ by a few LSB.
            kwargs["experimental_op_resolver_type"] = tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = tfl.Interpreter(model_path=path, **kwargs)
            self.interpreter.allocate_tensors()
        except Exception as e:
            raise RuntimeFailure(f"{runtime} cannot load {path}: {str(e).splitlines()[0][:300]}") from None
        self.runtime = {"name": runtime, "version": version, "reference_kernels": reference_kernels}
        self._in = self.interpreter.get_input_details()
        self._out = self.interpreter.get_output_details()
        self.inputs = [(d["name"], [int(x) for x in d["shape"]], d["dtype"].__name__) for d in self._in]
        self.outputs = [d["name"] for d in self._out]

    def __call__(self, feed: dict) -> list:
        import numpy as np

        for d in self._in:
            x = feed[d["name"]]
            scale, zero = d["quantization"]
            if np.issubdtype(d["dtype"], np.integer) and np.issubdtype(x.dtype, np.floating) and scale:
                info = np.iinfo(d["dtype"])
                x = np.clip(np.round(x / scale) + zero, info.min, info.max)
            self.interpreter.set_tensor(d["index"], x.astype(d["dtype"]))
        self.interpreter.invoke()
        outs = []
        for d in self._out:
            y = self.interpreter.get_tensor(d["index"])
            scale, zero = d["quantization"]
            if np.issubdtype(y.dtype, np.integer) and scale:  # report real values, like the ONNX model's
                y = ((y.astype(np.int32) - zero) * np.float32(scale)).astype(np.float32)
            outs.append(y.copy())
        return outs


def open_model(path: str, *, runtime: str, threads: int, optimize: bool, reference_kernels: bool):
    if not os.path.isfile(path):
        raise RunnerError(f"{path}: model file not found")
    if runtime == "onnxruntime":
        return OnnxRuntimeModel(path, threads=threads, optimize=optimize)
    return TfliteModel(path, runtime=runtime, threads=threads, reference_kernels=reference_kernels)


def samples(model, data: dict) -> tuple[int, list]:
    """Match the inputs file to the model's inputs; returns (N, [(name, N×shape array)])."""
    import numpy as np

    names = [name for name, _, _ in model.inputs]
    if set(data) == {""} or (len(names) == 1 and len(data) == 1):
        if len(names) != 1:
            raise RunnerError(
                f"the model has {len(names)} inputs ({', '.join(names)}); pass a .npz keyed by input name"
            )
        data = {names[0]: next(iter(data.values()))}
    missing = [n for n in names if n not in data]
    if missing:
        raise RunnerError(
            f"inputs file has no array for model input(s) {', '.join(missing)} "
            f"(it has: {', '.join(sorted(data))})"
        )
    feeds, count = [], None
    for name, shape, dtype in model.inputs:
        x = np.asarray(data[name])
        rank = len(shape)
        fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
        if x.ndim == rank + 1:
            per_sample = x
        elif x.ndim == rank and rank >= 1 and fixed[0] in (1, None):
            per_sample = x[:, None]  # rows are samples: the model's batch axis becomes the sample axis
        else:
            raise RunnerError(
                f"input '{name}': array of shape {tuple(x.shape)} does not hold samples of the "
                f"model's input shape {tuple(shape)}; stack samples on a new leading axis"
            )
        bad = [i for i, d in enumerate(fixed) if d is not None and per_sample.shape[i + 1] != d]
        if bad:
            raise RunnerError(
                f"input '{name}': samples have shape {tuple(per_sample.shape[1:])}, the model "
                f"wants {tuple(shape)}"
            )
        if count is not None and per_sample.shape[0] != count:
            raise RunnerError(f"input '{name}' has {per_sample.shape[0]} samples, another input has {count}")
        count = per_sample.shape[0]
        want = np.dtype(dtype) if dtype in _ORT_TYPES.values() else per_sample.dtype
        if per_sample.dtype != want:
            if per_sample.dtype.kind != want.kind and not (
                want.kind in "iu" and per_sample.dtype.kind == "f"
            ):
                raise RunnerError(f"input '{name}': samples are {per_sample.dtype}, the model wants {want}")
            if not (want.kind in "iu" and per_sample.dtype.kind == "f"):  # floats are quantized by the model
                per_sample = per_sample.astype(want)
        feeds.append((name, per_sample))
    if not count:
        raise RunnerError("the inputs file holds no samples")
    return count, feeds


def percentile(sorted_values: list, q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    import math

    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def run(args) -> dict:
    import numpy as np

    started = time.perf_counter()
    data = load_inputs(args.inputs)
    rss_before = peak_rss_bytes()
    t = time.perf_counter()
    model = open_model(
        args.model,
        runtime=args.runtime,
        threads=args.threads,
        optimize=not args.no_optimize,
        reference_kernels=args.reference_kernels,
    )
    load_ms = (time.perf_counter() - t) * 1e3
    count, feeds = samples(model, data)
    results: list[list] = [[] for _ in model.outputs]
    t = time.perf_counter()
    try:
        for i in range(count):
            outs = model({name: x[i] for name, x in feeds})
            for acc, y in zip(results, outs):  # noqa: B905 (runs on Python < 3.10 too)
                acc.append(np.asarray(y))
    except (RunnerError, RuntimeFailure):
        raise
    except Exception as e:
        raise RuntimeFailure(
            f"{model.runtime['name']} failed on sample {i}: {str(e).splitlines()[0][:300]}"
        ) from None
    pass_ms = (time.perf_counter() - t) * 1e3
    times = []
    first = {name: x[0] for name, x in feeds}
    for _ in range(args.warmup if args.latency_runs else 0):
        model(first)
    for _ in range(args.latency_runs):
        t = time.perf_counter()
        model(first)
        times.append((time.perf_counter() - t) * 1e3)
    outputs = {name: np.stack(acc) for name, acc in zip(model.outputs, results)}  # noqa: B905
    save_npz(args.output, outputs)
    times.sort()
    latency = None
    if times:
        latency = {
            "runs": len(times),
            "warmup": args.warmup,
            "median_ms": round(percentile(times, 50), 4),
            "p90_ms": round(percentile(times, 90), 4),
            "min_ms": round(times[0], 4),
            "mean_ms": round(sum(times) / len(times), 4),
        }
    return {
        "runner_version": RUNNER_VERSION,
        "model": {
            "file": os.path.basename(args.model),
            "bytes": os.path.getsize(args.model),
            "sha256": _sha256(args.model),
        },
        "runtime": model.runtime,
        "threads": args.threads,
        "samples": count,
        "inputs": [{"name": n, "shape": s, "dtype": d} for n, s, d in model.inputs],
        "outputs": [
            {"name": n, "shape": list(a.shape[1:]), "dtype": str(a.dtype)} for n, a in outputs.items()
        ],
        "load_ms": round(load_ms, 3),
        "all_samples_ms": round(pass_ms, 3),
        "latency": latency,
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_model_bytes": rss_before,
        "wall_s": round(time.perf_counter() - started, 3),
        **environment(),
    }


# ------------------------------------------------------------------------------------------------------ cli


def _abort(code: int, why: str) -> None:
    for tmp in list(_TEMPS):
        try:
            os.unlink(tmp)
        except OSError:
            pass
    sys.stderr.write(f"runner: aborted: {why}\n")
    sys.stderr.flush()
    os._exit(code)


def _watchdog(parent: int | None, deadline: float | None) -> None:
    """Stop when the caller is gone (a dropped SSH session must not leave a runner behind) or time is up."""
    while True:
        time.sleep(0.2)
        if parent is not None and os.getppid() != parent:
            _abort(125, "the process that started the runner is gone (connection dropped?)")
        if deadline is not None and time.monotonic() > deadline:
            _abort(124, "deadline passed")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model file (.onnx, or .tflite with --runtime litert/tflite-runtime)")
    p.add_argument("--inputs", help=".npy (one input) or .npz keyed by input name; N samples")
    p.add_argument("--output", help="outputs .npz to write")
    p.add_argument("--stats", help="stats .json to write (it is also printed on stdout)")
    p.add_argument("--runtime", choices=RUNTIMES, default=None, help="default: from the model's extension")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--latency-runs", type=int, default=50, help="timed runs of the first sample (0: none)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before the timed ones")
    p.add_argument("--no-optimize", action="store_true", help="onnxruntime: disable graph optimizations")
    p.add_argument(
        "--reference-kernels",
        action="store_true",
        help="litert/tflite-runtime: builtin kernels without the default XNNPACK delegate",
    )
    p.add_argument("--exit-with-parent", action="store_true", help="stop if the parent process goes away")
    p.add_argument("--deadline", type=float, help="stop after this many seconds")
    p.add_argument("--self-check", action="store_true", help="print the environment as JSON and exit")
    args = p.parse_args(argv)
    if not args.self_check:
        missing = [f"--{n}" for n in ("model", "inputs", "output") if getattr(args, n) is None]
        if missing:
            p.error(f"the following arguments are required: {', '.join(missing)}")
        if args.runtime is None:
            args.runtime = "litert" if args.model.endswith(".tflite") else "onnxruntime"
        if args.threads < 1 or args.latency_runs < 0 or args.warmup < 0:
            p.error("--threads must be >= 1, --latency-runs and --warmup >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.self_check:
        env = environment()
        env.update(
            runner_version=RUNNER_VERSION,
            onnxruntime=_version("onnxruntime"),
            litert=_version("ai_edge_litert"),
            tflite_runtime=_version("tflite_runtime"),
        )
        print(json.dumps(env, sort_keys=True))
        return 0
    deadline = time.monotonic() + args.deadline if args.deadline else None
    if args.exit_with_parent or deadline is not None:
        parent = os.getppid() if args.exit_with_parent else None
        threading.Thread(target=_watchdog, args=(parent, deadline), daemon=True).start()
    try:
        stats = run(args)
    except RunnerError as e:
        sys.stderr.write(f"runner: error: {e}\n")
        return 2
    except RuntimeFailure as e:
        sys.stderr.write(f"runner: error: {e}\n")
        return 3
    if args.stats:
        save_json(args.stats, stats)
    print(json.dumps(stats, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
