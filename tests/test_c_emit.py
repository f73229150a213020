"""The C emitter: deterministic files, the model.h API, no libc beyond memcpy/memset, clear errors."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from test_c_helpers import ProgramBuilder, random_inputs, reference_outputs

from edgeq.backends.c import emit_c, generate
from edgeq.backends.c.build import compile_host, run_host
from edgeq.errors import UnsupportedError
from edgeq.lower.program import DequantizeOptions, DType, Op, OpKind, Program, QParams, TensorInfo

ARM_GCC = shutil.which("arm-none-eabi-gcc")
M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2"]


def small_program(seed: int = 0) -> Program:
    b = ProgramBuilder(seed)
    x = b.input((1, 8, 8, 4))
    y = b.conv(x, 8, 3, act="RELU6")
    d = b.conv(y, 0, 3, depthwise=True)
    s = b.add(b.conv(d, 8, 1, pad=0), y)
    return b.program([b.fc(b.reshape(b.mean(s), (1, 8)), 5), s])  # two outputs


def test_same_program_same_bytes_and_the_header_api():
    files = emit_c(small_program(), target="cortex-m4")
    again = emit_c(small_program(), target="cortex-m4")
    assert files == again
    assert {"model.h", "model.c", "model_data.c", "runtime/edgeq_nn.h", "runtime/conv.c"} <= set(files)
    h = files["model.h"].decode()
    assert "int edgeq_run(const int8_t *input, int8_t *output);" in h
    assert "#define EDGEQ_NUM_OUTPUTS 2" in h and "#define EDGEQ_OUTPUT_SIZE 517" in h  # 5 + 8*8*8
    assert re.search(r"#define EDGEQ_OUTPUT1_OFFSET 5\b", h)
    assert "EDGEQ_INPUT0_SCALE" in h and "EDGEQ_ARENA_SIZE" in h
    c = files["model.c"].decode()
    assert "malloc" not in c and "static int32_t edgeq_arena[" in c
    data = files["model_data.c"].decode()
    assert "const int8_t edgeq_" in data  # weights are const (flash)
    # The runtime shipped is only what the model uses.
    assert "runtime/softmax.c" not in files and "runtime/pooling.c" not in files


@pytest.mark.slow
def test_two_outputs_and_in_place_ops_on_the_host(tmp_path):
    p = small_program(1)
    cm = generate(p, target="cortex-m4", dsp=True)
    exe = compile_host(cm.files, tmp_path / "b", emulate_dsp=True)
    x = random_inputs(p, 4)
    assert np.array_equal(run_host(exe, x, output_size=cm.output_size), reference_outputs(p, x))


@pytest.mark.skipif(
    ARM_GCC is None, reason="arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi)"
)
def test_only_memcpy_and_memset_from_libc(tmp_path):
    b = ProgramBuilder(3)
    x = b.input((1, 6, 6, 4))
    y = b.pool(b.conv(x, 8, 3), 2, stride=2, average=True)
    z = b.softmax(b.fc(b.reshape(b.mean(b.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))), (1, 8)), 4))
    files = emit_c(b.program([z]), target="cortex-m4")
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    undefined = set()
    for src in sorted(tmp_path.rglob("*.c")):
        obj = src.with_suffix(".o")
        subprocess.run(
            [
                ARM_GCC,
                *M4_FLAGS,
                "-std=c99",
                "-Wall",
                "-Wextra",
                "-Werror",
                f"-I{tmp_path}",
                f"-I{tmp_path / 'runtime'}",
                "-c",
                str(src),
                "-o",
                str(obj),
            ],
            check=True,
        )
        nm = subprocess.run(
            [ARM_GCC.replace("gcc", "nm"), "-u", str(obj)], capture_output=True, text=True, check=True
        ).stdout
        undefined |= {line.split()[-1] for line in nm.splitlines() if line.strip()}
    undefined -= {s for s in undefined if s.startswith("edgeq_")}  # defined by the other objects
    libc = {s for s in undefined if not s.startswith("__aeabi_")}  # __aeabi_*: libgcc helpers (soft double)
    assert libc <= {"memcpy", "memset"}, libc


def test_the_same_sources_serve_dsp_and_portable_cores():
    m4 = emit_c(small_program(), target="cortex-m4")
    rv = emit_c(small_program(), target="rv32imc-esp32c3")
    assert set(m4) == set(rv)
    for name in m4:  # only the generated-for comment differs
        assert m4[name].replace(b"cortex-m4", b"T") == rv[name].replace(b"rv32imc-esp32c3", b"T"), name


def test_unsupported_op_and_float_output_name_the_tensor_and_what_to_do():
    q = QParams.per_tensor(0.1, 0)
    t = {
        "x": TensorInfo("x", (1, 4), DType.INT8, q),
        "y": TensorInfo("y", (1, 4), DType.FLOAT32, None),
    }
    p = Program(t, (Op(OpKind.DEQUANTIZE, ("x",), ("y",), DequantizeOptions(), "dq_node"),), ("x",), ("y",))
    with pytest.raises(UnsupportedError) as e:
        emit_c(p, target="cortex-m4")
    msg = str(e.value)
    assert "'y'" in msg and "int8" in msg and "\n" not in msg
