#include "semihost.h"

#include <string.h>

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE0 0x04
#define SYS_WRITE 0x05
#define SYS_EXIT 0x18
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026
#define MODE_WB 5 /* fopen mode "wb" */

static int32_t sh_call(int32_t op, const void *arg)
{
    register int32_t r0 __asm__(
#if defined(__riscv)
        "a0"
#else
        "r0"
#endif
    ) = op;
    register const void *r1 __asm__(
#if defined(__riscv)
        "a1"
#else
        "r1"
#endif
    ) = arg;
#if defined(__riscv)
    /* The semihosting trap is this exact sequence of three uncompressed instructions. */
    __asm__ volatile(".option push\n.option norvc\n"
                     "slli x0, x0, 0x1f\nebreak\nsrai x0, x0, 7\n.option pop"
                     : "+r"(r0)
                     : "r"(r1)
                     : "memory");
#else
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
#endif
    return r0;
}

int32_t sh_open_write(const char *name)
{
    uint32_t block[3] = {(uint32_t)(uintptr_t)name, MODE_WB, (uint32_t)strlen(name)};
    return sh_call(SYS_OPEN, block);
}

int32_t sh_write(int32_t handle, const void *data, size_t len)
{
    uint32_t block[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)data, (uint32_t)len};
    return sh_call(SYS_WRITE, block);
}

int32_t sh_close(int32_t handle)
{
    uint32_t block[1] = {(uint32_t)handle};
    return sh_call(SYS_CLOSE, block);
}

void sh_write0(const char *text)
{
    (void)sh_call(SYS_WRITE0, text);
}

void sh_exit(int32_t code)
{
    uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    (void)sh_call(SYS_EXIT_EXTENDED, block);
    /* Only reached if the host ignored the request. */
    for (;;) {
    }
}
