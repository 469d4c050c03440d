/* The cost of a pick and its done called from C through the shared library,
 * for any registered policy, over READY host-managed subchannels, on one and
 * two threads (each with its own reader).
 *
 * Three ways through the header, measured side by side:
 *   next   sy_reader_next: the previous kept pick's done and the next pick
 *          in one call (an RPC thread whose RPCs follow one another)
 *   kept   sy_reader_pick + sy_reader_done: the reader keeps the pick (no
 *          reference counted per pick, a 32-byte result)
 *   token  sy_pick + sy_pick_done: a pick that may outlive the reader's next
 *          one (an 88-byte result with an opaque token)
 * and a baseline in the same run:
 *   floor  two calls into the library that do nothing (sy_version), with
 *          the same loop around them: what any pick + done made as two calls
 *          through a shared library costs on this machine before it does
 *          anything (an indirect call through the PLT and back, twice)
 * Every pick passes a request hash (a different one each time), which
 * hashing policies use and the others ignore.
 *
 * Per configuration it reports, per way, the median (and the range) over
 * TRIALS short trials, because a shared VM's neighbours make any single long
 * run noisy: ns per back-to-back pick + done on 1 thread and on 2 threads,
 * timed with each thread's own CPU clock (time the thread spent descheduled
 * by a busy machine's other work does not count), and the scaling (two
 * threads' throughput over one thread's, by the wall clock: each trial
 * times one thread and then two back to back).
 *
 * Usage: pick_bench [-p POLICY] [-c SERVICE_CONFIG] [-n SIZES]
 *                   [picks per thread per trial] [trials]
 *   -p  a registered policy name (default round_robin). Not registered: the
 *       run prints "skipped" and exits 0, so that a list of policies can be
 *       benchmarked before all of them exist.
 *   -c  the service config JSON (default {"loadBalancingConfig":[{POLICY:{}}]})
 *   -n  comma-separated numbers of addresses (default 3,100,10000,100000)
 *   -k  0: the channel does not count picks for snapshots
 *       (sy_channel_options_set_pick_counts; default 1, as a channel does)
 *
 * Setup (not timed per pick, but reported as "setup"): the addresses are
 * given, and every subchannel the policy asks the host to connect is
 * reported READY, one report at a time (the bring-up, in ms: what a policy's
 * picker rebuild per state change costs at that size). Then the ring is
 * warmed: a policy that connects lazily (ring_hash connects an endpoint
 * when a pick lands on it) would otherwise queue the timed picks, so the
 * timed picks' own hashes are picked, and what they connect reported READY,
 * in rounds (at most WARM_ROUNDS) until a whole round picks without a miss.
 * weighted_round_robin (with no -c) then gets weights 1..10 from load
 * reports (see weigh), so its picks are timed on a weighted schedule, as
 * its users' are, not on the even one a channel starts with.
 * Build and run: benches/c/run.sh (release library, -O2). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "switchyard.h"

#define MAX_TRIALS 101
#define MAX_SIZES 16
#define WARM_ROUNDS 50
/* The first pick of the timed ones' hash sequence (see next_hash). */
#define HASH_SEED 0x9e3779b97f4a7c15u
/* Picks each worker makes before its timed ones (see worker). */
#define WARM_UP_PICKS 100000
/* weighted_round_robin's config when none is given: weights from the first
 * update on (no blackout), updated every 100 ms (the floor). */
#define WRR_CONFIG                                                                                 \
  "{\"loadBalancingConfig\":[{\"weighted_round_robin\":"                                         \
  "{\"blackoutPeriod\":\"0s\",\"weightUpdatePeriod\":\"0.1s\"}}]}"

static long iters = 2000000;
static int trials = 15;
static const char *policy = "round_robin";
static int pick_counts = 1;
/* weighted_round_robin with its default config: weigh() before timing. */
static int weighted = 0;

static double clock_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* The calling thread's CPU time. */
static double cpu_ns(void) { return clock_ns(CLOCK_THREAD_CPUTIME_ID); }

