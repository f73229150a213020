"""Packaging for a microcontroller: generated C with a static arena, a memory report, build snippets, TFLM.

The folder (``output_dir``, already a temporary folder that the caller renames into place)::

    model.int8.onnx            the QDQ model the C was generated from (and model.float.onnx when given)
    c/model.h model.c          edgeq_run(), sizes and quantization of inputs/outputs; the schedule
    c/model_data.c             weights, biases, requantization tables (const: flash)
    c/runtime/                 the kernels this model uses (C99; DSP-extension paths via arm_acle.h)
    c/edgeq_model.mk           Makefile snippet; c/edgeq_model.cmake: CMake snippet
    c/model_tflite.c, model.tflite   the same int8 model for TensorFlow Lite Micro users (when expressible)
    memory_report.json / .txt  flash (weights + code) and RAM (arena + stack + I/O buffers) against the budget
    README.md                  how to build it in and call it

The memory figures are measured: the sources are compiled and linked with the target's cross compiler and
flags (the link map gives code and constants, GCC's call graph the worst-case stack). Without the cross
compiler they are estimated, and the report says so. A model that does not fit the target's flash or SRAM
budget raises :class:`~edgeq.errors.UnsupportedError` with the numbers and the largest layers and tensors.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import fileio
from edgeq.backends.c.emit import CModel, generate
from edgeq.config import Target, load_target
from edgeq.errors import DeviceError, EdgeqError, UnsupportedError

C_DIR = "c"
INT8, FLOAT, TFLITE = "model.int8.onnx", "model.float.onnx", "model.tflite"
#: Code-size allowance when the cross compiler is missing (the kernels of a typical CNN, -O2, Thumb-2).
_CODE_ESTIMATE = 12 * 1024
#: Stack allowance when the cross compiler is missing.
_STACK_ESTIMATE = 1024


def _fmt(n: int) -> str:
    return f"{n:,} B"


def _measure(cmodel: CModel, target: Target) -> dict[str, Any]:
    """Compile and link the model for the target (firmware harness, one zero input) and read its sizes."""
    from edgeq.backends.c.firmware import build_firmware, machine_for

    try:
        machine = machine_for(target)
    except EdgeqError:
        machine = None
    if machine is None:
        raise DeviceError(f"target {target.name} names no QEMU machine to link for")
    with tempfile.TemporaryDirectory(prefix="edgeq-mcu-size-") as tmp:
        fw = build_firmware(
            cmodel.files,
            np.zeros((1, cmodel.input_size), np.int8),
            cmodel.input_size,
            Path(tmp),
            target=target,
            machine=machine,
        )
    s = fw.size
    return {
        "measured": True,
        "code_bytes": s.model_code,
        "constants_bytes": s.model_rodata,
        "library_bytes": s.library,
        "stack_bytes": fw.stack.bytes if fw.stack else _STACK_ESTIMATE,
        "stack_path": list(fw.stack.path) if fw.stack else [],
        "stack_bounded": bool(fw.stack.bounded) if fw.stack else False,
        "compiler": target.toolchain.cc if target.toolchain else "arm-none-eabi-gcc",
    }


def memory_report(cmodel: CModel, target: Target, *, measure: bool = True) -> dict[str, Any]:
    """Flash and RAM of ``cmodel`` on ``target`` against its budgets (hardware.flash_kb / sram_kb)."""
    sizes: dict[str, Any] | None = None
    note = ""
    if measure:
        try:
            sizes = _measure(cmodel, target)
        except DeviceError as e:
            note = f"estimated, not measured: {e}"
    if sizes is None:
        sizes = {
            "measured": False,
            "code_bytes": _CODE_ESTIMATE,
            "constants_bytes": cmodel.weight_bytes,
            "library_bytes": 0,
            "stack_bytes": _STACK_ESTIMATE,
            "stack_path": [],
            "stack_bounded": False,
            "compiler": None,
        }
    plan = cmodel.plan
    flash = sizes["code_bytes"] + sizes["constants_bytes"] + sizes["library_bytes"]
    io_bytes = cmodel.input_size + cmodel.output_size
    ram = plan.arena_size + sizes["stack_bytes"] + io_bytes
    hw = target.hardware
    report: dict[str, Any] = {
        "target": target.name,
        "flash": {
            "total_bytes": flash,
            "weights_bytes": cmodel.weight_bytes,
            "constants_bytes": sizes["constants_bytes"],
            "code_bytes": sizes["code_bytes"],
            "library_bytes": sizes["library_bytes"],
            "budget_bytes": hw.flash_kb * 1024 if hw.flash_kb else None,
        },
        "ram": {
            "total_bytes": ram,
            "arena_bytes": plan.arena_size,
            "arena_lower_bound_bytes": plan.lower_bound,
            "activation_lower_bound_bytes": cmodel.activation_bound,
            "scratch_bytes": cmodel.scratch_bytes,
            "stack_bytes": sizes["stack_bytes"],
            "stack_path": sizes["stack_path"],
            "io_buffers_bytes": io_bytes,
            "budget_bytes": hw.sram_kb * 1024 if hw.sram_kb else None,
        },
        "arena_over_bound": round(plan.ratio, 4),
        "planner": plan.strategy,
        "measured": sizes["measured"],
        "compiler": sizes["compiler"],
        "largest_tensors": [{"tensor": n, "bytes": b} for n, b in cmodel.largest_tensors],
        "largest_layers": [
            {"op": o.source or o.output, "kind": o.kind, "weight_bytes": o.weight_bytes}
            for o in sorted(cmodel.ops, key=lambda o: (-o.weight_bytes, o.index))[:5]
            if o.weight_bytes
        ],
        "peak_op": _op_name(cmodel, plan.peak_op),
        "macs": sum(o.macs for o in cmodel.ops),
    }
    if note:
        report["note"] = note
    return report


def _op_name(cmodel: CModel, index: int) -> str:
    for o in cmodel.ops:
        if o.index == index:
            return f"{o.kind} '{o.source or o.output}'"
    return ""


def check_budget(report: dict[str, Any], target: Target) -> None:
    """UnsupportedError unless the model fits the target's flash and SRAM budgets."""
    problems = []
    f, r = report["flash"], report["ram"]
    where = target.source or f"target {target.name}"
    if f["budget_bytes"] is not None and f["total_bytes"] > f["budget_bytes"]:
        layers = ", ".join(f"{x['op']} ({_fmt(x['weight_bytes'])})" for x in report["largest_layers"][:3])
        problems.append(
            f"flash {_fmt(f['total_bytes'])} (weights {_fmt(f['weights_bytes'])}, code "
            f"{_fmt(f['code_bytes'] + f['library_bytes'])}) exceeds the {_fmt(f['budget_bytes'])} budget "
            f"(hardware.flash_kb in {where}); largest layers: {layers}"
        )
    if r["budget_bytes"] is not None and r["total_bytes"] > r["budget_bytes"]:
        tensors = ", ".join(f"{x['tensor']} ({_fmt(x['bytes'])})" for x in report["largest_tensors"][:3])
        problems.append(
            f"RAM {_fmt(r['total_bytes'])} (arena {_fmt(r['arena_bytes'])}, peak at {report['peak_op']}; "
            f"stack "
            f"{_fmt(r['stack_bytes'])}; I/O buffers {_fmt(r['io_buffers_bytes'])}) exceeds the "
            f"{_fmt(r['budget_bytes'])} budget (hardware.sram_kb in {where}); largest tensors: {tensors}"
        )
    if problems:
        raise UnsupportedError(
            f"the model does not fit {target.name}: "
            + "; ".join(problems)
            + "; choose a target with more memory or a smaller model"
        )


