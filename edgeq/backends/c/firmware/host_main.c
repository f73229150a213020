/*
 * Host test driver for generated models: reads N inputs of EDGEQ_INPUT_SIZE bytes from the file argv[1] and
 * writes N outputs of EDGEQ_OUTPUT_SIZE bytes to argv[2].  Used to check the generated C with the host
 * compiler (under -fsanitize=address,undefined) against the reference interpreter.
 */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUTS.bin OUTPUTS.bin\n", argv[0]);
        return 2;
    }
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out) {
        perror("edgeq host driver");
        return 2;
    }
    /* Heap buffers of exactly the sizes, so AddressSanitizer sees any access past them. */
    int8_t *x = malloc(EDGEQ_INPUT_SIZE), *y = malloc(EDGEQ_OUTPUT_SIZE);
    if (!x || !y) {
        return 2;
    }
    while (fread(x, 1, EDGEQ_INPUT_SIZE, in) == EDGEQ_INPUT_SIZE) {
        if (edgeq_run(x, y) != 0) {
            fprintf(stderr, "edgeq_run failed\n");
            return 1;
        }
        if (fwrite(y, 1, EDGEQ_OUTPUT_SIZE, out) != EDGEQ_OUTPUT_SIZE) {
            return 2;
        }
    }
    free(x);
    free(y);
    fclose(in);
    return fclose(out) == 0 ? 0 : 2;
}
