/* Stress, meant to run under ASan+UBSan: RPC threads pick and finish (each
 * with its own reader, holding some picks across others and handing some to
 * other threads to finish) while another thread churns the address list
 * (fresh user data every time) and the service config, another flaps
 * subchannel states through the host transport, and the channel is closed
 * and freed at random moments. Then again with a fresh runtime and channel,
 * for a bounded number of rounds. Every user datum is released exactly once:
 * a release frees it (so a pick that returned a released one is a
 * use-after-free for ASan), and the count of releases must equal the count
 * handed to the library once each round's runtime is freed. The policy is
 * round_robin, pick_first or one written in C (switched at random by
 * service config updates too), whose pickers must each be freed once.
 *
 * SY_STRESS_ROUNDS (default 12) and SY_STRESS_SEED (default: from the clock,
 * printed) make a run repeatable in scale and randomness. */
#include "common.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

#define PICKERS 4
#define POOL 6           /* distinct addresses the churner draws from */
#define HELD 8           /* picks a picker keeps outstanding at most */
#define MAILBOX 32       /* picks handed to another thread to finish */
#define RING 256         /* subchannel ids the flapper draws from */
#define MAX_ITERS 2000000L /* per thread per round: a bound, not a target */
#define DATUM_LIVE 0x4c495645u
#define DATUM_DEAD 0x44454144u

typedef struct datum {
  uint32_t magic;
  atomic_int releases;
} datum;

static atomic_long handed;   /* user data handed to the library */
static atomic_long released; /* ... and released by it */
static atomic_long picks_ok, picks_failed;
static atomic_int stop;

/* Any thread: the library is done with this datum, for good. */
static void release_datum(void *user_data) {
  datum *d = (datum *)user_data;
  CHECK(d->magic == DATUM_LIVE);
  CHECK(atomic_fetch_add(&d->releases, 1) == 0); /* exactly once */
  d->magic = DATUM_DEAD;
  free(d);
  atomic_fetch_add(&released, 1);
}

