"""Every C kernel, compiled with the host gcc under -fsanitize=address,undefined, against the reference.

Each test builds a small program with several configurations of one op family (seeded random weights,
quantization and inputs), emits C, builds it on the host and compares every output element with
:func:`edgeq.lower.run`. Both kernel paths are checked: the portable one, and the DSP one with plain-C
stand-ins for the Arm SIMD intrinsics (the same C that runs on Cortex-M4/M7/M33/M55, see test_mcu_qemu.py).
The arithmetic is the same integer arithmetic, so the expected difference is 0 LSB on every element.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_c_helpers import ProgramBuilder, random_inputs, reference_outputs

from edgeq.backends.c import generate
from edgeq.backends.c.build import compile_host, run_host
from edgeq.lower.program import OpKind

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")

VARIANTS = [pytest.param(False, id="portable"), pytest.param(True, id="dsp-emulated")]


def check(program, tmp_path, dsp: bool, *, samples: int = 6, fc_rescale: str = "double"):
    cmodel = generate(program, target="cortex-m4", dsp=dsp, fc_rescale=fc_rescale)
    exe = compile_host(cmodel.files, tmp_path / "build", emulate_dsp=dsp)
    x = random_inputs(program, samples)
    got = run_host(exe, x, output_size=cmodel.output_size)
    want = reference_outputs(program, x, fc_rescale=fc_rescale)
    diff = np.abs(got.astype(np.int32) - want)
    assert diff.max() == 0, (
        f"{np.count_nonzero(diff)} of {diff.size} elements differ, by up to {diff.max()} LSB"
    )
    return cmodel


@pytest.mark.parametrize("dsp", VARIANTS)
def test_conv2d(tmp_path, dsp):
    b = ProgramBuilder(1)
    outs = [
        b.conv(b.input((1, 9, 7, 8)), 16, 3, act="RELU6"),  # in_c % 4 == 0: vector im2col
        b.conv(b.input((1, 8, 8, 1)), 5, 3),  # one input channel, odd channel count, K = 9 (tail)
        b.conv(b.input((1, 7, 9, 3)), 6, 3, stride=2, pad=1, act="RELU"),  # RGB-like first layer
        b.conv(b.input((1, 5, 5, 12)), 7, 1, pad=0, per_tensor=True),  # 1x1, per-tensor weights
        b.conv(b.input((1, 9, 9, 4)), 8, 3, dilation=2),  # dilation
        b.conv(b.input((1, 6, 6, 8)), 4, 5, stride=2, pad=2),  # 5x5, odd number of output pixels
        b.conv(b.input((1, 4, 4, 4)), 6, 3, big=True),  # multipliers > 0.5: the left-shift requantization
    ]
    cm = check(b.program(outs), tmp_path, dsp)
    assert cm.scratch_bytes > 0  # im2col columns in the arena, for both kernel paths


@pytest.mark.parametrize("dsp", VARIANTS)
def test_depthwise_conv2d(tmp_path, dsp):
    b = ProgramBuilder(2)
    outs = [
        b.conv(b.input((1, 9, 8, 16)), 0, 3, depthwise=True, act="RELU6"),  # the 3x3 fast path
        b.conv(b.input((1, 8, 9, 8)), 0, 3, stride=2, depthwise=True),  # 3x3 stride 2
        b.conv(b.input((1, 2, 2, 4)), 0, 3, depthwise=True),  # every pixel on the border
        b.conv(b.input((1, 7, 7, 6)), 0, 3, depthwise=True),  # channels % 4 != 0
        b.conv(b.input((1, 6, 6, 3)), 0, 3, depthwise=True, multiplier=2),  # depth multiplier 2
        b.conv(b.input((1, 9, 9, 8)), 0, 5, depthwise=True, pad=2),  # 5x5
        b.conv(b.input((1, 9, 9, 4)), 0, 3, depthwise=True, dilation=2),  # dilation
    ]
    check(b.program(outs), tmp_path, dsp)


@pytest.mark.parametrize("dsp", VARIANTS)
@pytest.mark.parametrize("fc_rescale", ["double", "fixed-point"])
def test_fully_connected(tmp_path, dsp, fc_rescale):
    b = ProgramBuilder(3)
    outs = [
        b.fc(b.input((1, 37)), 11),  # odd sizes: tails of both loops
        b.fc(b.input((1, 64)), 10, act="RELU", per_channel=False),
        b.fc(b.input((3, 16)), 8),  # several rows (batch)
    ]
    check(b.program(outs), tmp_path, dsp, fc_rescale=fc_rescale)


@pytest.mark.parametrize("dsp", VARIANTS)
def test_elementwise(tmp_path, dsp):
    b = ProgramBuilder(4)
    a, c = b.input((1, 16, 8, 8)), b.input((1, 16, 8, 8))
    outs = [
        b.add(a, c, act="RELU6"),  # >= 512 elements: rescaling tables
        b.add(b.input((1, 3, 3, 4)), b.input((1, 3, 3, 4)), sub=True),
        b.add(b.input((1, 4, 5, 6)), b.input((1, 1, 1, 6))),  # broadcast
        b.mul(b.input((1, 4, 4, 8)), b.input((1, 4, 4, 8)), act="RELU"),
        b.mul(b.input((1, 2, 3, 5)), b.input((1, 2, 1, 1))),
        b.prelu(b.input((1, 3, 4, 6)), (1, 1, 6)),
    ]
    check(b.program(outs), tmp_path, dsp)


@pytest.mark.parametrize("dsp", VARIANTS)
def test_pooling_and_mean(tmp_path, dsp):
    b = ProgramBuilder(5)
    outs = [
        b.pool(b.input((1, 8, 8, 5)), 2, stride=2),
        b.pool(b.input((1, 7, 7, 3)), 3, stride=2, pad=1, average=True),  # padding not counted
        b.pool(b.input((1, 5, 6, 4)), 3, stride=1, pad=1, act="RELU"),
        b.mean(b.input((1, 6, 5, 7))),
        b.mean(b.input((1, 2, 2, 16))),
    ]
    check(b.program(outs), tmp_path, dsp)


@pytest.mark.parametrize("dsp", VARIANTS)
def test_softmax_and_tables(tmp_path, dsp):
    b = ProgramBuilder(6)
    outs = [
        b.softmax(b.input((1, 10))),
        b.softmax(b.input((2, 3, 7)), beta=0.5),
        b.unary(OpKind.LOGISTIC, b.input((1, 4, 4, 3))),
        b.unary(OpKind.HARD_SWISH, b.input((1, 4, 4, 3))),
        b.unary(OpKind.LEAKY_RELU, b.input((1, 5, 3)), alpha=0.2),
        b.unary(OpKind.RELU, b.input((1, 6))),
        b.unary(OpKind.RELU6, b.input((1, 6))),
        b.requantize(b.input((1, 3, 3, 2))),
    ]
    check(b.program(outs), tmp_path, dsp)


@pytest.mark.parametrize("dsp", VARIANTS)
def test_data_movement(tmp_path, dsp):
    b = ProgramBuilder(7)
    x = b.input((1, 4, 5, 3))
    outs = [
        b.pad(x, ((0, 0), (1, 2), (0, 1), (0, 0))),
        b.concat([x, b.input((1, 4, 5, 2)), b.input((1, 4, 5, 1))], axis=3),
        b.concat([b.input((1, 2, 3, 4)), b.input((1, 1, 3, 4))], axis=1),
        b.transpose(b.input((1, 3, 4, 5)), (0, 3, 1, 2)),
        b.reshape(b.input((1, 2, 3, 4)), (1, 24)),
        b.resize(b.input((1, 3, 4, 2)), (6, 8), bilinear=False),
        b.resize(b.input((1, 3, 4, 2)), (5, 7), bilinear=False, align_corners=True),
        b.resize(b.input((1, 3, 4, 2)), (7, 9), bilinear=True, half_pixel_centers=True),
        b.resize(b.input((1, 4, 4, 3)), (7, 5), bilinear=True, align_corners=True),
    ]
    check(b.program(outs), tmp_path, dsp)


def test_fast_requantization_matches_tflite_arithmetic(tmp_path):
    """edgeq_requant_fast (SMMULR + one rounding add) equals MultiplyByQuantizedMultiplier where it is used:
    shift <= -1 and |x| < 2^30, over 2 million random and edge-case arguments."""
    src = tmp_path / "t.c"
    src.write_text(
        """