def _report_text(report: dict[str, Any]) -> str:
    f, r = report["flash"], report["ram"]

    def budget(used: int, total: int | None) -> str:
        return f"{_fmt(used)} of {_fmt(total)} ({100 * used / total:.1f} %)" if total else _fmt(used)

    lines = [
        f"edgeq memory report for {report['target']}"
        + ("" if report["measured"] else " (estimated: cross compiler not available)"),
        f"flash  {budget(f['total_bytes'], f['budget_bytes'])}",
        f"       weights and tables {_fmt(f['constants_bytes'])}, code {_fmt(f['code_bytes'])}, "
        f"libc/libgcc {_fmt(f['library_bytes'])}",
        f"RAM    {budget(r['total_bytes'], r['budget_bytes'])}",
        f"       arena {_fmt(r['arena_bytes'])} (liveness lower bound {_fmt(r['arena_lower_bound_bytes'])}, "
        f"x{report['arena_over_bound']:.3f}; activations alone {_fmt(r['activation_lower_bound_bytes'])}, "
        f"kernel scratch {_fmt(r['scratch_bytes'])}), peak at {report['peak_op']}",
        f"       stack {_fmt(r['stack_bytes'])} (worst case: {' -> '.join(r['stack_path']) or 'estimated'}), "
        f"input/output buffers {_fmt(r['io_buffers_bytes'])} (the caller's)",
        f"MACs per inference {report['macs']:,}",
        "largest tensors: "
        + ", ".join(f"{x['tensor']} {_fmt(x['bytes'])}" for x in report["largest_tensors"]),
    ]
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    return "\n".join(lines) + "\n"


def _sources(cmodel: CModel) -> list[str]:
    return sorted(n for n in cmodel.files if n.endswith(".c"))