static uint64_t next_rand(uint64_t *s) { /* xorshift64* */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

/* The channel handle, shared: the host must not use it once freed, so
 * every use holds the read side and the free takes the write side. */
static pthread_rwlock_t ch_lock = PTHREAD_RWLOCK_INITIALIZER;
static sy_channel *ch;

/* Subchannel ids the library asked the host to connect (loop thread). */
static pthread_mutex_t ring_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t ring[RING];
static unsigned ring_len, ring_next;

static void on_connect(void *ctx, uint64_t id, const char *address, size_t address_len,
                       void *user_data) {
  (void)ctx;
  (void)address;
  (void)address_len;
  /* The datum is alive while its subchannel is. */
  CHECK(user_data == NULL || ((datum *)user_data)->magic == DATUM_LIVE);
  pthread_mutex_lock(&ring_mu);
  ring[ring_next] = id;
  ring_next = (ring_next + 1) % RING;
  if (ring_len < RING) ring_len++;
  pthread_mutex_unlock(&ring_mu);
}

static void on_shutdown(void *ctx, uint64_t id, const char *address, size_t address_len,
                        void *user_data) {
  (void)ctx;
  (void)id;
  (void)address;
  (void)address_len;
  CHECK(user_data == NULL || ((datum *)user_data)->magic == DATUM_LIVE);
}

/* Picks handed from one RPC thread to another to finish. */
static pthread_mutex_t mail_mu = PTHREAD_MUTEX_INITIALIZER;
static sy_pick_result mail[MAILBOX];
static int mail_len;

static int post(const sy_pick_result *r) {
  int ok = 0;
  pthread_mutex_lock(&mail_mu);
  if (mail_len < MAILBOX) {
    mail[mail_len++] = *r; /* a bitwise copy; done on exactly this one */
    ok = 1;
  }
  pthread_mutex_unlock(&mail_mu);
  return ok;
}

static int collect(sy_pick_result *r) {
  int ok = 0;
  pthread_mutex_lock(&mail_mu);
  if (mail_len > 0) {
    *r = mail[--mail_len];
    ok = 1;
  }
  pthread_mutex_unlock(&mail_mu);
  return ok;
}

static void finish(sy_pick_result *r, uint64_t roll) {
  static const uint32_t codes[4] = {0, 0, 14, 4};
  OK(sy_pick_done(r, codes[roll % 4], 1000 + roll % 1000, NULL, 0));
}

/* What a successful pick hands out is alive. */
static void check_pick(const sy_pick_result *r) {
  const datum *d = (const datum *)r->user_data;
  CHECK(r->address != NULL && r->address_len > 0);
  CHECK(d == NULL || (d->magic == DATUM_LIVE && atomic_load(&d->releases) == 0));
}

static void new_reader(sy_reader **r) {
  pthread_rwlock_rdlock(&ch_lock);
  if (ch != NULL) {
    sy_status st = sy_reader_new(ch, r);
    CHECK(st == SY_OK || st == SY_CLOSED);
  }
  pthread_rwlock_unlock(&ch_lock);
}

typedef struct worker {
  uint64_t seed;
} worker;

/* An RPC thread. */
static void *picker_main(void *arg) {
  worker *w = (worker *)arg;
  uint64_t rng = w->seed;
  sy_reader *r = NULL;
  sy_pick_result held[HELD];
  int nheld = 0;
  int kept = 0; /* the reader keeps a pick of sy_reader_next's */
  long i;
  for (i = 0; i < MAX_ITERS && !atomic_load(&stop); i++) {
    uint64_t roll = next_rand(&rng);
    unsigned what = (unsigned)(roll % 100);
    sy_pick_result res;
    sy_status st;
    if (r == NULL) {
      new_reader(&r);
      if (r == NULL) { /* the channel is gone: finish what is held */
        if (nheld > 0) finish(&held[--nheld], roll);
        else sched_yield();
        continue;
      }
    }
    if (what < 3) {
      OK(sy_reader_refresh(r)); /* drops a kept pick */
      kept = 0;
      continue;
    }
    if (what < 4) { /* free the reader; its picks stay valid until done */
      sy_reader_free(r);
      r = NULL;
      kept = 0;
      continue;
    }
    if (what >= 25 && what < 40) { /* kept picks, each finishing the one before */
      static const uint32_t codes[4] = {0, 0, 14, 4};
      sy_borrowed_pick kp;
      sy_outcome o;
      memset(&o, 0, sizeof o);
      o.grpc_code = codes[roll % 4];
      o.latency_ns = 1000 + roll % 1000;
      st = sy_reader_next(r, kept ? &o : NULL, NULL, &kp);
      kept = st == SY_OK;
      if (st != SY_OK) {
        CHECK(st == SY_NO_SUBCHANNEL || st == SY_UNAVAILABLE || st == SY_CLOSED);
        atomic_fetch_add(&picks_failed, 1);
      } else {
        const datum *d = (const datum *)kp.user_data;
        atomic_fetch_add(&picks_ok, 1);
        CHECK(kp.address != NULL && kp.address_len > 0);
        CHECK(d == NULL || (d->magic == DATUM_LIVE && atomic_load(&d->releases) == 0));
      }
      continue;
    }
    kept = 0; /* a pick of any kind drops it */
    if (what < 10 && collect(&res)) { /* finish another thread's pick */
      finish(&res, roll);
      continue;
    }
    if (what < 13) /* may wait a little, through TRANSIENT_FAILURE */
      st = sy_pick(r, NULL, 0, NULL, 1 + roll % 3, true, &res);
    else if (what < 25)
      st = sy_pick(r, "/stress.Svc/Call", 16, NULL, 0, false, &res);
    else
      st = sy_pick(r, NULL, 0, NULL, 0, false, &res);
    if (st != SY_OK) {
      CHECK(st == SY_NO_SUBCHANNEL || st == SY_UNAVAILABLE || st == SY_CLOSED ||
            st == SY_DEADLINE_EXCEEDED);
      atomic_fetch_add(&picks_failed, 1);
      if (nheld > 0) finish(&held[--nheld], roll);
      continue;
    }
    atomic_fetch_add(&picks_ok, 1);
    check_pick(&res);
    if ((roll >> 8) % 16 == 0 && post(&res)) continue;
    if ((roll >> 12) % 4 == 0) {
      if (nheld == HELD) {
        unsigned k = (unsigned)((roll >> 16) % HELD);
        check_pick(&held[k]); /* still alive while held */
        finish(&held[k], roll);
        held[k] = res;
      } else {
        held[nheld++] = res;
      }
      continue;
    }
    finish(&res, roll);
  }
  while (nheld > 0) {
    check_pick(&held[nheld - 1]);
    finish(&held[--nheld], 0);
  }
  sy_reader_free(r);
  return NULL;
}

/* ---- A policy written in C: random among the READY subchannels --------- */

#define SC_MAX 64
#define PICKER_LIVE 0x5049434bu

typedef struct c_policy {
  uint64_t ids[SC_MAX];
  uint32_t states[SC_MAX];
  int used[SC_MAX];
} c_policy;

typedef struct c_picker {
  uint32_t magic;
  size_t n;
} c_picker;

static atomic_long pickers_made, pickers_freed, c_dones;

/* RPC threads, concurrently: reads only its immutable ctx. */
static uint32_t c_pick(void *ctx, const sy_pick_args *args, size_t *out_index) {
  const c_picker *p = (const c_picker *)ctx;
  CHECK(p->magic == PICKER_LIVE);
  if (p->n == 0) return SY_PICK_QUEUE;
  *out_index = (size_t)(args->random % p->n);
  return SY_PICK_COMPLETE;
}

static void c_done(void *ctx, uint64_t id, const char *error, size_t error_len,
                   uint64_t latency_ns) {
  const c_picker *p = (const c_picker *)ctx;
  (void)id;
  (void)error;
  (void)error_len;
  (void)latency_ns;
  CHECK(p->magic == PICKER_LIVE);
  atomic_fetch_add(&c_dones, 1);
}

/* Whichever thread lets go of the picker last: exactly once. */
static void c_free(void *ctx) {
  c_picker *p = (c_picker *)ctx;
  CHECK(p->magic == PICKER_LIVE);
  p->magic = 0;
  free(p);
  atomic_fetch_add(&pickers_freed, 1);
}

/* Loop thread. */
static void c_publish(c_policy *p, sy_cc *cc) {
  uint64_t ready[SC_MAX];
  size_t n = 0, i;
  sy_picker pk;
  c_picker *ctx = (c_picker *)malloc(sizeof *ctx);
  CHECK(ctx != NULL);
  for (i = 0; i < SC_MAX; i++) {
    if (p->used[i] && p->states[i] == SY_STATE_READY) ready[n++] = p->ids[i];
  }
  ctx->magic = PICKER_LIVE;
  ctx->n = n;
  memset(&pk, 0, sizeof pk);
  pk.ctx = ctx;
  pk.pick = c_pick;
  pk.done = c_done;
  pk.free = c_free;
  pk.subchannels = ready;
  pk.subchannels_len = n;
  OK(sy_cc_update_state(cc, n > 0 ? SY_STATE_READY : SY_STATE_CONNECTING, &pk));
  atomic_fetch_add(&pickers_made, 1);
}

static void *c_build(void *builder_ctx) {
  (void)builder_ctx;
  return calloc(1, sizeof(c_policy));
}

/* Every new list replaces all subchannels (simple, and churns the most). */
static bool c_update_addresses(void *balancer, sy_cc *cc, const sy_address *addrs, size_t len) {
  c_policy *p = (c_policy *)balancer;
  size_t i, k;
  (void)addrs;
  for (k = 0; k < SC_MAX; k++) {
    if (p->used[k] && p->states[k] != SY_STATE_SHUTDOWN) {
      OK(sy_cc_shutdown_subconn(cc, p->ids[k]));
      p->states[k] = SY_STATE_SHUTDOWN; /* until its SHUTDOWN frees the slot */
    }
  }
  for (i = 0; i < len; i++) {
    for (k = 0; k < SC_MAX && p->used[k]; k++) {
    }
    if (k == SC_MAX) break; /* full of subchannels still shutting down */
    OK(sy_cc_new_subconn(cc, i, &p->ids[k]));
    p->used[k] = 1;
    p->states[k] = SY_STATE_IDLE;
    OK(sy_cc_connect(cc, p->ids[k]));
  }
  c_publish(p, cc);
  return true;
}

static void c_subchannel_state(void *balancer, sy_cc *cc, uint64_t id, uint32_t state,
                               const char *error) {
  c_policy *p = (c_policy *)balancer;
  size_t k;
  (void)error;
  for (k = 0; k < SC_MAX; k++) {
    if (!p->used[k] || p->ids[k] != id) continue;
    if (state == SY_STATE_SHUTDOWN) {
      p->used[k] = 0;
      return;
    }
    if (p->states[k] == SY_STATE_SHUTDOWN) return;
    if (state == SY_STATE_IDLE) OK(sy_cc_connect(cc, id));
    p->states[k] = state;
    c_publish(p, cc);
    return;
  }
}

static void c_close(void *balancer, sy_cc *cc) {
  (void)cc;
  free(balancer);
}

static const char *const configs[3] = {
    RR_CONFIG, "{\"loadBalancingConfig\":[{\"pick_first\":{}}]}",
    "{\"loadBalancingConfig\":[{\"c_stress_random\":{}}]}"};

/* The resolver: a random subset of the pool, with fresh user data. */
static void *churner_main(void *arg) {
  worker *w = (worker *)arg;
  uint64_t rng = w->seed;
  char names[POOL][32];
  long i;
  for (i = 0; i < POOL; i++) snprintf(names[i], sizeof names[i], "127.3.0.%ld:80", i + 1);
  for (i = 0; i < MAX_ITERS && !atomic_load(&stop); i++) {
    uint64_t roll = next_rand(&rng);
    sy_address list[POOL];
    size_t n = 0, k;
    sy_status st;
    for (k = 0; k < POOL; k++) {
      if ((roll >> k) & 1) continue;
      list[n].address = names[k];
      list[n].weight = 1;
      list[n].user_data = NULL;
      if ((roll >> (8 + k)) % 8 != 0) { /* most with user data */
        datum *d = (datum *)calloc(1, sizeof *d);
        CHECK(d != NULL);
        d->magic = DATUM_LIVE;
        atomic_init(&d->releases, 0);
        list[n].user_data = d;
      }
      n++;
    }
    pthread_rwlock_rdlock(&ch_lock);
    if (ch == NULL) {
      st = SY_CLOSED;
      for (k = 0; k < n; k++) free(list[k].user_data); /* never handed over */
    } else {
      for (k = 0; k < n; k++) {
        if (list[k].user_data != NULL) atomic_fetch_add(&handed, 1);
      }
      /* Taken in every case but argument errors: released by the library
       * (already, for SY_CLOSED). */
      st = sy_channel_update_addresses(ch, list, n);
      CHECK(st == SY_OK || st == SY_CLOSED);
      if ((roll >> 40) % 16 == 0) {
        st = sy_channel_update_service_config(ch, configs[(roll >> 44) % 3]);
        CHECK(st == SY_OK || st == SY_CLOSED);
      }
    }
    pthread_rwlock_unlock(&ch_lock);
    sleep_ms((long)((roll >> 48) % 3));
  }
  return NULL;
}

/* The host's transports: connections come and go. */
static void *flapper_main(void *arg) {
  worker *w = (worker *)arg;
  uint64_t rng = w->seed;
  static const uint32_t states[5] = {SY_STATE_READY, SY_STATE_READY, SY_STATE_READY,
                                     SY_STATE_TRANSIENT_FAILURE, SY_STATE_IDLE};
  long i;
  for (i = 0; i < MAX_ITERS && !atomic_load(&stop); i++) {
    uint64_t roll = next_rand(&rng);
    uint64_t id = 0;
    int have = 0;
    pthread_mutex_lock(&ring_mu);
    if (ring_len > 0) {
      id = ring[(roll >> 8) % ring_len];
      have = 1;
    }
    pthread_mutex_unlock(&ring_mu);
    if (!have) {
      sleep_ms(1);
      continue;
    }
    pthread_rwlock_rdlock(&ch_lock);
    if (ch != NULL) {
      sy_status st = sy_channel_report_subconn_state(ch, id, states[roll % 5], "flap");
      CHECK(st == SY_OK || st == SY_CLOSED);
    }
    pthread_rwlock_unlock(&ch_lock);
    if ((roll >> 32) % 4 == 0) sleep_ms(1);
  }
  return NULL;
}

static long env_long(const char *name, long dflt) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0' ? strtol(v, NULL, 10) : dflt;
}

