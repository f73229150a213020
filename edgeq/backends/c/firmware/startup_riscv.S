/*
 * Bare-metal start-up for RV32 under QEMU 'virt' (-bios none: the hart starts at 0x80000000, machine mode):
 * global and stack pointers, a trap vector that reports any exception through semihosting and exits with
 * status 0x7f, .data copied, .bss zeroed, then main() and SYS_EXIT_EXTENDED with its return value.
 */
    .section .text.start, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, _estack
    la t0, edgeq_trap
    .option push
    .option arch, +zicsr
    csrw mtvec, t0
    .option pop
    la a0, _sidata
    la a1, _sdata
    la a2, _edata
1:  bgeu a1, a2, 2f
    lw t0, 0(a0)
    sw t0, 0(a1)
    addi a0, a0, 4
    addi a1, a1, 4
    j 1b
2:  la a1, _sbss
    la a2, _ebss
3:  bgeu a1, a2, 4f
    sw zero, 0(a1)
    addi a1, a1, 4
    j 3b
4:  call main
    call sh_exit
5:  j 5b

    .text
    .balign 4
edgeq_trap:
    la sp, _estack
    la a0, edgeq_fault_message
    call sh_write0
    li a0, 0x7f
    call sh_exit
6:  j 6b

    .section .rodata
edgeq_fault_message:
    .string "edgeq firmware: trap (illegal instruction or access fault)\n"
