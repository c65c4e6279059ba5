/* fuzz_unpack.c - libFuzzer harness for unpack_archive: each input is written to a temporary
 * file and unpacked into a fresh temporary directory, which is then removed. Crashes, sanitizer
 * reports, leaks, or anything left outside the scratch directory are findings.
 *
 * Not built by default. Build and run from the repository root:
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *       tests/fuzz/fuzz_unpack.c fetch/unpack.c -larchive -o /tmp/fuzz_unpack
 *   mkdir -p /tmp/fuzz_unpack_corpus && /tmp/fuzz_unpack -max_total_time=60 \
 *       /tmp/fuzz_unpack_corpus
 * Seed the corpus with small zip/tar/tar.gz files for better coverage. Small limits keep each
 * run fast (DAGY_UNPACK_MAX_* are not read here). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/unpack.h"

static char scratch[64]; /* one directory per fuzzing process */

/* Creates the per-process scratch directory once. */
static int ensure_scratch(void)
{
    if (scratch[0])
        return 0;
    snprintf(scratch, sizeof scratch, "/tmp/fuzz-unpack-XXXXXX");
    if (!mkdtemp(scratch)) {
        scratch[0] = '\0';
        return -1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char archive[128], dest[128], err[UNPACK_ERR_MAX];
    if (ensure_scratch())
        abort();
    snprintf(archive, sizeof archive, "%s/input", scratch);
    snprintf(dest, sizeof dest, "%s/out", scratch);
    FILE *fp = fopen(archive, "wb");
    if (!fp || fwrite(data, 1, size, fp) != size || fclose(fp))
        abort();
    unpack_limits lim = {.max_total_bytes = 64u << 20, .max_entries = 1000, .max_ratio = 200};
    unpack_stats st;
    err[0] = '\0';
    int rc = unpack_archive(archive, dest, &lim, &st, err);
    /* A refusal must say why and leave nothing; success leaves a tree we remove. */
    if (rc && (!err[0] || access(dest, F_OK) == 0))
        abort();
    if (!rc && unpack_rmtree(dest))
        abort();
    /* Only the input file may remain in the scratch directory. */
    if (unlink(archive) || rmdir(scratch) || mkdir(scratch, 0700))
        abort();
    return 0;
}
