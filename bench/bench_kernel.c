/*
 * bench_kernel.c - EMA update kernels against memcpy, in one process.
 *
 * For each instruction set the CPU runs (sse2, avx2, avx512) and each value
 * dtype (F32, BF16, F16 into a float32 shadow; F64 into float64): the
 * in-place update of a 256 MiB shadow, reported as GB/s with 12 bytes per
 * element (read shadow, read value, write shadow; 24 for F64) as the
 * task defines it, next to memcpy of the same 256 MiB in the same binary,
 * with 1 and 2 threads (the range split in halves). Medians of 5 runs
 * after a warm-up; the ratio kernel/memcpy uses memcpy's bytes moved
 * (2 x 256 MiB: read and write). The same update is also measured into a
 * separate 256 MiB buffer, as a transaction writes its new shadow into the
 * spare one (for F32, BF16 and F64 the AVX2/AVX-512 kernels stream those
 * stores past the cache).
 *
 *     bench_kernel [--mib N] [--runs R] [--isa sse2|avx2|avx512|auto] [--tsv]
 *
 * --isa measures one instruction set only (auto: the one the daemon picks
 * on this CPU without EMAD_ISA). --tsv prints tab-separated rows for other
 * programs (bench/bench_torch.py) instead of the table:
 *
 *     default  ISA                  the kernels the daemon picks
 *     memcpy   -    -      THREADS  GB/s
 *     ema      ISA  DTYPE  THREADS  GB/s     in place
 *     ema-sep  ISA  DTYPE  THREADS  GB/s     into a separate buffer
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/dtype.h"
#include "store/ema.h"

typedef struct work {
    int dtype; /* 0: memcpy */
    void *dst;
    const void *shadow; /* NULL: dst, in place */
    const void *src;
    size_t n; /* elements (bytes for memcpy) */
} work;

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *
run(void *arg)
{
    const work *w = arg;

    if (w->dtype == 0)
        memcpy(w->dst, w->src, w->n);
    else
        (void)ema_update(w->dst, w->shadow != NULL ? w->shadow : w->dst, w->src, w->dtype, w->n,
                         0.999);
    return NULL;
}