def _makefile(cmodel: CModel, target: Target) -> str:
    cc = target.toolchain.cc if target.toolchain else "arm-none-eabi-gcc"
    srcs = " \\\n    ".join(f"$(EDGEQ_MODEL_DIR)/{n}" for n in _sources(cmodel))
    flags = " ".join(target.toolchain.cflags) if target.toolchain else ""
    return f"""# edgeq model for {target.name}: include from your Makefile.
#   EDGEQ_MODEL_DIR := path/to/this/folder
#   include $(EDGEQ_MODEL_DIR)/edgeq_model.mk
#   SRCS += $(EDGEQ_MODEL_SRCS);  CFLAGS += $(EDGEQ_MODEL_CFLAGS)
# The memory report was measured with: {cc} {flags}
EDGEQ_MODEL_DIR ?= $(dir $(lastword $(MAKEFILE_LIST)))
EDGEQ_MODEL_SRCS := \\
    {srcs}
EDGEQ_MODEL_CFLAGS := -I$(EDGEQ_MODEL_DIR) -I$(EDGEQ_MODEL_DIR)/runtime
"""


def _cmake(cmodel: CModel, target: Target) -> str:
    srcs = "\n    ".join(f"${{CMAKE_CURRENT_LIST_DIR}}/{n}" for n in _sources(cmodel))
    return f"""# edgeq model for {target.name}: include(path/to/edgeq_model.cmake), then link edgeq_model.
add_library(edgeq_model STATIC
    {srcs}
)
target_include_directories(edgeq_model PUBLIC ${{CMAKE_CURRENT_LIST_DIR}} ${{CMAKE_CURRENT_LIST_DIR}}/runtime)
set_target_properties(edgeq_model PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON)
"""


def tflite_c_array(data: bytes, *, name: str = "edgeq_model_tflite") -> str:
    """The .tflite as a 16-byte aligned const array (TFLite Micro's GetModel() wants that alignment)."""
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    body = ",\n    ".join(rows)
    return (
        "/* Generated by edgeq: the int8 model as a .tflite flatbuffer for TensorFlow Lite Micro. */\n"
        "#include <stdint.h>\n\n#ifndef EDGEQ_TFLITE_ALIGN\n"
        "#define EDGEQ_TFLITE_ALIGN __attribute__((aligned(16)))\n"
        "#endif\n\n"
        f"const unsigned int {name}_len = {len(data)};\n"
        f"EDGEQ_TFLITE_ALIGN const unsigned char {name}[{len(data)}] = {{\n    {body}\n}};\n"
    )


def _readme(cmodel: CModel, target: Target, report: dict[str, Any], tflite: bool) -> str:
    ins = "\n".join(
        f"- input {i}: `{x.name}`, int8, shape {list(x.shape)} (NHWC), bytes {x.offset}..{x.offset + x.size}"
        f", real = {x.scale:.9g} * (q - {x.zero_point})"
        for i, x in enumerate(cmodel.inputs)
    )
    outs = "\n".join(
        f"- output {i}: `{x.name}`, int8, shape {list(x.shape)}, bytes {x.offset}..{x.offset + x.size}"
        f", real = {x.scale:.9g} * (q - {x.zero_point})"
        for i, x in enumerate(cmodel.outputs)
    )
    flags = " ".join(target.toolchain.cflags) if target.toolchain else ""
    tfl = (
        "\n## TensorFlow Lite Micro\n\n`model.tflite` / `c/model_tflite.c` (`edgeq_model_tflite`, "
        "16-byte aligned) "
        "hold the same int8 model for TFLM; its kernels are TFLite's, so outputs can differ from the "
        "generated C by 1 LSB in fully connected layers (TFLM rescales in fixed point).\n"
        if tflite
        else ""
    )
    return f"""# {target.name}: generated C

Built by edgeq for {target.description}.

```c
#include "model.h"
static int8_t in[EDGEQ_INPUT_SIZE], out[EDGEQ_OUTPUT_SIZE];
/* fill in: q = round(x / EDGEQ_INPUT0_SCALE) + EDGEQ_INPUT0_ZERO_POINT, NHWC */
edgeq_run(in, out); /* 0 on success */
```

{ins}
{outs}

No allocation, no libc beyond memcpy/memset; one static arena of {report["ram"]["arena_bytes"]:,} bytes
(`EDGEQ_ARENA_ATTRIBUTES` places it, e.g. `-DEDGEQ_ARENA_ATTRIBUTES='__attribute__((section(".dtcm")))'`;
`EDGEQ_WEIGHTS_ATTRIBUTES` does the same for the constants). `edgeq_run` is not reentrant.

Build: add `c/*.c` and `c/runtime/*.c` with `-Ic -Ic/runtime` (`c/edgeq_model.mk` for Make,
`c/edgeq_model.cmake` for CMake). Measured with `{target.toolchain.cc if target.toolchain else "cc"} {flags}`.
Cores with the DSP extension (Cortex-M4/M7/M33/M55) use SIMD kernels; others (or `-DEDGEQ_PORTABLE`) the
portable ones, with identical results.

## Memory

```
{_report_text(report)}```
{tfl}"""