int main(void) {
  long rounds = env_long("SY_STRESS_ROUNDS", 12);
  uint64_t seed = (uint64_t)env_long("SY_STRESS_SEED", (long)time(NULL));
  uint64_t rng;
  sy_host_transport t;
  long round;

  if (rounds < 1 || rounds > 1000) rounds = 12;
  rng = seed * 0x9e3779b97f4a7c15ull + 1;
  printf("stress: %ld rounds, seed %llu\n", rounds, (unsigned long long)seed);
  memset(&t, 0, sizeof t);
  t.connect = on_connect;
  t.shutdown = on_shutdown;
  {
    sy_balancer_callbacks cbs;
    memset(&cbs, 0, sizeof cbs);
    cbs.build = c_build;
    cbs.update_addresses = c_update_addresses;
    cbs.subchannel_state = c_subchannel_state;
    cbs.close = c_close;
    OK(sy_balancer_register("c_stress_random", &cbs, NULL));
  }

  for (round = 0; round < rounds; round++) {
    pthread_t pickers[PICKERS], churner, flapper;
    worker workers[PICKERS + 2];
    sy_runtime *rt = NULL;
    sy_channel *c = NULL;
    uint64_t roll = next_rand(&rng);
    int i;

    atomic_store(&stop, 0);
    pthread_mutex_lock(&ring_mu);
    ring_len = ring_next = 0;
    pthread_mutex_unlock(&ring_mu);
    OK(sy_runtime_new(&rt));
    OK(sy_channel_new(rt, "", configs[roll % 3], &t, NULL, NULL, release_datum, &c));
    pthread_rwlock_wrlock(&ch_lock);
    ch = c;
    pthread_rwlock_unlock(&ch_lock);

    for (i = 0; i < PICKERS + 2; i++) workers[i].seed = next_rand(&rng) | 1;
    for (i = 0; i < PICKERS; i++)
      CHECK(pthread_create(&pickers[i], NULL, picker_main, &workers[i]) == 0);
    CHECK(pthread_create(&churner, NULL, churner_main, &workers[PICKERS]) == 0);
    CHECK(pthread_create(&flapper, NULL, flapper_main, &workers[PICKERS + 1]) == 0);

    /* Let it run, then close (sometimes) and free the channel at random
     * moments while everything else goes on. */
    sleep_ms(20 + (long)((roll >> 8) % 150));
    if ((roll >> 20) % 2 == 0) {
      pthread_rwlock_rdlock(&ch_lock);
      OK(sy_channel_close(ch));
      pthread_rwlock_unlock(&ch_lock);
      sleep_ms((long)((roll >> 24) % 40));
    }
    pthread_rwlock_wrlock(&ch_lock);
    sy_channel_free(ch);
    ch = NULL;
    pthread_rwlock_unlock(&ch_lock);
    /* Readers outlive the channel: picks now fail with SY_CLOSED, held
     * ones are finished. */
    sleep_ms((long)((roll >> 32) % 30));
    atomic_store(&stop, 1);
    for (i = 0; i < PICKERS; i++) CHECK(pthread_join(pickers[i], NULL) == 0);
    CHECK(pthread_join(churner, NULL) == 0);
    CHECK(pthread_join(flapper, NULL) == 0);
    {
      sy_pick_result r;
      while (collect(&r)) {
        check_pick(&r);
        finish(&r, 0);
      }
    }
    sy_runtime_free(rt);
    /* Nothing can return a datum or reach a picker any more: every one was
     * released (freed), once. */
    if (atomic_load(&released) != atomic_load(&handed) ||
        atomic_load(&pickers_freed) != atomic_load(&pickers_made)) {
      fprintf(stderr, "round %ld: %ld user data handed over, %ld released; %ld C pickers made, %ld freed\n",
              round, atomic_load(&handed), atomic_load(&released), atomic_load(&pickers_made),
              atomic_load(&pickers_freed));
      exit(1);
    }
  }
  printf("stress: %ld picks (%ld through C pickers), %ld failed picks, %ld user data released and "
         "%ld C pickers freed once each: all passed\n",
         atomic_load(&picks_ok), atomic_load(&c_dones), atomic_load(&picks_failed),
         atomic_load(&released), atomic_load(&pickers_freed));
  return 0;
}
