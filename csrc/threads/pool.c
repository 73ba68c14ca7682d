/* Persistent pthread pool behind qc_parallel_for: workers spin briefly for the next job, then
 * sleep on a condition variable. */
#include "threads/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#ifndef QC_NO_X86
#include <immintrin.h> /* _mm_pause */
#define QC_PAUSE() _mm_pause()
#else
#define QC_PAUSE() ((void)0)
#endif

#define QC_POOL_MAX 256
#define QC_JOB_CLOSED 0x80000000u

/* How long a worker that finished a job, and a caller waiting for its workers, poll before
 * sleeping. Waking a sleeping thread takes tens of microseconds (more in a VM), as long as a
 * small kernel call; back-to-back calls (a network's layers, a benchmark loop) find the
 * workers still polling. */
#define QC_SPIN_NS 200000L

typedef struct {
    pthread_mutex_t lock;      /* held by the caller that owns the pool for one job */
    pthread_mutex_t state;     /* guards the fields below */
    pthread_cond_t wake[QC_POOL_MAX]; /* worker w waits on wake[w] for a job that needs it */
    pthread_cond_t done;       /* the caller waits here for the job's workers */
    atomic_ulong generation;   /* written under `state`; polled without it */
    int nworkers;              /* threads started (excluding callers) */
    /* The current job's workers: QC_JOB_CLOSED once the caller has run out of tasks, plus
     * how many workers joined and have not finished. A worker joins only while the job is
     * open, so the caller never waits for a worker that wakes late (a sleeping thread can
     * take hundreds of microseconds to wake in a VM, longer than a small job): once closed,
     * it waits only for the workers running tasks. */
    atomic_uint job;
    qc_task_fn fn;
    void *ctx;
    int job_workers;           /* how many workers take part in the current job */
    int nparts;                /* job_workers + 1: the caller is part 0, worker w part w + 1 */
} qc_pool;

/* The tasks of a job are split in nparts contiguous ranges, one per taker, each with its own
 * counter (a cache line apiece): a taker runs its own range first, then takes what is left
 * of the others'. Consecutive calls (a network's layers) then give a thread the same share
 * of the pixels (or channels) as in the call before, whose results are still in its cache,
 * where a shared counter hands each thread tasks at random (on this 2-vCPU EPYC, 2 threads:
 * ResNeXt's g32 512 @14 720-770 -> 580-600 us at batch 8 and 108-124 -> 94-104 us at batch
 * 1, ResNet-18's 3x3 64 @56 320 -> 313 us; whole networks within this VM's noise). A taker
 * that starts late (a worker woken from sleep) or runs slow leaves its range to the others,
 * as with one counter. */
typedef struct {
    _Alignas(64) atomic_size_t next;
    size_t end;
} qc_range;

static qc_range g_ranges[QC_POOL_MAX];

static qc_pool g_pool = {.lock = PTHREAD_MUTEX_INITIALIZER,
                         .state = PTHREAD_MUTEX_INITIALIZER,
                         .done = PTHREAD_COND_INITIALIZER}; /* wake[]: qc_pool_init */
/* set by set_num_threads while other threads may be inside kernels: atomic, and each
 * qc_parallel_for reads it once (relaxed: any value it reads is a valid thread count) */
static atomic_int g_num_threads = 1;
static int g_pool_initialized;

int qc_max_threads(void) { return QC_POOL_MAX; }
int qc_get_num_threads(void) { return atomic_load_explicit(&g_num_threads, memory_order_relaxed); }

int qc_set_num_threads(int n) {
    if (n < 1 || n > QC_POOL_MAX) return -1;
    atomic_store_explicit(&g_num_threads, n, memory_order_relaxed);
    return 0;
}

size_t qc_split_count(size_t n, size_t grain) {
    size_t t = (size_t)qc_get_num_threads();
    if (grain == 0) grain = 1;
    size_t by_size = n / grain;
    if (by_size < 1) by_size = 1;
    return by_size < t ? by_size : t;
}