def package_mcu(
    qdq_model_path: str | os.PathLike[str],
    *,
    target: Target | str,
    output_dir: str | os.PathLike[str],
    float_model: str | os.PathLike[str] | None = None,
    measure: bool = True,
) -> dict[str, Any]:
    """Write the microcontroller package for ``qdq_model_path`` into ``output_dir``; returns the manifest.

    ``measure``: compile and link with the target's cross compiler to measure code size and stack (falls
    back to estimates, noted in the report, when the compiler is missing).
    """
    from edgeq.lower import lower

    target = load_target(target)
    out = Path(output_dir)
    program = lower(qdq_model_path)
    cmodel = generate(program, target=target)
    hw = target.hardware
    # Weights or the arena alone over budget: no need to compile to know it does not fit.
    hopeless = (hw.flash_kb is not None and cmodel.weight_bytes > hw.flash_kb * 1024) or (
        hw.sram_kb is not None and cmodel.plan.arena_size > hw.sram_kb * 1024
    )
    report = memory_report(cmodel, target, measure=measure and not hopeless)
    check_budget(report, target)

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(qdq_model_path, out / INT8)
    models: dict[str, Any] = {
        "int8": {"file": INT8, "format": "onnx"},
        "c": {
            "file": f"{C_DIR}/model.c",
            "format": "c",
            "header": f"{C_DIR}/model.h",
            "entry": "int edgeq_run(const int8_t *input, int8_t *output)",
        },
    }
    if float_model is not None:
        shutil.copyfile(float_model, out / FLOAT)
        models["float"] = {"file": FLOAT, "format": "onnx"}
    for name, data in cmodel.files.items():
        fileio.write_bytes(out / C_DIR / name, data, force=True)
    fileio.write_text(out / C_DIR / "edgeq_model.mk", _makefile(cmodel, target), force=True)
    fileio.write_text(out / C_DIR / "edgeq_model.cmake", _cmake(cmodel, target), force=True)

    notes = []
    tflite = False
    try:
        from edgeq.backends.tflite import write_tflite
    except ImportError as e:  # the optional backend is not installed
        notes.append(f"no .tflite for TFLite Micro: {e}")
    else:
        try:
            data = write_tflite(program)
        except EdgeqError as e:
            notes.append(f"no .tflite for TFLite Micro: {e}")
        else:
            fileio.write_bytes(out / TFLITE, data, force=True)
            fileio.write_text(out / C_DIR / "model_tflite.c", tflite_c_array(data), force=True)
            models["tflite"] = {"file": TFLITE, "format": "tflite", "c_array": f"{C_DIR}/model_tflite.c"}
            tflite = True

    fileio.write_text(
        out / "memory_report.json", json.dumps(report, indent=2, sort_keys=True) + "\n", force=True
    )
    fileio.write_text(out / "memory_report.txt", _report_text(report), force=True)
    fileio.write_text(out / "README.md", _readme(cmodel, target, report, tflite), force=True)
    manifest: dict[str, Any] = {
        "kind": "mcu",
        "models": models,
        "memory": {
            "flash_bytes": report["flash"]["total_bytes"],
            "ram_bytes": report["ram"]["total_bytes"],
            "arena_bytes": cmodel.plan.arena_size,
            "arena_lower_bound_bytes": cmodel.plan.lower_bound,
            "measured": report["measured"],
        },
        "io": {
            "inputs": [_io(x) for x in cmodel.inputs],
            "outputs": [_io(x) for x in cmodel.outputs],
            "bindings": [
                {
                    "tensor": b.tensor,
                    "onnx_name": b.onnx_name,
                    "onnx_shape": list(b.onnx_shape),
                    "perm": list(b.perm),
                }
                for b in program.bindings
            ],
        },
        "c_sources": [f"{C_DIR}/{n}" for n in sorted(cmodel.files)],
        "emulator": {"qemu": target.emulator.qemu, "machine": target.emulator.machine}
        if target.emulator
        else None,
    }
    if notes:
        manifest["notes"] = notes
    return manifest


def _io(x) -> dict[str, Any]:
    return {
        "name": x.name,
        "shape": list(x.shape),
        "dtype": "int8",
        "scale": x.scale,
        "zero_point": x.zero_point,
        "offset": x.offset,
        "bytes": x.size,
    }


__all__ = ["check_budget", "memory_report", "package_mcu", "tflite_c_array"]