#include <stdio.h>
#include "edgeq_fixedpoint.h"
#include "edgeq_simd.h"
static uint64_t s = 88172645463325252ull;
static uint32_t next(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)s; }
int main(void) {
    long bad = 0;
    const int32_t edges[] = {0, 1, -1, 2, -2, (1 << 30) - 1, -(1 << 30) + 1, 12345, -12345};
    for (long i = 0; i < 2000000; i++) {
        int32_t x = (int32_t)(next() % ((1u << 31) - 1)) - ((1 << 30) - 1);
        if (i % 97 == 0) x = edges[(i / 97) % 9];
        int32_t m = (int32_t)((1u << 30) + next() % (1u << 30));
        if (i % 89 == 0) m = 1 << 30;
        int32_t shift = -1 - (int32_t)(next() % 31);
        if (edgeq_requant_fast(x, m, shift) != edgeq_requant(x, m, shift)) bad++;
    }
    printf("%ld\\n", bad);
    return bad != 0;
}
"""
    )
    from edgeq.backends.c.build import SANITIZE, run_tool
    from edgeq.backends.c.runtime_files import RUNTIME_DIR

    exe = tmp_path / "t"
    run_tool(
        [
            "gcc",
            "-std=c99",
            "-O1",
            "-DEDGEQ_EMULATE_DSP",
            *SANITIZE,
            f"-I{RUNTIME_DIR}",
            str(src),
            "-o",
            str(exe),
        ]
    )
    proc = run_tool([str(exe)])
    assert proc.stdout.strip() == "0"
