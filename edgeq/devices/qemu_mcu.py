"""An emulated microcontroller: build firmware with the generated C model and test inputs, run it in QEMU.

``run_on_mcu`` compiles the model (edgeq.backends.c) with the target's cross compiler and flags, links it for
the QEMU machine of the target profile (mps2-an386 Cortex-M4, mps2-an500 M7, mps2-an505 M33, mps3-an547 M55,
virt RV32), runs it with semihosting and edgeq's instruction-counting TCG plugin, and returns the int8
outputs, the instructions executed per inference (and per op with ``profile=True``), the stack used and the
firmware's size. Instruction counts are exact and identical run to run; they are not cycles (QEMU models no
pipeline, caches or wait states). Emulation is for correctness and instruction counts, never for timing.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.backends.c.build import build_icount_plugin, find_tool
from edgeq.backends.c.emit import CModel, generate
from edgeq.backends.c.firmware import Firmware, Machine, SizeReport, build_firmware, machine_for
from edgeq.config import Target, load_target
from edgeq.errors import DataError, DeviceError, EdgeqError
from edgeq.lower.program import Program

#: QEMU TCG runs well above this many guest instructions per second here; timeouts are derived from it.
_SLOWEST_IPS = 20e6

_EXIT_MEANING = {
    3: "the firmware could not open its output file on the host (semihosting)",
    4: "edgeq_run returned an error",
    5: "writing outputs to the host failed",
    0x7F: "the core faulted (HardFault/BusFault/UsageFault): a kernel accessed invalid memory",
}


@dataclass(frozen=True)
class McuResult:
    """What one firmware run measured."""

    outputs: np.ndarray  # (N, output bytes) int8: every program output, in order, per sample
    instructions: tuple[int, ...]  # per inference (edgeq_run, minus the cost of the marker calls)
    op_instructions: tuple[tuple[int, ...], ...]  # per inference, per profiled op (profile=True), else ()
    functions: dict[str, int]  # instructions per firmware function over the whole run (histogram=True)
    stack_bytes: int  # deepest stack use measured in the run (the test harness's frames included)
    stack_static_bytes: int  # edgeq_run's worst case from GCC's call graph (-fcallgraph-info)
    size: SizeReport
    machine: str
    cpu: str
    wall_seconds: float

    @property
    def instructions_per_inference(self) -> int:
        """The median over inferences (they are equal unless the model has data-dependent loops)."""
        return int(np.median(self.instructions)) if self.instructions else 0


def qemu_command(
    fw: Firmware, *, plugin: Path, log: Path, cpu: str | None = None, histogram: bool = False
) -> list[str]:
    """The qemu-system command line that runs ``fw`` with semihosting and the counting plugin."""
    m = fw.machine
    qemu = find_tool(
        m.qemu,
        what="QEMU, to emulate the microcontroller",
        install="apt-get install --no-install-recommends "
        + ("qemu-system-misc" if m.arch == "riscv" else "qemu-system-arm"),
    )
    marks = ":".join(f"0x{fw.marks[n]:x}" for n in ("edgeq_mark", "edgeq_profile_mark") if n in fw.marks)
    argv = [qemu, "-M", m.name]
    if cpu:
        argv += ["-cpu", cpu]
    argv += [
        *m.extra_args,
        "-kernel",
        str(fw.elf),
        "-semihosting-config",
        "enable=on,target=native",
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-plugin",
        f"{plugin},out={log},marks={marks}" + (",hist=on" if histogram else ""),
    ]
    return argv


def run_firmware(
    fw: Firmware,
    folder: Path,
    *,
    expected_instructions: float,
    cpu: str | None = None,
    timeout: float | None = None,
    histogram: bool = False,
) -> tuple[bytes, list[tuple[int, int]], int, float, dict[int, int]]:
    """Run ``fw`` in QEMU inside ``folder``.

    Returns (output bytes, marker log, stack bytes, wall seconds, {block address: instructions} when
    ``histogram``).
    """
    plugin = build_icount_plugin()
    log = folder / "icount.log"
    for f in ("edgeq_outputs.bin", "edgeq_stats.bin", log.name):
        (folder / f).unlink(missing_ok=True)
    argv = qemu_command(fw, plugin=plugin, log=log, cpu=cpu, histogram=histogram)
    limit = timeout if timeout is not None else 30 + expected_instructions / _SLOWEST_IPS
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise DeviceError(
            f"QEMU {fw.machine.name} did not finish within {limit:.0f} s; the firmware may hang (check the "
            "model) or the run needs more time: use fewer samples"
        ) from None
    wall = time.monotonic() - start
    if proc.returncode != 0:
        meaning = _EXIT_MEANING.get(proc.returncode, "QEMU or the firmware failed")
        detail = (proc.stderr or proc.stdout).strip().replace("\n", " | ")[:800]
        raise DeviceError(
            f"firmware on {fw.machine.name} exited with status {proc.returncode}: {meaning}"
            + (f" ({detail})" if detail else "")
        )
    outputs = (folder / "edgeq_outputs.bin").read_bytes()
    marks = []
    blocks: dict[int, int] = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            marks.append((int(parts[0]), int(parts[1])))
        elif len(parts) == 3 and parts[0] == "pc":
            pc = int(parts[1], 16)
            blocks[pc] = blocks.get(pc, 0) + int(parts[2])
    stats = (folder / "edgeq_stats.bin").read_bytes() if (folder / "edgeq_stats.bin").is_file() else b""
    stack = int(np.frombuffer(stats, dtype="<u4")[1]) if len(stats) == 8 else 0
    return outputs, marks, stack, wall, blocks


def _split_marks(marks: list[tuple[int, int]], n: int) -> tuple[list[int], list[tuple[int, ...]]]:
    """Per-inference instruction counts (and per-op counts) from the plugin's marker log."""
    bounds = [(i, c) for i, (k, c) in enumerate(marks) if k == 0]
    if len(bounds) != 2 * n + 2:
        raise DeviceError(
            f"instruction counter saw {len(bounds)} marks for {n} inferences; the firmware and "
            "plugin disagree (rebuild)"
        )
    overhead = bounds[-1][1] - bounds[-2][1]
    totals, per_op = [], []
    for s in range(n):
        (i0, c0), (i1, c1) = bounds[2 * s], bounds[2 * s + 1]
        totals.append(c1 - c0 - overhead)
        ops = [c for k, c in marks[i0 + 1 : i1] if k == 1]
        if ops:
            edges = [c0, *ops]
            per_op.append(tuple(b - a for a, b in itertools.pairwise(edges)))
    return totals, per_op