/* Seconds for one pass over w with `threads` threads (1 or 2). */
static double
pass(const work *w, int threads)
{
    work part[2];
    pthread_t th;
    size_t esz = w->dtype == 0 ? 1 : (w->dtype == EMAD_F64 ? 8 : 4);
    size_t vsz = w->dtype == 0 ? 1 : dtype_size(w->dtype);
    double t0 = now();

    if (threads == 1) {
        run((void *)w);
        return now() - t0;
    }
    part[0] = part[1] = *w;
    part[0].n = w->n / 2;
    part[1].n = w->n - part[0].n;
    part[1].dst = (char *)w->dst + part[0].n * esz;
    if (w->shadow != NULL)
        part[1].shadow = (const char *)w->shadow + part[0].n * esz;
    part[1].src = (const char *)w->src + part[0].n * vsz;
    pthread_create(&th, NULL, run, &part[1]);
    run(&part[0]);
    pthread_join(th, NULL);
    return now() - t0;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Median seconds of `runs` passes after one warm-up. */
static double
median(const work *w, int threads, int runs)
{
    double t[32];

    (void)pass(w, threads);
    for (int i = 0; i < runs; i++)
        t[i] = pass(w, threads);
    qsort(t, (size_t)runs, sizeof(t[0]), cmp_double);
    return t[runs / 2];
}

int
main(int argc, char **argv)
{
    size_t mib = 256, bytes;
    int runs = 5, tsv = 0;
    const char *only = NULL;
    static const int dtypes[] = {EMAD_F32, EMAD_BF16, EMAD_F16, EMAD_F64};
    static const char *const isas[] = {"sse2", "avx2", "avx512"};
    unsigned char *a, *b, *c;
    double mc[3];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc)
            mib = (size_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--isa") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--tsv") == 0)
            tsv = 1;
        else {
            fprintf(stderr, "usage: bench_kernel [--mib N] [--runs R] [--isa NAME] [--tsv]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 31 || mib < 1) {
        fprintf(stderr, "bench_kernel: --runs 1..31, --mib >= 1\n");
        return 2;
    }
    if (only != NULL && strcmp(only, "auto") == 0)
        only = ema_set_isa(NULL);
    else if (only != NULL && strcmp(ema_set_isa(only), only) != 0) {
        fprintf(stderr, "bench_kernel: --isa %s: not one of sse2, avx2, avx512 this CPU runs\n",
                only);
        return 2;
    }
    bytes = mib << 20;
    a = aligned_alloc(64, bytes);
    b = aligned_alloc(64, bytes);
    c = aligned_alloc(64, bytes);
    if (a == NULL || b == NULL || c == NULL) {
        fprintf(stderr, "bench_kernel: out of memory\n");
        return 1;
    }
    /* Finite values everywhere (a float 1.0 pattern for every dtype's bytes is not needed). */
    for (size_t i = 0; i < bytes / 4; i++) {
        float f = (float)(i % 1000) * 0.001f;
        memcpy(a + 4 * i, &f, 4);
        memcpy(b + 4 * i, &f, 4);
    }
    if (tsv)
        printf("default\t%s\n", ema_set_isa(NULL));
    else
        printf("bench_kernel: %zu MiB shadow per pass, median of %d, EMA counted as 12 "
               "bytes/element (24 for F64)\n",
               mib, runs);
    for (int th = 1; th <= 2; th++) {
        work w = {0, a, NULL, b, bytes};
        mc[th] = 2.0 * (double)bytes / median(&w, th, runs) / 1e9;
        if (tsv)
            printf("memcpy\t-\t-\t%d\t%.3f\n", th, mc[th]);
        else
            printf("  memcpy %zu MiB, %d thread%s: %.2f GB/s (read + write)\n", mib, th,
                   th == 1 ? "" : "s", mc[th]);
    }
    if (!tsv)
        printf("  %-7s %-5s %8s %8s %11s %11s %8s %8s\n", "isa", "value", "1 thr", "2 thr",
               "1 thr/mcpy", "2 thr/mcpy", "sep 1", "sep 2");
    for (size_t k = 0; k < sizeof(isas) / sizeof(isas[0]); k++) {
        if (only != NULL && strcmp(only, isas[k]) != 0)
            continue;
        if (strcmp(ema_set_isa(isas[k]), isas[k]) != 0)
            continue; /* the CPU lacks it */
        for (size_t d = 0; d < sizeof(dtypes) / sizeof(dtypes[0]); d++) {
            int dt = dtypes[d];
            size_t ssz = dt == EMAD_F64 ? 8 : 4;
            work w = {dt, a, NULL, b, bytes / ssz}, sep = {dt, c, a, b, bytes / ssz};
            double g[3], gs[3];

            for (int th = 1; th <= 2; th++) {
                g[th] = 3.0 * (double)(w.n * ssz) / median(&w, th, runs) / 1e9;
                gs[th] = 3.0 * (double)(sep.n * ssz) / median(&sep, th, runs) / 1e9;
                if (tsv)
                    printf("ema\t%s\t%s\t%d\t%.3f\nema-sep\t%s\t%s\t%d\t%.3f\n", isas[k],
                           dtype_name(dt), th, g[th], isas[k], dtype_name(dt), th, gs[th]);
            }
            if (!tsv)
                printf("  %-7s %-5s %8.2f %8.2f %11.2f %11.2f %8.2f %8.2f\n", isas[k],
                       dtype_name(dt), g[1], g[2], g[1] / mc[1], g[2] / mc[2], gs[1], gs[2]);
        }
    }
    if (!tsv)
        printf("  (default kernels on this CPU: %s)\n", ema_set_isa(NULL));
    if (!tsv)
        printf("  (sep 1, sep 2: GB/s of the update into a separate buffer, as a transaction "
               "writes the spare shadow)\n");
    free(a);
    free(b);
    free(c);
    return 0;
}
