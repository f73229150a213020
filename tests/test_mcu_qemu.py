"""Generated C on emulated Cortex-M cores (QEMU system emulation, semihosting, edgeq's counting plugin).

Outputs must equal the reference interpreter on every element; instruction counts are QEMU TCG counts
between marker calls around edgeq_run, identical from run to run (they are not cycles).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_c_helpers import ProgramBuilder, benchmark_qdq, random_inputs, reference_outputs

from edgeq.backends.c import generate
from edgeq.backends.c.firmware import MACHINES
from edgeq.devices.qemu_mcu import run_firmware, run_on_mcu, run_sources
from edgeq.errors import DeviceError

_MISSING = [tool for tool in ("arm-none-eabi-gcc", "qemu-system-arm", "gcc") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"{', '.join(_MISSING)} not installed (apt-get install --no-install-recommends gcc-arm-none-eabi "
    "libnewlib-arm-none-eabi qemu-system-arm gcc)",
)

#: TensorFlow Lite Micro + CMSIS-NN on the same emulated Cortex-M4 (shared/models/README.md).
TFLM_DIGITS_INSTRUCTIONS, TFLM_DIGITS_ARENA = 947_207, 8_308
TFLM_MBV2_INSTRUCTIONS = 197_056_295


def conv_bar_program():
    b = ProgramBuilder(11)
    return b.program([b.conv(b.input((1, 16, 16, 8)), 16, 3, pad=1)])


def test_conv_16x16x8_to_16_on_m4_is_exact_and_under_1_3m_instructions():
    p = conv_bar_program()
    x = random_inputs(p, 2)
    want = reference_outputs(p, x)
    dsp = run_on_mcu(p, x, target="cortex-m4")
    portable = run_on_mcu(
        generate(p, target="cortex-m4", dsp=False), x, target="cortex-m4", machine="mps2-an386"
    )
    assert np.array_equal(dsp.outputs, want) and np.array_equal(portable.outputs, want)
    print(f"conv bar: DSP {dsp.instructions} portable {portable.instructions} instructions")
    assert max(dsp.instructions) <= 1_300_000  # naive -O2 C: ~3.0 M; CMSIS-NN arm_convolve_s8: ~0.85 M
    # The portable kernel (plain C, the same im2col and 2x2 blocking) is slower than the SIMD one.
    assert min(portable.instructions) >= 1.5 * max(dsp.instructions)


@pytest.mark.slow
def test_counts_are_repeatable_and_per_op_profiles_add_up():
    b = ProgramBuilder(12)
    x = b.input((1, 8, 8, 8))
    p = b.program([b.fc(b.reshape(b.mean(b.conv(b.conv(x, 8, 3), 0, 3, depthwise=True)), (1, 8)), 4)])
    inputs = random_inputs(p, 3)
    first = run_on_mcu(p, inputs, target="cortex-m4")
    second = run_on_mcu(p, inputs, target="cortex-m4")
    assert first.instructions == second.instructions
    prof = run_on_mcu(p, inputs, target="cortex-m4", profile=True, histogram=True)
    assert len(prof.op_instructions) == 3 and len(prof.op_instructions[0]) == 4  # the reshape costs nothing
    for total, ops in zip(prof.instructions, prof.op_instructions, strict=True):
        # Each profiling call adds a few instructions; the per-op counts cover the whole run.
        assert 0 <= total - sum(ops) <= 40
    assert prof.functions["edgeq_conv2d_s8"] > 0 and prof.functions["edgeq_depthwise_conv3x3_s8"] > 0
    assert 0 < first.stack_bytes <= first.stack_static_bytes + 256


def test_digits_on_m4_is_bit_exact_on_all_test_images_and_beats_tflm(tmp_path, shared_models):
    from edgeq.lower import lower

    program = lower(benchmark_qdq(shared_models, "digits", tmp_path))
    images = np.load(shared_models / "digits_test_inputs.npy", allow_pickle=False)
    q = np.stack([program.quantize_input("input", x[None]).ravel() for x in images])
    cm = generate(program, target="cortex-m4")
    r = run_on_mcu(cm, q, target="cortex-m4")
    assert np.array_equal(r.outputs, reference_outputs(program, q))
    print(f"digits M4: {r.instructions_per_inference} instructions, arena {cm.plan.arena_size} B")
    assert r.instructions_per_inference < TFLM_DIGITS_INSTRUCTIONS
    assert cm.plan.arena_size < TFLM_DIGITS_ARENA


@pytest.mark.parametrize("target", ["cortex-m7", "cortex-m33", "cortex-m55"])
def test_digits_on_other_cores(tmp_path, shared_models, target):
    from edgeq.lower import lower

    program = lower(benchmark_qdq(shared_models, "digits", tmp_path))
    images = np.load(shared_models / "digits_test_inputs.npy", allow_pickle=False)[:20]
    q = np.stack([program.quantize_input("input", x[None]).ravel() for x in images])
    r = run_on_mcu(program, q, target=target)
    assert np.array_equal(r.outputs, reference_outputs(program, q))
    assert (
        r.machine
        == {"cortex-m7": "mps2-an500", "cortex-m33": "mps2-an505", "cortex-m55": "mps3-an547"}[target]
    )


@pytest.mark.slow
def test_mobilenet_v2_on_m4_is_bit_exact_and_beats_tflm(tmp_path, shared_models):
    from edgeq.lower import lower

    program = lower(benchmark_qdq(shared_models, "mbv2_32", tmp_path))
    images = np.load(shared_models / "mbv2_32_test_inputs.npy", allow_pickle=False)[:1]
    q = np.stack([program.quantize_input("input", x[None]).ravel() for x in images])
    cm = generate(program, target="cortex-m4")
    r = run_on_mcu(cm, q, target="cortex-m4")
    assert np.array_equal(r.outputs, reference_outputs(program, q))
    print(f"mbv2 M4: {r.instructions_per_inference} instructions, arena {cm.plan.arena_size} B")
    assert r.instructions_per_inference < TFLM_MBV2_INSTRUCTIONS
    assert cm.plan.arena_size <= 1.05 * cm.plan.lower_bound


def test_a_faulting_model_is_a_device_error(tmp_path):
    files = {
        "model.h": b"#include <stdint.h>\n#define EDGEQ_INPUT_SIZE 4\n#define EDGEQ_OUTPUT_SIZE 4\n"
        b"int edgeq_run(const int8_t *input, int8_t *output);\n",
        # An access to unmapped memory: QEMU raises a bus fault, the harness reports it.
        "model.c": b'#include "model.h"\nint edgeq_run(const int8_t *i, int8_t *o)\n'
        b"{ (void)i; *(volatile int8_t *)0x5fff0000u = 1; o[0] = 0; return 0; }\n",
    }
    with pytest.raises(DeviceError, match="faulted"):
        run_sources(files, np.zeros((1, 4), np.int8), input_size=4, output_size=4, target="cortex-m4")


def test_machine_table_covers_the_profiles():
    from edgeq.backends.c.firmware import machine_for
    from edgeq.config import list_targets

    for t in list_targets():
        if t.kind.value == "mcu":
            assert machine_for(t).name in {m.name for m in MACHINES.values()}
    assert run_firmware  # the low-level runner is public for custom firmware


@pytest.mark.skipif(
    shutil.which("riscv64-unknown-elf-gcc") is None or shutil.which("qemu-system-riscv32") is None,
    reason="RISC-V toolchain or QEMU not installed (apt-get install --no-install-recommends "
    "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc)",
)
def test_digits_on_rv32imc_portable_kernels(tmp_path, shared_models):
    from edgeq.lower import lower

    program = lower(benchmark_qdq(shared_models, "digits", tmp_path))
    images = np.load(shared_models / "digits_test_inputs.npy", allow_pickle=False)[:10]
    q = np.stack([program.quantize_input("input", x[None]).ravel() for x in images])
    cm = generate(program, target="rv32imc-esp32c3")
    assert not cm.dsp
    r = run_on_mcu(cm, q, target="rv32imc-esp32c3")
    assert np.array_equal(r.outputs, reference_outputs(program, q))
    assert r.machine == "virt" and r.size.library < 16_384  # memcpy/memset and software doubles only
