/*
 * Bare-metal start-up for Cortex-M under QEMU: vector table, Reset_Handler (FPU on, .data copied, .bss zeroed),
 * fault handlers that report through semihosting and exit with status 0x7f.
 */
#include <stdint.h>

#include "semihost.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

void Reset_Handler(void);
void edgeq_fault_handler(void);

__attribute__((noreturn, used)) void edgeq_start(void)
{
    /* Word loops written out (not memcpy) so nothing here runs before .data and .bss are in place. */
    volatile uint32_t *src = &_sidata;
    volatile uint32_t *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    sh_exit(main());
}

/* Naked: the FPU (CP10/CP11 in CPACR) must be enabled before any compiled code may touch an FP register. */
__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    __asm__ volatile(
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
        "ldr r0, =0xE000ED88\n"
        "ldr r1, [r0]\n"
        "orr r1, r1, #(0xF << 20)\n"
        "str r1, [r0]\n"
        "dsb\n"
        "isb\n"
#endif
        "b edgeq_start\n");
}

void edgeq_fault_handler(void)
{
    sh_write0("edgeq firmware: fault (HardFault/MemManage/BusFault/UsageFault)\n");
    sh_exit(0x7f);
}

__attribute__((section(".vectors"), used)) void (*const edgeq_vectors[16])(void) = {
    (void (*)(void))(&_estack),
    Reset_Handler,
    edgeq_fault_handler, /* NMI */
    edgeq_fault_handler, /* HardFault */
    edgeq_fault_handler, /* MemManage */
    edgeq_fault_handler, /* BusFault */
    edgeq_fault_handler, /* UsageFault */
    edgeq_fault_handler, /* SecureFault (v8-M) */
    0,
    0,
    0,
    edgeq_fault_handler, /* SVCall */
    edgeq_fault_handler, /* DebugMonitor */
    0,
    edgeq_fault_handler, /* PendSV */
    edgeq_fault_handler, /* SysTick */
};
