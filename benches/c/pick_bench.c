/* The cost of sy_pick + sy_pick_done called from C through the shared
 * library: round_robin over 3 and 10,000 READY host-managed subchannels, on
 * one and two threads (each with its own reader).
 *
 * Per configuration it reports:
 *   pick      ns per sy_pick (timeout 0), timed in batches of 64 picks whose
 *             dones are timed separately
 *   pick+done ns per back-to-back sy_pick; sy_pick_done pair
 *   scaling   two threads' pick+done throughput over one thread's
 *
 * Build and run: benches/c/run.sh (release library, -O2). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "switchyard.h"

#define BATCH 64

static long iters = 20000000;

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

typedef struct job {
  const sy_channel *ch;
  pthread_barrier_t *start;
  double pick_ns, done_ns, pair_ns; /* totals */
  unsigned long long checksum;
} job;

/* Pick-alone and done-alone, in batches. */
static void run_batched(sy_reader *r, job *j) {
  sy_pick_result res[BATCH];
  long i;
  int k;
  for (i = 0; i < iters; i += BATCH) {
    double t0 = now_ns(), t1, t2;
    for (k = 0; k < BATCH; k++) {
      if (sy_pick(r, NULL, 0, NULL, 0, false, &res[k]) != SY_OK) exit(2);
    }
    t1 = now_ns();
    for (k = 0; k < BATCH; k++) {
      j->checksum += res[k].subchannel_id;
      if (sy_pick_done(&res[k], 0, 0, NULL, 0) != SY_OK) exit(3);
    }
    t2 = now_ns();
    j->pick_ns += t1 - t0;
    j->done_ns += t2 - t1;
  }
}

/* Back-to-back pairs, the way an RPC stack calls them. */
static void run_pairs(sy_reader *r, job *j) {
  sy_pick_result res;
  long i;
  double t0 = now_ns();
  for (i = 0; i < iters; i++) {
    if (sy_pick(r, NULL, 0, NULL, 0, false, &res) != SY_OK) exit(2);
    j->checksum += res.subchannel_id;
    if (sy_pick_done(&res, 0, 0, NULL, 0) != SY_OK) exit(3);
  }
  j->pair_ns += now_ns() - t0;
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
    /* warm up */
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
  double wall1, wall2;
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
    double pick = 0, done = 0;
    int k;
    run(ch, threads, worker_batched, jobs);
    for (k = 0; k < threads; k++) {
      pick += jobs[k].pick_ns;
      done += jobs[k].done_ns;
    }
    printf("subchannels=%-6zu threads=%d  pick %.2f ns  done %.2f ns  (batched)\n", n, threads,
           pick / ((double)iters * threads), done / ((double)iters * threads));
  }
  wall1 = run(ch, 1, worker_pairs, jobs);
  printf("subchannels=%-6zu threads=1  pick+done %.2f ns/pair\n", n, wall1 / (double)iters);
  wall2 = run(ch, 2, worker_pairs, jobs);
  printf("subchannels=%-6zu threads=2  pick+done %.2f ns/pair per thread, scaling %.2fx\n", n,
         (jobs[0].pair_ns + jobs[1].pair_ns) / (2.0 * (double)iters), 2.0 * wall1 / wall2);

  sy_channel_free(ch);
  pthread_mutex_destroy(&h.mu);
  free(h.ids);
  free(list);
  free(names);
}

int main(int argc, char **argv) {
  sy_runtime *rt = NULL;
  if (argc > 1) iters = atol(argv[1]);
  printf("switchyard %s, %ld iterations per thread\n", sy_version(), iters);
  ok(sy_runtime_new(&rt), "runtime");
  bench(rt, 3);
  bench(rt, 10000);
  sy_runtime_free(rt);
  return 0;
}
