/* A small persistent thread pool: qc_parallel_for splits tasks over the configured threads. */
#ifndef QC_POOL_H
#define QC_POOL_H

#include "qc_common.h"

/* Runs fn(ctx, i) for every i in [0, ntasks), on up to qc_get_num_threads() threads (the
 * caller's included). Returns after all tasks finished. Safe to call from several threads:
 * a call that finds the pool busy runs its tasks inline. Task order is unspecified, so a task
 * must write only its own part of the output (results never depend on the thread count). */
typedef void (*qc_task_fn)(void *ctx, size_t task);
void qc_parallel_for(size_t ntasks, qc_task_fn fn, void *ctx);

int qc_get_num_threads(void);
int qc_set_num_threads(int n); /* n >= 1; returns 0, or -1 if n is out of range */
int qc_max_threads(void);      /* upper bound accepted by qc_set_num_threads */
int qc_pool_init(void);        /* reads QUANTC_NUM_THREADS (-1: not an int in [1, max]) */

/* How many tasks to split `n` items into so each task has at least `grain` items. */
size_t qc_split_count(size_t n, size_t grain);

#endif