def run_sources(
    files: dict[str, bytes],
    inputs: np.ndarray,
    *,
    input_size: int,
    output_size: int,
    target: Target | str,
    machine: str | None = None,
    profile: bool = False,
    histogram: bool = False,
    macs: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    extra_cflags: tuple[str, ...] = (),
) -> McuResult:
    """Build firmware from generated C ``files`` (as emit_c wrote them, or a package's c/ folder) with the
    int8 ``inputs`` (N, input_size) embedded, run it in QEMU, return outputs and counts."""
    target = load_target(target)
    x = np.asarray(inputs)
    if x.dtype != np.int8:
        raise DataError(f"MCU inputs must be int8 (quantized), got {x.dtype}; use Program.quantize_input")
    n = x.shape[0] if x.ndim > 1 else 1
    x = x.reshape(n, -1)
    if x.shape[1] != input_size:
        raise DataError(
            f"each MCU input sample must have {input_size} bytes (the program's inputs), got {x.shape[1]}"
        )
    mach: Machine = machine_for(target, machine)
    with tempfile.TemporaryDirectory(prefix="edgeq-mcu-", dir=workdir) as tmp:
        folder = Path(tmp)
        fw = build_firmware(
            files,
            x,
            input_size,
            folder,
            target=target,
            machine=mach,
            profile=profile,
            extra_cflags=extra_cflags,
        )
        expected = 10 * (macs + 100_000) * n + 5e6
        cpu = target.emulator.cpu if target.emulator else None
        out, marks, stack, wall, blocks = run_firmware(
            fw, folder, expected_instructions=expected, cpu=cpu, timeout=timeout, histogram=histogram
        )
        functions = _by_function(fw, blocks) if histogram else {}
    if len(out) != n * output_size:
        raise DeviceError(f"firmware wrote {len(out)} output bytes, expected {n * output_size}")
    totals, per_op = _split_marks(marks, n)
    return McuResult(
        outputs=np.frombuffer(out, dtype=np.int8).reshape(n, output_size).copy(),
        instructions=tuple(totals),
        op_instructions=tuple(per_op),
        functions=functions,
        stack_bytes=stack,
        stack_static_bytes=fw.stack.bytes if fw.stack else 0,
        size=fw.size,
        machine=mach.name,
        cpu=mach.cpu,
        wall_seconds=wall,
    )