static void ok(sy_status s, const char *what) {
  if (s != SY_OK) {
    char buf[256];
    sy_last_error(buf, sizeof buf);
    fprintf(stderr, "%s: %s: %s\n", policy, what, buf);
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
  printf("  %-9s %6.2f%s (%.2f..%.2f)", label, v[n / 2], unit, v[0], v[n - 1]);
}

typedef struct host {
  pthread_mutex_t mu;
  uint64_t *ids;
  size_t n, cap, reported;
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

/* Reports READY for every subchannel connected since the last call;
 * returns how many it reported. */
static size_t report_ready(sy_channel *ch, host *h) {
  size_t from, to, i;
  pthread_mutex_lock(&h->mu);
  from = h->reported;
  to = h->n;
  h->reported = to;
  pthread_mutex_unlock(&h->mu);
  for (i = from; i < to; i++) ok(sy_channel_report_subconn_state(ch, h->ids[i], SY_STATE_READY, NULL), "report");
  return to - from;
}

/* One per worker, each on its own cache lines: the workers write their
 * totals here, and sharing a line would measure false sharing instead of
 * switchyard. */
typedef struct job {
  _Alignas(128) const sy_channel *ch;
  pthread_barrier_t *start;
  int way; /* one of WAYS */
  double pair_ns; /* the thread's CPU time for its pairs */
  unsigned long long checksum;
} job;

static uint64_t next_hash(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

/* The ways a pick + done is made (see the top). */
enum { NEXT, KEPT, TOKEN, FLOOR, WAYS };
static const char *const way_name[WAYS] = {"next", "kept", "token", "floor"};

/* `n` back-to-back pick + done pairs, the way an RPC stack calls them. */
static unsigned long long pairs(sy_reader *r, int way, long n) {
  unsigned long long checksum = 0;
  uint64_t x = HASH_SEED;
  long i;
  sy_pick_request req;
  memset(&req, 0, sizeof req);
  req.has_request_hash = true;
  switch (way) {
  case NEXT: {
    /* Each call finishes the pick before it (OK, no load, as below). */
    sy_outcome ok_outcome;
    sy_borrowed_pick p;
    memset(&ok_outcome, 0, sizeof ok_outcome);
    req.request_hash = next_hash(&x);
    if (sy_reader_next(r, NULL, &req, &p) != SY_OK) exit(2);
    for (i = 0; i < n; i++) {
      checksum += p.subchannel_id;
      req.request_hash = next_hash(&x);
      if (sy_reader_next(r, &ok_outcome, &req, &p) != SY_OK) exit(2);
    }
    if (sy_reader_done(r, 0, 0, NULL, 0) != SY_OK) exit(3);
    break;
  }
  case KEPT:
    for (i = 0; i < n; i++) {
      sy_borrowed_pick p;
      req.request_hash = next_hash(&x);
      if (sy_reader_pick(r, &req, &p) != SY_OK) exit(2);
      checksum += p.subchannel_id;
      if (sy_reader_done(r, 0, 0, NULL, 0) != SY_OK) exit(3);
    }
    break;
  case TOKEN:
    for (i = 0; i < n; i++) {
      sy_pick_result res;
      uint64_t hash = next_hash(&x);
      if (sy_pick(r, NULL, 0, &hash, 0, false, &res) != SY_OK) exit(2);
      checksum += res.subchannel_id;
      if (sy_pick_done(&res, 0, 0, NULL, 0) != SY_OK) exit(3);
    }
    break;
  default:
    for (i = 0; i < n; i++) {
      req.request_hash = next_hash(&x);
      checksum += (uintptr_t)sy_version() + req.request_hash;
      checksum += (uintptr_t)sy_version();
    }
  }
  return checksum;
}

static void *worker(void *arg) {
  job *j = (job *)arg;
  sy_reader *r = NULL;
  double t0;
  ok(sy_reader_new(j->ch, &r), "reader");
  (void)pairs(r, j->way, WARM_UP_PICKS); /* warm up: the first picks fault in the table */
  pthread_barrier_wait(j->start);
  t0 = cpu_ns();
  j->checksum = pairs(r, j->way, iters);
  j->pair_ns = cpu_ns() - t0;
  sy_reader_free(r);
  return NULL;
}

/* Runs `threads` workers; returns the wall time of the timed part. */
static double run(const sy_channel *ch, int threads, int way, job *jobs) {
  pthread_t t[2];
  pthread_barrier_t start;
  double t0;
  int i;
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  for (i = 0; i < threads; i++) {
    memset(&jobs[i], 0, sizeof jobs[i]);
    jobs[i].ch = ch;
    jobs[i].start = &start;
    jobs[i].way = way;
    pthread_create(&t[i], NULL, worker, &jobs[i]);
  }
  pthread_barrier_wait(&start);
  t0 = now_ns();
  for (i = 0; i < threads; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&start);
  return now_ns() - t0;
}

/* Applies what was sent to the channel, then reports READY what that
 * connected, until nothing more connects (bounded); returns how many. */
static size_t settle(sy_channel *ch, host *h) {
  size_t reported = 0, more;
  int i;
  for (i = 0; i < 1000; i++) {
    ok(sy_channel_sync(ch), "sync");
    more = report_ready(ch, h);
    if (more == 0) break;
    reported += more;
  }
  ok(sy_channel_sync(ch), "sync");
  return reported;
}

/* Picks every hash the timed picks will use (the same sequence, as many),
 * reporting READY what those picks made the policy connect, until a whole
 * round picks without a miss. Returns the rounds taken; exits when
 * WARM_ROUNDS were not enough. */
static int warm(sy_channel *ch, host *h, size_t n) {
  long picks = iters > WARM_UP_PICKS ? iters : WARM_UP_PICKS;
  sy_reader *r = NULL;
  int round;
  ok(sy_reader_new(ch, &r), "reader");
  for (round = 1; round <= WARM_ROUNDS; round++) {
    sy_pick_request req;
    uint64_t x = HASH_SEED;
    long i, missed = 0;
    memset(&req, 0, sizeof req);
    req.has_request_hash = true;
    for (i = 0; i < picks; i++) {
      sy_borrowed_pick p;
      req.request_hash = next_hash(&x);
      if (sy_reader_pick(r, &req, &p) == SY_OK)
        ok(sy_reader_done(r, 0, 0, NULL, 0), "done");
      else
        missed++;
    }
    /* The next round's picks come from the picker the reports made. */
    if (settle(ch, h) == 0 && missed == 0) break;
    ok(sy_reader_refresh(r), "refresh");
  }
  sy_reader_free(r);
  if (round > WARM_ROUNDS) {
    fprintf(stderr, "%s: picks still miss after %d warming rounds over %zu addresses\n", policy,
            WARM_ROUNDS, n);
    exit(1);
  }
  return round;
}

/* A channel under `config` over `n` addresses, every subchannel the policy
 * connects reported READY, until a pick (with a hash) succeeds; `setup_ms`
 * gets how long that took. */
static sy_channel *ready_channel(const sy_runtime *rt, const char *config, size_t n, host *h,
                                 double *setup_ms) {
  sy_host_transport t;
  sy_channel *ch = NULL;
  sy_address *list = (sy_address *)calloc(n, sizeof *list);
  char(*names)[32] = malloc(n * sizeof *names);
  sy_reader *r = NULL;
  sy_borrowed_pick p;
  sy_pick_request req;
  size_t i;
  int round;
  double t0;

  memset(&t, 0, sizeof t);
  t.ctx = h;
  t.connect = on_connect;
  t.shutdown = on_shutdown;
  {
    sy_channel_options *opts = NULL;
    ok(sy_channel_options_new(&opts), "options");
    ok(sy_channel_options_set_pick_counts(opts, pick_counts), "pick counts");
    ok(sy_channel_new_with_options(rt, "", config, opts, &t, NULL, NULL, NULL, &ch), "channel");
    sy_channel_options_free(opts);
  }
  for (i = 0; i < n; i++) {
    snprintf(names[i], sizeof names[i], "127.%u.%u.%u:443", (unsigned)(i >> 16) & 255,
             (unsigned)(i >> 8) & 255, (unsigned)i & 255);
    list[i].address = names[i];
    list[i].weight = 1;
  }
  memset(&req, 0, sizeof req);
  req.has_request_hash = true;
  req.request_hash = HASH_SEED;
  t0 = now_ns();
  ok(sy_channel_update_addresses(ch, list, n), "addresses");
  ok(sy_reader_new(ch, &r), "reader");
  /* Policies connect in rounds (pick_first one address at a time, ring_hash
   * when a pick lands on an endpoint, others all at once): report what each
   * round connected until nothing more comes and a pick succeeds (with a
   * hash: ring_hash fails picks without one). Bounded. */
  for (round = 0; round < 1000; round++) {
    ok(sy_channel_sync(ch), "sync");
    if (report_ready(ch, h) > 0) continue;
    ok(sy_channel_sync(ch), "sync");
    if (sy_reader_pick(r, &req, &p) == SY_OK) {
      ok(sy_reader_done(r, 0, 0, NULL, 0), "done");
      break;
    }
    {
      struct timespec ms = {0, 1000000};
      nanosleep(&ms, NULL);
    }
  }
  if (round == 1000) {
    fprintf(stderr, "%s: never READY over %zu addresses\n", policy, n);
    exit(1);
  }
  *setup_ms = (now_ns() - t0) / 1e6;
  sy_reader_free(r);
  free(list);
  free(names);
  return ch;
}

/* The address index of a pick ("127.a.b.c:443" -> a.b.c as one number). */
static size_t address_index(const sy_borrowed_pick *p) {
  unsigned a, b, c;
  char buf[32];
  size_t len = p->address_len < sizeof buf - 1 ? p->address_len : sizeof buf - 1;
  memcpy(buf, p->address, len);
  buf[len] = '\0';
  if (sscanf(buf, "127.%u.%u.%u:", &a, &b, &c) != 3) exit(4);
  return ((size_t)a << 16) | ((size_t)b << 8) | c;
}

/* weighted_round_robin only: every endpoint reports load with its calls
 * (qps 1..10 by address index, utilization 1: weights 1..10), the next
 * weight update (every 100 ms, no blackout: see WRR_CONFIG) takes them, and
 * the timed picks run on a weighted schedule, not the even one a channel
 * starts with. Returns the share of picks that go to the weight-10
 * endpoints (a tenth of them by count, 10/55 of the weight). */
static double weigh(sy_channel *ch, size_t n) {
  sy_reader *r = NULL;
  sy_borrowed_pick p;
  size_t i, heavy = 0, picks = 20 * n < 200000 ? 20 * n : 200000;
  ok(sy_reader_new(ch, &r), "reader");
  for (i = 0; i < 2 * n; i++) {
    sy_load_metric load[2];
    if (sy_reader_pick(r, NULL, &p) != SY_OK) exit(2);
    load[0].name = "rps_fractional";
    load[0].value = (double)(1 + address_index(&p) % 10);
    load[1].name = "application_utilization";
    load[1].value = 1.0;
    ok(sy_reader_done(r, 0, 0, load, 2), "done with load");
  }
  {
    struct timespec ms = {0, 300 * 1000000};
    nanosleep(&ms, NULL);
  }
  ok(sy_channel_sync(ch), "sync");
  for (i = 0; i < picks; i++) {
    if (sy_reader_pick(r, NULL, &p) != SY_OK) exit(2);
    heavy += address_index(&p) % 10 == 9;
    ok(sy_reader_done(r, 0, 0, NULL, 0), "done");
  }
  sy_reader_free(r);
  return (double)heavy / (double)picks;
}

static void bench(const sy_runtime *rt, const char *config, size_t n) {
  host h;
  sy_channel *ch;
  job jobs[2];
  int way, rounds;
  double setup_ms, t0;

  memset(&h, 0, sizeof h);
  pthread_mutex_init(&h.mu, NULL);
  h.cap = n;
  h.ids = (uint64_t *)calloc(n, sizeof *h.ids);
  ch = ready_channel(rt, config, n, &h, &setup_ms);
  t0 = now_ns();
  rounds = warm(ch, &h, n);
  printf("%-22s n=%-6zu setup   bring-up %.1f ms; warming %d round%s, %.1f ms; %zu connected\n",
         policy, n, setup_ms, rounds, rounds == 1 ? "" : "s", (now_ns() - t0) / 1e6, h.n);
  if (weighted) {
    double share = weigh(ch, n);
    printf("%-22s n=%-6zu setup   weights 1..10 from load reports: share of the weight-10 "
           "endpoints %.3f (even: 0.100, weighted: 0.182)\n",
           policy, n, share);
    if (n >= 10 && share < 0.15) {
      fprintf(stderr, "weights not in use\n");
      exit(1);
    }
  }

  for (way = 0; way < WAYS; way++) {
    double pair1[MAX_TRIALS], pair2[MAX_TRIALS], scaling[MAX_TRIALS];
    int t;
    for (t = 0; t < trials; t++) {
      double wall1 = run(ch, 1, way, jobs), wall2;
      pair1[t] = jobs[0].pair_ns / (double)iters;
      wall2 = run(ch, 2, way, jobs);
      pair2[t] = (jobs[0].pair_ns + jobs[1].pair_ns) / (2.0 * (double)iters);
      scaling[t] = 2.0 * wall1 / wall2;
    }
    printf("%-22s n=%-6zu %-5s", policy, n, way_name[way]);
    summary("1 thread", pair1, trials, " ns");
    summary("2 threads", pair2, trials, " ns");
    summary("scaling", scaling, trials, "x");
    printf("\n");
    fflush(stdout);
  }

  sy_channel_free(ch);
  pthread_mutex_destroy(&h.mu);
  free(h.ids);
}

static void usage(void) {
  fprintf(stderr,
          "usage: pick_bench [-p POLICY] [-c SERVICE_CONFIG] [-n SIZES] [-k 0|1] "
          "[picks per thread per trial >= 1] [trials 1..%d]\n",
          MAX_TRIALS);
  exit(2);
}

int main(int argc, char **argv) {
  sy_runtime *rt = NULL;
  const char *config = NULL;
  char default_config[256];
  const char *sizes_arg = "3,100,10000,100000";
  size_t sizes[MAX_SIZES], nsizes = 0;
  int i = 1, k;
  char *rest;

  for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
    if (strcmp(argv[i], "-p") == 0)
      policy = argv[i + 1];
    else if (strcmp(argv[i], "-c") == 0)
      config = argv[i + 1];
    else if (strcmp(argv[i], "-n") == 0)
      sizes_arg = argv[i + 1];
    else if (strcmp(argv[i], "-k") == 0)
      pick_counts = atoi(argv[i + 1]) != 0;
    else
      usage();
  }
  if (i < argc) iters = atol(argv[i++]);
  if (i < argc) trials = atoi(argv[i++]);
  if (i < argc || iters < 1 || trials < 1 || trials > MAX_TRIALS) usage();
  for (rest = (char *)sizes_arg; *rest != '\0' && nsizes < MAX_SIZES;) {
    char *end;
    long v = strtol(rest, &end, 10);
    if (end == rest || v < 1 || v > 1000000) usage();
    sizes[nsizes++] = (size_t)v;
    rest = *end == ',' ? end + 1 : end;
    if (*end != ',' && *end != '\0') usage();
  }
  if (!sy_balancer_registered(policy)) {
    printf("%-22s skipped: not registered\n", policy);
    return 0;
  }
  if (config == NULL && strcmp(policy, "weighted_round_robin") == 0) {
    config = WRR_CONFIG;
    weighted = 1;
  }
  if (config == NULL) {
    if (snprintf(default_config, sizeof default_config, "{\"loadBalancingConfig\":[{\"%s\":{}}]}",
                 policy) >= (int)sizeof default_config)
      usage();
    config = default_config;
  }
  printf("switchyard %s, %s %s: %d trials of %ld picks per thread; CPU ns per pick + done, "
         "median (min..max)\n",
         sy_version(), policy, config, trials, iters);
  ok(sy_runtime_new(&rt), "runtime");
  for (k = 0; k < (int)nsizes; k++) bench(rt, config, sizes[k]);
  sy_runtime_free(rt);
  return 0;
}
