/*
 * Semihosting: the firmware's only channel to the host (QEMU with -semihosting-config enable=on,target=native).
 * Arm: "bkpt 0xab" with the operation in r0 and its argument in r1.  RISC-V: the slli/ebreak/srai sequence.
 */
#ifndef EDGEQ_SEMIHOST_H
#define EDGEQ_SEMIHOST_H

#include <stddef.h>
#include <stdint.h>

/* Open the host file NAME (relative to QEMU's working directory) for writing; returns a handle or -1. */
int32_t sh_open_write(const char *name);
/* Write LEN bytes; returns 0 when everything was written. */
int32_t sh_write(int32_t handle, const void *data, size_t len);
int32_t sh_close(int32_t handle);
/* Print a NUL-terminated string on QEMU's stdout. */
void sh_write0(const char *text);
/* End the emulation with exit status CODE (SYS_EXIT_EXTENDED, ADP_Stopped_ApplicationExit). */
__attribute__((noreturn)) void sh_exit(int32_t code);

#endif