/* Run part `part`'s range, then the rest of every other part's, in turn after it. */
static void run_tasks(qc_task_fn fn, void *ctx, int part) {
    const int nparts = g_pool.nparts;
    for (int k = 0; k < nparts; k++) {
        qc_range *r = &g_ranges[(part + k) % nparts];
        for (;;) {
            const size_t i = atomic_fetch_add(&r->next, 1);
            if (i >= r->end) break;
            fn(ctx, i);
        }
    }
}

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Poll until the pool's generation differs from `seen` (next != 0) or no worker is inside
 * the job (next == 0), for at most QC_SPIN_NS; returns whether that happened. After the first
 * QC_SPIN_YIELD_NS each poll yields the core: when the machine is busy, a thread that polls
 * must not keep the thread it waits for (or the caller's next call) off the CPU. */
#define QC_SPIN_YIELD_NS 20000L
static int spin_until(int next, unsigned long seen) {
    const long t0 = now_ns();
    int yielding = 0;
    for (int i = 1;; i++) {
        if (next ? atomic_load(&g_pool.generation) != seen
                 : (atomic_load(&g_pool.job) & ~QC_JOB_CLOSED) == 0)
            return 1;
        if (yielding) {
            sched_yield();
        } else {
            QC_PAUSE();
        }
        if (i % 64 == 0 || yielding) {
            const long dt = now_ns() - t0;
            if (dt > QC_SPIN_NS) return 0;
            yielding = dt > QC_SPIN_YIELD_NS;
        }
    }
}

/* A worker polls for the next job only after one it took part in: one that a job did not
 * need (set_num_threads lowered, or a job of few tasks) sleeps until a job signals it, so
 * workers beyond the thread count cost nothing (they polled for 200 us after every call). */
static void *worker_main(void *arg) {
    int id = (int)(intptr_t)arg;
    unsigned long seen = 0;
    int needed = 1;
    for (;;) {
        if (needed) spin_until(1, seen);
        pthread_mutex_lock(&g_pool.state);
        while (atomic_load(&g_pool.generation) == seen ||
               (!needed && id >= g_pool.job_workers)) {
            seen = atomic_load(&g_pool.generation);
            pthread_cond_wait(&g_pool.wake[id], &g_pool.state);
        }
        seen = atomic_load(&g_pool.generation);
        /* join, unless not needed or the caller already closed the job; under `state`, so
         * the job cannot be replaced by the next one between reading it and joining */
        unsigned j = atomic_load(&g_pool.job);
        int joined = 0;
        while (id < g_pool.job_workers && !(j & QC_JOB_CLOSED) &&
               !(joined = atomic_compare_exchange_weak(&g_pool.job, &j, j + 1))) {
        }
        needed = joined;
        if (!joined) {
            pthread_mutex_unlock(&g_pool.state);
            continue;
        }
        qc_task_fn fn = g_pool.fn;
        void *ctx = g_pool.ctx;
        pthread_mutex_unlock(&g_pool.state);
        run_tasks(fn, ctx, id + 1);
        if (atomic_fetch_sub(&g_pool.job, 1) == (QC_JOB_CLOSED | 1u)) {
            /* the last one out of a closed job: under the lock, as the caller checks the
             * count and waits holding it */
            pthread_mutex_lock(&g_pool.state);
            pthread_cond_signal(&g_pool.done);
            pthread_mutex_unlock(&g_pool.state);
        }
    }
    return NULL;
}

/* Start workers up to `want`; returns how many are running. */
static int ensure_workers(int want) {
    while (g_pool.nworkers < want) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)g_pool.nworkers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        g_pool.nworkers++;
    }
    return g_pool.nworkers;
}

void qc_parallel_for(size_t ntasks, qc_task_fn fn, void *ctx) {
    if (ntasks == 0) return;
    int threads = qc_get_num_threads();
    if (ntasks == 1 || threads <= 1 || pthread_mutex_trylock(&g_pool.lock) != 0) {
        for (size_t i = 0; i < ntasks; i++) fn(ctx, i);
        return;
    }
    int helpers = (int)QC_MIN((size_t)threads - 1, ntasks - 1);
    pthread_mutex_lock(&g_pool.state);
    helpers = QC_MIN(helpers, ensure_workers(helpers));
    g_pool.fn = fn;
    g_pool.ctx = ctx;
    g_pool.job_workers = helpers;
    atomic_store(&g_pool.job, 0u); /* open, nobody in: the last job's workers all left */
    g_pool.nparts = helpers + 1;
    const size_t per = ntasks / (size_t)g_pool.nparts, extra = ntasks % (size_t)g_pool.nparts;
    for (size_t p = 0, start = 0; p < (size_t)g_pool.nparts; p++) {
        atomic_store(&g_ranges[p].next, start);
        start += per + (p < extra);
        g_ranges[p].end = start;
    }
    atomic_fetch_add(&g_pool.generation, 1);
    for (int w = 0; w < helpers; w++) pthread_cond_signal(&g_pool.wake[w]);
    pthread_mutex_unlock(&g_pool.state);

    run_tasks(fn, ctx, 0);

    /* every task is taken: close the job, then wait for the workers that joined it */
    if ((atomic_fetch_or(&g_pool.job, QC_JOB_CLOSED) & ~QC_JOB_CLOSED) != 0 &&
        !spin_until(0, 0)) {
        pthread_mutex_lock(&g_pool.state);
        while ((atomic_load(&g_pool.job) & ~QC_JOB_CLOSED) > 0)
            pthread_cond_wait(&g_pool.done, &g_pool.state);
        pthread_mutex_unlock(&g_pool.state);
    }
    pthread_mutex_unlock(&g_pool.lock);
}

/* After fork() only the forking thread exists in the child: forget the workers. */
static void after_fork_child(void) {
    pthread_mutex_init(&g_pool.lock, NULL);
    pthread_mutex_init(&g_pool.state, NULL);
    for (int w = 0; w < QC_POOL_MAX; w++) pthread_cond_init(&g_pool.wake[w], NULL);
    pthread_cond_init(&g_pool.done, NULL);
    g_pool.nworkers = 0;
    atomic_store(&g_pool.job, 0u);
    atomic_store(&g_pool.generation, 0);
}

int qc_pool_init(void) {
    if (g_pool_initialized) return 0;
    g_pool_initialized = 1;
    for (int w = 0; w < QC_POOL_MAX; w++) pthread_cond_init(&g_pool.wake[w], NULL);
    pthread_atfork(NULL, NULL, after_fork_child);
    /* the CPUs this process may run on (taskset, a container's cpuset), not all online */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        ncpu = CPU_COUNT(&set);
    int n = ncpu > 0 ? (int)QC_MIN(ncpu, QC_POOL_MAX) : 1;
    int rc = 0;
    const char *env = getenv("QUANTC_NUM_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v >= 1 && v <= QC_POOL_MAX) n = (int)v;
        else rc = -1;
    }
    atomic_store_explicit(&g_num_threads, n, memory_order_relaxed);
    return rc;
}
