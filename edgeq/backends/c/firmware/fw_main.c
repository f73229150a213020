/*
 * Test firmware: runs the generated model on the inputs embedded by edgeq (test_inputs.c) and hands the outputs
 * to the host through semihosting (file edgeq_outputs.bin in QEMU's working directory).
 *
 * Instruction counting: edgeq_mark() is called right before and right after every edgeq_run(), then twice in a
 * row (the cost of the marks themselves); edgeq_profile_mark() is called after every op in EDGEQ_PROFILE
 * builds.  Both are empty and never inlined, so the counting plugin sees their entry addresses.
 *
 * Stack: the unused stack is filled with a pattern before the first inference; afterwards the deepest
 * overwritten word gives the stack actually used (written to edgeq_stats.bin).
 */
#include <stdint.h>

#include "model.h"
#include "semihost.h"

extern const int8_t edgeq_test_inputs[];
extern const uint32_t edgeq_test_count;
extern uint32_t _sstack, _estack;

#define STACK_PATTERN 0xA5A5A5A5u

static int8_t outputs[EDGEQ_OUTPUT_SIZE > 0 ? EDGEQ_OUTPUT_SIZE : 1];

__attribute__((noinline, used)) void edgeq_mark(void)
{
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline, used)) void edgeq_profile_mark(void)
{
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void paint_stack(void)
{
    volatile uint32_t *p = &_sstack;
    /* Stop well below the current frame. */
    volatile uint32_t *limit = (volatile uint32_t *)((uintptr_t)__builtin_frame_address(0) - 256);
    while (p < limit) {
        *p++ = STACK_PATTERN;
    }
}

static uint32_t stack_used(void)
{
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == STACK_PATTERN) {
        p++;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

int main(void)
{
    const int32_t out = sh_open_write("edgeq_outputs.bin");
    if (out < 0) {
        sh_write0("edgeq firmware: cannot open edgeq_outputs.bin on the host\n");
        return 3;
    }
    paint_stack();
    for (uint32_t i = 0; i < edgeq_test_count; i++) {
        edgeq_mark();
        const int rc = edgeq_run(edgeq_test_inputs + (uint32_t)EDGEQ_INPUT_SIZE * i, outputs);
        edgeq_mark();
        if (rc != 0) {
            sh_write0("edgeq firmware: edgeq_run failed\n");
            return 4;
        }
        if (sh_write(out, outputs, EDGEQ_OUTPUT_SIZE) != 0) {
            sh_write0("edgeq firmware: writing outputs to the host failed\n");
            return 5;
        }
    }
    edgeq_mark();
    edgeq_mark();
    sh_close(out);
    const uint32_t stats[2] = {0x45444751u /* "QGDE" */, stack_used()};
    const int32_t st = sh_open_write("edgeq_stats.bin");
    if (st >= 0) {
        (void)sh_write(st, stats, sizeof stats);
        sh_close(st);
    }
    return 0;
}