def run_on_mcu(
    model: Program | CModel,
    inputs: np.ndarray,
    *,
    target: Target | str,
    machine: str | None = None,
    profile: bool = False,
    histogram: bool = False,
    workdir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> McuResult:
    """Run ``model`` (a Program, or the CModel generate() made for this target) on int8 ``inputs`` in QEMU.

    ``inputs``: (N, input bytes) or (N, *input shape) int8, the program's inputs concatenated per sample.
    With ``profile`` every op is followed by a marker: per-op instruction counts, at the price of a call per
    op (a few instructions) in ``instructions``. With ``histogram`` the instructions of the whole run are also
    attributed to the firmware's functions (a profile of the kernels).
    """
    target = load_target(target)
    cmodel = model if isinstance(model, CModel) else generate(model, target=target)
    # A model generated without the DSP kernels (dsp=False) runs the portable kernels on a DSP core too.
    flags = ("-DEDGEQ_PORTABLE",) if not cmodel.dsp else ()
    return run_sources(
        cmodel.files,
        inputs,
        input_size=cmodel.input_size,
        output_size=cmodel.output_size,
        target=target,
        machine=machine,
        profile=profile,
        histogram=histogram,
        macs=sum(o.macs for o in cmodel.ops),
        workdir=workdir,
        timeout=timeout,
        extra_cflags=flags,
    )


def _by_function(fw: Firmware, blocks: dict[int, int]) -> dict[str, int]:
    """Attribute translation-block counts to the ELF's function symbols (nm -S)."""
    import bisect

    from edgeq.backends.c.build import run_tool

    cc = (fw.machine.arch == "riscv" and "riscv64-unknown-elf-nm") or "arm-none-eabi-nm"
    out = run_tool(
        [find_tool(cc, what="nm", install="binutils of the cross toolchain"), "-S", "-n", str(fw.elf)],
        what="nm",
    ).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            syms.append((int(parts[0], 16) & ~1, int(parts[1], 16), parts[3]))
    starts = [s[0] for s in syms]
    result: dict[str, int] = {}
    for pc, n in blocks.items():
        j = bisect.bisect_right(starts, pc) - 1
        name = syms[j][2] if j >= 0 and pc < syms[j][0] + syms[j][1] else f"0x{pc:x}"
        result[name] = result.get(name, 0) + n
    return dict(sorted(result.items(), key=lambda kv: (-kv[1], kv[0])))


def split_outputs(cmodel: CModel, raw: np.ndarray) -> dict[str, np.ndarray]:
    """(N, output bytes) → {program output name: (N, *shape) int8}."""
    return {o.name: raw[:, o.offset : o.offset + o.size].reshape(-1, *o.shape) for o in cmodel.outputs}


__all__ = [
    "McuResult",
    "qemu_command",
    "run_firmware",
    "run_on_mcu",
    "run_sources",
    "split_outputs",
    "validate_on_mcu",
]


# ---- validation of a package on an emulated microcontroller ------------------------------------------------


def _stack_samples(data: Any, model_path: Path, *, preprocess: Any, limit: int | None) -> tuple[dict, int]:
    from edgeq import onnxutil
    from edgeq.data import open_samples

    specs = onnxutil.input_specs(onnxutil.load_model(model_path))
    rows: dict[str, list[np.ndarray]] = {s.name: [] for s in specs}
    for sample in open_samples(data, inputs=specs, preprocess=preprocess, limit=limit):
        for name in rows:
            rows[name].append(np.asarray(sample[name], dtype=np.float32))
    count = len(next(iter(rows.values()))) if rows else 0
    if count == 0:
        raise DataError("the validation data holds no samples; give at least one")
    return {name: np.stack(arrays) for name, arrays in rows.items()}, count


def _package_sources(package: Any) -> dict[str, bytes]:
    root = package.path / "c"
    files = {}
    for rel in package.manifest.get("c_sources", []):
        path = package.path / rel
        if not path.is_file():
            raise DeviceError(f"{package.path}: {rel} is missing; package again with `edgeq package`")
        files[str(Path(rel).relative_to("c"))] = path.read_bytes()
    if not files:
        raise DeviceError(f"{root}: no generated C sources in the package; is it an MCU package?")
    return files


def _chunks(count: int, input_size: int, flash_free: int) -> list[range]:
    per = max(1, flash_free // max(1, input_size))
    return [range(i, min(count, i + per)) for i in range(0, count, per)]


def _reference_check(program, q: np.ndarray, out_q: np.ndarray, outs: list, count: int) -> str:
    """The core's int8 outputs against edgeq's reference interpreter on the same int8 inputs, as a note."""
    from edgeq.lower.reference import run

    sizes = [int(np.prod(program.tensors[t].shape)) for t in program.inputs]
    offsets = np.cumsum([0, *sizes])
    equal = total = worst = 0
    for i in range(count):
        feeds = {
            t: q[i, offsets[k] : offsets[k + 1]].reshape(program.tensors[t].shape).astype(np.int8)
            for k, t in enumerate(program.inputs)
        }
        ref = run(program, feeds)
        for o in outs:
            got = out_q[i, o["offset"] : o["offset"] + o["bytes"]].astype(np.int32)
            want = np.asarray(ref[o["name"]]).astype(np.int32).ravel()
            diff = np.abs(got - want)
            equal += int(np.sum(diff == 0))
            total += diff.size
            worst = max(worst, int(diff.max(initial=0)))
    verdict = "bit-exact" if equal == total else "NOT bit-exact"
    return (
        f"{verdict} with edgeq's reference interpreter: {equal:,} of {total:,} int8 output elements equal "
        f"over {count} samples, max |diff| {worst} LSB"
    )


def validate_on_mcu(
    package_dir: str | os.PathLike[str],
    *,
    machine: str | None = None,
    data: Any,
    labels: Any = None,
    thresholds: Any = None,
    num_samples: int | None = None,
    target: Target | str | None = None,
    preprocess: Any = None,
    progress: bool | None = None,
) -> Any:
    """Validate an MCU package (from ``edgeq package`` with a float model) on an emulated core: a Report.

    The package's own C sources are built for the QEMU ``machine`` (default: the target profile's) with the
    samples embedded; the int8 outputs come back through semihosting, are dequantized into the float model's
    layout and compared with the float model run here in onnxruntime. The report carries the instructions per
    inference, the firmware's size and the stack used (emulated: no timing).
    """
    import contextlib

    from edgeq import onnxutil
    from edgeq.lower import lower
    from edgeq.packaging.base import Package
    from edgeq.progress import track
    from edgeq.validate import Environment, ModelStats, Report, Thresholds, compare
    from edgeq.validate.compare import as_labels
    from edgeq.validate.layers import dq_step

    package = Package.load(package_dir)
    float_path, int8_path = package.model("float"), package.model("int8")
    if target is None:
        with contextlib.suppress(EdgeqError):
            target = load_target(package.target)
    if target is None:
        raise DeviceError(f"{package.path}: target {package.target} is unknown here; pass --target")
    target = load_target(target)
    if num_samples is not None and num_samples < 1:
        raise DataError(f"num_samples={num_samples}: expected 1 or more, or None for all samples")
    mach = machine_for(target, machine)
    inputs, count = _stack_samples(data, float_path, preprocess=preprocess, limit=num_samples)
    lab = as_labels(labels)
    if lab is not None and num_samples is not None:
        lab = lab[:count]
    program = lower(int8_path)
    q = np.concatenate(
        [
            np.stack(
                [program.quantize_input(t, inputs[_onnx_name(program, t)][i]).ravel() for i in range(count)]
            )
            for t in program.inputs
        ],
        axis=1,
    )
    files = _package_sources(package)
    io = package.manifest.get("io", {})
    outs = io.get("outputs", [])
    input_size = sum(x["bytes"] for x in io.get("inputs", []))
    output_size = sum(x["bytes"] for x in outs)
    flash_free = (
        mach.flash.length - int(package.manifest.get("memory", {}).get("flash_bytes", 0)) - 256 * 1024
    )
    raw, instructions, runs = [], [], []
    chunks = _chunks(count, input_size, flash_free)
    for chunk in track(
        chunks, description=f"validating on qemu:{mach.name}", total=len(chunks), show=progress
    ):
        r = run_sources(
            files,
            q[chunk.start : chunk.stop],
            input_size=input_size,
            output_size=output_size,
            target=target,
            machine=machine,
        )
        raw.append(r.outputs)
        instructions += r.instructions
        runs.append(r)
    out_q = np.concatenate(raw)
    exact_note = _reference_check(program, q, out_q, outs, count)
    quant_outputs = {}
    for o in outs:
        t = o["name"]
        qv = out_q[:, o["offset"] : o["offset"] + o["bytes"]].reshape(count, *o["shape"])
        quant_outputs[_onnx_name(program, t)] = np.stack(
            [program.dequantize_output(t, qv[i]) for i in range(count)]
        )
    session = onnxutil.ort_session(float_path)
    names = [o.name for o in session.get_outputs()]
    float_rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(count):
        res = session.run(names, {k: v[i] for k, v in inputs.items()})
        for n, v in zip(names, res, strict=True):
            float_rows[n].append(v)
    float_outputs = {n: np.stack(v) for n, v in float_rows.items()}
    quant_outputs = {
        k: v.reshape(float_outputs[k].shape) if k in float_outputs else v for k, v in quant_outputs.items()
    }
    qm = onnxutil.load_model(int8_path)
    steps = {name: s for name in quant_outputs if (s := dq_step(qm, name)) is not None}
    shapes = {n: list(v.shape[1:]) for n, v in float_outputs.items()}
    metrics = compare(float_outputs, quant_outputs, labels=lab, shapes=shapes, steps=steps)
    last = runs[-1]
    memory = package.manifest.get("memory", {})
    notes = (
        f"ran the package's generated C on QEMU {mach.name} ({mach.cpu}): {count} samples; "
        f"{int(np.median(instructions)):,} instructions per inference (median; QEMU TCG count, not cycles)",
        f"firmware flash {last.size.model_flash + last.size.library:,} B for the model "
        f"(code {last.size.model_code:,} B, constants {last.size.model_rodata:,} B), arena "
        f"{memory.get('arena_bytes', last.size.model_bss):,} B, stack used {last.stack_bytes:,} B",
        exact_note,
        "emulated device: outputs are the core's, instruction counts are exact, there is no timing",
    )
    return Report(
        outputs=metrics,
        float_model=ModelStats(path=float_path.name, size_bytes=float_path.stat().st_size),
        # The int8 size is the model's constants in flash (weights, biases, tables): what the float
        # file's size (its weights) compares with; the code is in the notes.
        quant_model=ModelStats(path="c/model_data.c", size_bytes=last.size.model_rodata),
        environment=Environment(
            device=f"qemu:{mach.name}",
            runtime="edgeq generated C",
            machine=mach.name,
            cpu=f"{mach.cpu} (QEMU TCG)",
            emulated=True,
        ),
        thresholds=thresholds if thresholds is not None else Thresholds(),
        notes=notes,
    )


def _onnx_name(program: Program, tensor: str) -> str:
    b = program.binding(tensor)
    return b.onnx_name if b is not None else tensor
