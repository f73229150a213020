/*
 * edgeq's instruction counter for qemu-system-arm / qemu-system-riscv32 (TCG plugin API version 1).
 *
 * Arguments:  out=FILE  marks=ADDR[:ADDR...]  [hist=on]   (addresses in hex, e.g. marks=0x1a4:0x1b0)
 *
 * Every executed translation block adds its instruction count to one counter (inline, no helper call).  A
 * block that starts at a marker address instead calls back, which appends "MARK_INDEX COUNT" to a log and
 * then adds the block's own instructions: COUNT is the number of instructions executed before the marker,
 * so the difference between two log lines is exact and identical from run to run.  At exit the log and the
 * total are written to FILE.  Firmware calls an empty noinline marker function around what it measures.
 * With hist=on every translation block also counts its own instructions, written as "pc PC COUNT" lines: a
 * per-function profile once the addresses are mapped to symbols.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_plugin_v1.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

#define MAX_MARKS 16

static uint64_t insns;
static uint64_t marks[MAX_MARKS];
static int n_marks;
static char out_path[4096];

struct mark_hit {
    uint32_t mark;
    uint64_t count;
};
static struct mark_hit *hits;
static size_t n_hits, cap_hits;

struct tb_count {
    uint64_t pc;
    uint64_t insns;
    struct tb_count *next;
};
static int hist;
static struct tb_count *tb_counts;

struct mark_tb {
    uint32_t mark;
    uint64_t n_insns;
};

static void on_mark(unsigned int vcpu_index, void *userdata)
{
    const struct mark_tb *m = userdata;
    (void)vcpu_index;
    if (n_hits == cap_hits) {
        cap_hits = cap_hits ? 2 * cap_hits : 1024;
        hits = realloc(hits, cap_hits * sizeof *hits);
        if (!hits) {
            qemu_plugin_outs("edgeq icount: out of memory\n");
            exit(70);
        }
    }
    hits[n_hits].mark = m->mark;
    hits[n_hits].count = insns;
    n_hits++;
    insns += m->n_insns;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t pc = qemu_plugin_tb_vaddr(tb);
    (void)id;
    if (hist) {
        struct tb_count *c = calloc(1, sizeof *c);
        if (!c) {
            exit(70);
        }
        c->pc = pc;
        c->next = tb_counts;
        tb_counts = c;
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &c->insns, n);
    }
    for (int i = 0; i < n_marks; i++) {
        if (pc == marks[i]) {
            /* Leaked on purpose: a block may be translated again, and QEMU keeps the pointer. */
            struct mark_tb *m = malloc(sizeof *m);
            if (!m) {
                exit(70);
            }
            m->mark = (uint32_t)i;
            m->n_insns = n;
            qemu_plugin_register_vcpu_tb_exec_cb(tb, on_mark, QEMU_PLUGIN_CB_NO_REGS, m);
            return;
        }
    }
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns, n);
}

static void write_log(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    FILE *f = fopen(out_path, "w");
    if (!f) {
        qemu_plugin_outs("edgeq icount: cannot write the output file\n");
        return;
    }
    for (size_t i = 0; i < n_hits; i++) {
        fprintf(f, "%" PRIu32 " %" PRIu64 "\n", hits[i].mark, hits[i].count);
    }
    for (const struct tb_count *c = tb_counts; c; c = c->next) {
        if (c->insns) {
            fprintf(f, "pc %" PRIx64 " %" PRIu64 "\n", c->pc, c->insns);
        }
    }
    fprintf(f, "total %" PRIu64 "\n", insns);
    fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
        } else if (strncmp(argv[i], "marks=", 6) == 0) {
            char *s = argv[i] + 6;
            while (*s && n_marks < MAX_MARKS) {
                char *end;
                /* Thumb symbols carry bit 0; translation blocks start at the even address. */
                marks[n_marks++] = strtoull(s, &end, 16) & ~(uint64_t)1;
                if (end == s) {
                    return -1;
                }
                s = *end == ':' ? end + 1 : end;
            }
        } else if (strcmp(argv[i], "hist=on") == 0) {
            hist = 1;
        } else {
            return -1;
        }
    }
    if (!out_path[0]) {
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, write_log, NULL);
    return 0;
}
