/* The cost of sy_pick + sy_pick_done called from C through the shared
 * library: round_robin over 3 and 10,000 READY host-managed subchannels, on
 * one and two threads (each with its own reader).
 *
 * Per configuration it reports the median (and the range) over TRIALS short
 * trials, because a shared VM's neighbours make any single long run noisy:
 *   pick      ns per sy_pick (timeout 0), timed in batches of 64 picks whose
 *             dones are timed separately (the clock's own cost subtracted)
 *   done      ns per sy_pick_done, from the same batches
 *   pick+done ns per back-to-back sy_pick; sy_pick_done pair
 *   scaling   two threads' pick+done throughput over one thread's, each trial
 *             timing one thread and then two threads back to back
 *
 * Build and run: benches/c/run.sh [picks per thread per trial] [trials]
 * (release library, -O2). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "switchyard.h"

#define BATCH 64
#define MAX_TRIALS 101

static long iters = 2000000;
static int trials = 15;
static double clock_ns; /* the cost of one now_ns() */

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void ok(sy_status s, const char *what) {
  if (s != SY_OK) {
    char buf[256];
    sy_last_error(buf, sizeof buf);
    fprintf(stderr, "%s: %s\n", what, buf);
    exit(1);
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts `v` and prints "median (min..max)". */
static void summary(const char *label, double *v, int n, const char *unit) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  printf("  %-10s %6.2f%s  (%.2f..%.2f)", label, v[n / 2], unit, v[0], v[n - 1]);
}

typedef struct host {
  pthread_mutex_t mu;
  uint64_t *ids;
  size_t n, cap;
} host;

static void on_connect(void *ctx, uint64_t id, const char *a, size_t l, void *u) {
  host *h = (host *)ctx;
  (void)a; (void)l; (void)u;
  pthread_mutex_lock(&h->mu);
  if (h->n < h->cap) h->ids[h->n++] = id;
  pthread_mutex_unlock(&h->mu);
}

static void on_shutdown(void *ctx, uint64_t id, const char *a, size_t l, void *u) {
  (void)ctx; (void)id; (void)a; (void)l; (void)u;
}

/* One per worker, each on its own cache lines: the workers write their
 * totals here, and sharing a line would measure false sharing instead of
 * switchyard. */
typedef struct job {
  _Alignas(128) const sy_channel *ch;
  pthread_barrier_t *start;
  double pick_ns, done_ns, pair_ns; /* totals */
  unsigned long long checksum;
} job;

/* Pick-alone and done-alone, in batches. */
static void run_batched(sy_reader *r, job *j) {
  sy_pick_result res[BATCH];
  unsigned long long checksum = 0;
  double pick_ns = 0, done_ns = 0;
  long i;
  int k;
  for (i = 0; i < iters; i += BATCH) {
    double t0 = now_ns(), t1, t2;
    for (k = 0; k < BATCH; k++) {
      if (sy_pick(r, NULL, 0, NULL, 0, false, &res[k]) != SY_OK) exit(2);
    }
    t1 = now_ns();
    for (k = 0; k < BATCH; k++) {
      checksum += res[k].subchannel_id;
      if (sy_pick_done(&res[k], 0, 0, NULL, 0) != SY_OK) exit(3);
    }
    t2 = now_ns();
    pick_ns += t1 - t0 - clock_ns;
    done_ns += t2 - t1 - clock_ns;
  }
  j->pick_ns = pick_ns;
  j->done_ns = done_ns;
  j->checksum = checksum;
}

/* Back-to-back pairs, the way an RPC stack calls them. */
static void run_pairs(sy_reader *r, job *j) {
  sy_pick_result res;
  unsigned long long checksum = 0;
  long i;
  double t0 = now_ns();
  for (i = 0; i < iters; i++) {
    if (sy_pick(r, NULL, 0, NULL, 0, false, &res) != SY_OK) exit(2);
    checksum += res.subchannel_id;
    if (sy_pick_done(&res, 0, 0, NULL, 0) != SY_OK) exit(3);
  }
  j->pair_ns = now_ns() - t0;
  j->checksum = checksum;
}

static void *worker_batched(void *arg) {
  job *j = (job *)arg;
  sy_reader *r = NULL;
  ok(sy_reader_new(j->ch, &r), "reader");
  pthread_barrier_wait(j->start);
  run_batched(r, j);
  sy_reader_free(r);
  return NULL;
}

static void *worker_pairs(void *arg) {
  job *j = (job *)arg;
  sy_reader *r = NULL;
  ok(sy_reader_new(j->ch, &r), "reader");
  {
    /* warm up (first picks fault in the reader's table) */
    sy_pick_result res;
    int i;
    for (i = 0; i < 100000; i++) {
      if (sy_pick(r, NULL, 0, NULL, 0, false, &res) == SY_OK) (void)sy_pick_done(&res, 0, 0, NULL, 0);
    }
  }
  pthread_barrier_wait(j->start);
  run_pairs(r, j);
  sy_reader_free(r);
  return NULL;
}

/* Runs `threads` workers; returns the wall time of the timed part. */
static double run(const sy_channel *ch, int threads, void *(*fn)(void *), job *jobs) {
  pthread_t t[2];
  pthread_barrier_t start;
  double t0;
  int i;
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  for (i = 0; i < threads; i++) {
    memset(&jobs[i], 0, sizeof jobs[i]);
    jobs[i].ch = ch;
    jobs[i].start = &start;
    pthread_create(&t[i], NULL, fn, &jobs[i]);
  }
  pthread_barrier_wait(&start);
  t0 = now_ns();
  for (i = 0; i < threads; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&start);
  return now_ns() - t0;
}

static void bench(const sy_runtime *rt, size_t n) {
  host h;
  sy_host_transport t;
  sy_channel *ch = NULL;
  sy_address *list = (sy_address *)calloc(n, sizeof *list);
  char (*names)[32] = malloc(n * sizeof *names);
  job jobs[2];
  size_t i;
  int threads;

  memset(&h, 0, sizeof h);
  pthread_mutex_init(&h.mu, NULL);
  h.cap = n;
  h.ids = (uint64_t *)calloc(n, sizeof *h.ids);
  memset(&t, 0, sizeof t);
  t.ctx = &h;
  t.connect = on_connect;
  t.shutdown = on_shutdown;
  ok(sy_channel_new(rt, "", "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}", &t, NULL, NULL,
                    NULL, &ch), "channel");
  for (i = 0; i < n; i++) {
    snprintf(names[i], sizeof names[i], "10.%u.%u.%u:443", (unsigned)(i >> 16) & 255,
             (unsigned)(i >> 8) & 255, (unsigned)i & 255);
    list[i].address = names[i];
  }
  ok(sy_channel_update_addresses(ch, list, n), "addresses");
  ok(sy_channel_sync(ch), "sync");
  if (h.n != n) { fprintf(stderr, "only %zu connects\n", h.n); exit(1); }
  for (i = 0; i < n; i++) ok(sy_channel_report_subconn_state(ch, h.ids[i], SY_STATE_READY, NULL), "report");
  ok(sy_channel_sync(ch), "sync");

  for (threads = 1; threads <= 2; threads++) {
    double pick[MAX_TRIALS], done[MAX_TRIALS];
    int t, k;
    for (t = 0; t < trials; t++) {
      pick[t] = done[t] = 0;
      run(ch, threads, worker_batched, jobs);
      for (k = 0; k < threads; k++) {
        pick[t] += jobs[k].pick_ns / ((double)iters * threads);
        done[t] += jobs[k].done_ns / ((double)iters * threads);
      }
    }
    printf("subchannels=%-6zu threads=%d batched", n, threads);
    summary("pick", pick, trials, " ns");
    summary("done", done, trials, " ns");
    printf("\n");
  }
  {
    double pair1[MAX_TRIALS], pair2[MAX_TRIALS], scaling[MAX_TRIALS];
    int t;
    for (t = 0; t < trials; t++) {
      double wall1 = run(ch, 1, worker_pairs, jobs), wall2;
      pair1[t] = jobs[0].pair_ns / (double)iters;
      wall2 = run(ch, 2, worker_pairs, jobs);
      pair2[t] = (jobs[0].pair_ns + jobs[1].pair_ns) / (2.0 * (double)iters);
      scaling[t] = 2.0 * wall1 / wall2;
    }
    printf("subchannels=%-6zu pairs    ", n);
    summary("1 thread", pair1, trials, " ns");
    summary("2 threads", pair2, trials, " ns");
    summary("scaling", scaling, trials, "x");
    printf("\n");
  }

  sy_channel_free(ch);
  pthread_mutex_destroy(&h.mu);
  free(h.ids);
  free(list);
  free(names);
}

/* The cost of one now_ns(), subtracted from each timed batch. */
static double calibrate_clock(void) {
  int i;
  double t0 = now_ns(), sink = 0;
  for (i = 0; i < 1000000; i++) sink += now_ns();
  return (now_ns() - t0 - (sink < 0 ? 1 : 0)) / 1000000.0;
}

int main(int argc, char **argv) {
  sy_runtime *rt = NULL;
  if (argc > 1) iters = atol(argv[1]);
  if (argc > 2) trials = atoi(argv[2]);
  if (iters < BATCH || trials < 1 || trials > MAX_TRIALS) {
    fprintf(stderr, "usage: pick_bench [picks per thread per trial >= %d] [trials 1..%d]\n", BATCH,
            MAX_TRIALS);
    return 2;
  }
  clock_ns = calibrate_clock();
  printf("switchyard %s: %d trials of %ld picks per thread; median (min..max); clock %.1f ns\n",
         sy_version(), trials, iters, clock_ns);
  ok(sy_runtime_new(&rt), "runtime");
  bench(rt, 3);
  bench(rt, 10000);
  sy_runtime_free(rt);
  return 0;
}
