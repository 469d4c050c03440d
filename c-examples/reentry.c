/* Re-entry from inside a C policy's callbacks: a pick callback (and a
 * picker's free callback) that calls back into the reader running it gets
 * SY_WRONG_CONTEXT, and the outer pick finishes on an intact picker. Before
 * that was refused, the nested sy_pick moved the reader to a newer picker
 * and freed the one still running (the callback then read its freed ctx),
 * and sy_reader_free freed the epoch the later sy_pick_done wrote: heap
 * use-after-free under ASan. Non-blocking calls on other objects work from
 * the callback; blocking ones are refused. */
#include "common.h"

#define MAX_SC 4
#define PICKER_MAGIC 0x5059434bu /* "PYCK": a ctx not freed under its pick */

typedef struct policy {
  uint64_t ids[MAX_SC];
  uint32_t states[MAX_SC];
  size_t n;
} policy;

typedef struct picker_ctx {
  uint32_t magic;
  size_t n;
} picker_ctx;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int pickers_made, pickers_freed;

/* Set by the main thread only (the only thread that picks here). */
static sy_reader *victim;   /* the reader whose picks run the probes */
static sy_reader *other;    /* another reader of the same channel */
static sy_channel *chan;
static host the_host;
static pthread_t main_thread;
static sy_address list[2];
static int probing;         /* probe from the next pick callback */
static int depth;           /* nesting of pick callbacks on this thread */
static int pick_probes;     /* pick callbacks that ran the probes */
static sy_reader *refreshing; /* the reader being refreshed/freed by main */
static sy_status want_in_free; /* what a call on it from a free callback gets */
static int free_probes;     /* free callbacks that ran the probes */

static int counter(const int *c) {
  int v;
  pthread_mutex_lock(&mu);
  v = *c;
  pthread_mutex_unlock(&mu);
  return v;
}

/* Waits (bounded) until the loop has published more than `n` pickers. */
static void wait_pickers_above(int n) {
  int i;
  for (i = 0; i < 500 && counter(&pickers_made) <= n; i++) sleep_ms(10);
  CHECK(counter(&pickers_made) > n);
}

/* Every call that would use `r` from inside a callback it is running. */
static void probe_reader(sy_reader *r, sy_status want) {
  sy_pick_result res;
  sy_buffer *buf = NULL;
  memset(&res, 0, sizeof res);
  CHECK_STATUS(sy_pick(r, NULL, 0, NULL, 0, false, &res), want);
  CHECK_STATUS(sy_pick(r, "/pkg.Svc/M", 10, NULL, 0, false, &res), want);
  CHECK_STATUS(sy_pick(r, NULL, 0, NULL, 50, true, &res), want);
  CHECK(res._token[3] == 0); /* out-parameters are untouched on failure */
  CHECK_STATUS(sy_reader_refresh(r), want);
  CHECK_STATUS(sy_call_unary(r, "/pkg.Svc/M", strlen("/pkg.Svc/M"), NULL, 0,
                             &(sy_call_options){.timeout_ms = 100,
                                                .has_timeout = true}, &buf), want);
  CHECK(buf == NULL);
  sy_reader_free(r); /* refused: nothing freed, the reason recorded */
  CHECK(sy_last_status() == (uint32_t)want);
}

/* RPC thread (main): the pick. */
static uint32_t pick(void *ctx, const sy_pick_args *args, size_t *out_index) {
  const picker_ctx *p = (const picker_ctx *)ctx;
  CHECK(p->magic == PICKER_MAGIC);
  if (probing && depth == 0) {
    sy_pick_result res;
    sy_reader *fresh = NULL;
    int before = counter(&pickers_made);
    depth++;
    probing = 0;
    /* A newer picker than this one, published while it runs: a nested pick
     * that were let through would move the reader to it and free this one. */
    OK(sy_channel_update_addresses(chan, list, 2));
    wait_pickers_above(before);
    sleep_ms(20); /* the loop publishes it right after the policy returns */
    /* Another reader may move on from inside the callback; now this reader
     * is the only one that keeps this picker alive. */
    OK(sy_reader_refresh(other));

    probe_reader(victim, SY_WRONG_CONTEXT);

    /* Another reader: a pick without waiting works (it runs this callback
     * again, nested), and so does finishing it. */
    OK(sy_pick(other, NULL, 0, NULL, 0, false, &res));
    OK(sy_pick_done(&res, 0, 10, NULL, 0));
    /* Blocking calls are refused inside a callback. */
    CHECK_STATUS(sy_pick(other, NULL, 0, NULL, 50, false, &res), SY_WRONG_CONTEXT);
    CHECK_STATUS(sy_channel_sync(chan), SY_WRONG_CONTEXT);
    /* A new reader is fine, and freeing it (it runs nothing). */
    OK(sy_reader_new(chan, &fresh));
    sy_reader_free(fresh);
    depth--;
    pick_probes++;
  }
  /* Still this picker's ctx: it was not freed under us. */
  CHECK(p->magic == PICKER_MAGIC && p->n > 0);
  *out_index = (size_t)(args->random % p->n);
  return SY_PICK_COMPLETE;
}

/* Whichever thread lets go of the picker last. */
static void free_picker(void *ctx) {
  picker_ctx *p = (picker_ctx *)ctx;
  CHECK(p->magic == PICKER_MAGIC);
  if (refreshing != NULL && pthread_equal(pthread_self(), main_thread)) {
    /* main, inside sy_reader_refresh / sy_reader_free of `refreshing` */
    probe_reader(refreshing, want_in_free);
    free_probes++;
  }
  p->magic = 0;
  free(p);
  pthread_mutex_lock(&mu);
  pickers_freed++;
  pthread_mutex_unlock(&mu);
}

/* Loop thread: a picker over the READY subchannels (QUEUE when none). */
static void publish(policy *p, sy_cc *cc) {
  uint64_t ready[MAX_SC];
  size_t n = 0, i;
  sy_picker pk;
  picker_ctx *ctx = (picker_ctx *)malloc(sizeof *ctx);
  CHECK(ctx != NULL);
  for (i = 0; i < p->n; i++) {
    if (p->states[i] == SY_STATE_READY) ready[n++] = p->ids[i];
  }
  ctx->magic = PICKER_MAGIC;
  ctx->n = n;
  memset(&pk, 0, sizeof pk);
  pk.ctx = ctx;
  pk.pick = pick;
  pk.free = free_picker;
  pk.subchannels = ready;
  pk.subchannels_len = n;
  OK(sy_cc_update_state(cc, n > 0 ? SY_STATE_READY : SY_STATE_CONNECTING, &pk));
  pthread_mutex_lock(&mu);
  pickers_made++;
  pthread_mutex_unlock(&mu);
}

static void *build(void *builder_ctx) {
  (void)builder_ctx;
  return calloc(1, sizeof(policy));
}

static bool update_addresses(void *balancer, sy_cc *cc, const sy_address *addrs, size_t len) {
  policy *p = (policy *)balancer;
  size_t i;
  (void)addrs;
  if (p->n > 0) { /* the same list again: publish a fresh picker */
    publish(p, cc);
    return true;
  }
  for (i = 0; i < len && i < MAX_SC; i++) {
    OK(sy_cc_new_subconn(cc, i, &p->ids[i]));
    p->states[i] = SY_STATE_IDLE;
    OK(sy_cc_connect(cc, p->ids[i]));
  }
  p->n = i;
  publish(p, cc);
  return true;
}

static void subchannel_state(void *balancer, sy_cc *cc, uint64_t id, uint32_t state,
                             const char *error) {
  policy *p = (policy *)balancer;
  size_t i;
  (void)error;
  for (i = 0; i < p->n; i++) {
    if (p->ids[i] == id) p->states[i] = state;
  }
  if (state != SY_STATE_SHUTDOWN) publish(p, cc);
}

static void close_policy(void *balancer, sy_cc *cc) {
  (void)cc;
  free(balancer);
}

/* Publishes one more picker (the same address list again) and waits until
 * it is out. */
static void republish(void) {
  int before = counter(&pickers_made);
  OK(sy_channel_update_addresses(chan, list, 2));
  OK(sy_channel_sync(chan));
  wait_pickers_above(before);
}

/* 4. sy_channel_new from a state callback, here the SHUTDOWN that
 *    sy_runtime_free itself publishes: refused (before, it read the runtime
 *    being freed). */
static sy_runtime *dying_rt;
static sy_status new_in_shutdown = SY_OK;
static int shutdown_seen;
static void on_dying_state(void *ctx, uint32_t state) {
  sy_channel *made = NULL;
  (void)ctx;
  if (state != SY_STATE_SHUTDOWN) return;
  shutdown_seen++;
  new_in_shutdown = sy_channel_new(dying_rt, "", NULL, NULL, NULL, NULL, NULL, &made);
  CHECK(made == NULL);
}
static void ignore_sc(void *ctx, uint64_t id, const char *addr, size_t len, void *user_data) {
  (void)ctx; (void)id; (void)addr; (void)len; (void)user_data;
}
static void new_inside_runtime_free(void) {
  sy_channel *ch = NULL;
  sy_host_transport h;
  memset(&h, 0, sizeof h);
  h.connect = ignore_sc;
  h.shutdown = ignore_sc;
  OK(sy_runtime_new(&dying_rt));
  OK(sy_channel_new(dying_rt, "", NULL, &h, on_dying_state, NULL, NULL, &ch));
  sy_runtime_free(dying_rt); /* closes ch on the loop: SHUTDOWN is told */
  CHECK(shutdown_seen == 1);
  CHECK_STATUS(new_in_shutdown, SY_WRONG_CONTEXT);
  sy_channel_free(ch);
}

int main(void) {
  sy_balancer_callbacks cbs;
  sy_runtime *rt = NULL;
  sy_host_transport t;
  const char *addrs[2] = {"127.1.0.1:80", "127.1.0.2:80"};
  sy_pick_result res;
  int i;

  memset(&cbs, 0, sizeof cbs);
  cbs.build = build;
  cbs.update_addresses = update_addresses;
  cbs.subchannel_state = subchannel_state;
  cbs.close = close_policy;
  OK(sy_balancer_register("c_reentry", &cbs, NULL));

  host_init(&the_host);
  t = host_transport(&the_host);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_new(rt, "", "{\"loadBalancingConfig\":[{\"c_reentry\":{}}]}", &t, NULL, NULL,
                    NULL, &chan));
  for (i = 0; i < 2; i++) {
    list[i].address = addrs[i];
    list[i].weight = 1;
    list[i].user_data = NULL;
  }
  OK(sy_channel_update_addresses(chan, list, 2));
  host_wait_connects(&the_host, 2);
  main_thread = pthread_self();
  OK(sy_channel_report_subconn_state(chan, host_id(&the_host, addrs[0]), SY_STATE_READY, NULL));
  OK(sy_channel_sync(chan));
  OK(sy_reader_new(chan, &victim));
  OK(sy_reader_new(chan, &other));

  /* 1. Probes from a pick callback, with and without a method (the hit path
   *    and the general one), and from a pick that may wait. */
  for (i = 0; i < 3; i++) {
    probing = 1;
    if (i == 0) OK(sy_pick(victim, NULL, 0, NULL, 0, false, &res));
    if (i == 1) OK(sy_pick(victim, "/pkg.Svc/M", 10, NULL, 0, false, &res));
    if (i == 2) OK(sy_pick(victim, NULL, 0, NULL, 1000, false, &res));
    CHECK(pick_probes == i + 1);
    /* The pick the outer call returned is whole, and finishes once. */
    CHECK(res.address_len == strlen(addrs[0]) && memcmp(res.address, addrs[0], res.address_len) == 0);
    OK(sy_pick_done(&res, 0, 10, NULL, 0));
    CHECK_STATUS(sy_pick_done(&res, 0, 10, NULL, 0), SY_INVALID_ARGUMENT);
  }
  /* The reader is still usable after every refusal. */
  OK(sy_pick(victim, NULL, 0, NULL, 0, false, &res));
  OK(sy_pick_done(&res, 0, 10, NULL, 0));

  /* 2. Probes from a picker's free callback that runs inside
   *    sy_reader_refresh: `other` moves on first, so `victim` is the last
   *    to let go of the old picker. */
  republish();
  OK(sy_reader_refresh(other));
  refreshing = victim;
  want_in_free = SY_WRONG_CONTEXT;
  OK(sy_reader_refresh(victim));
  refreshing = NULL;
  CHECK(free_probes == 1);

  /* 3. ... and inside sy_reader_free: the reader being freed is already
   *    dead to calls from there (reported as freed, nothing touched). */
  republish();
  OK(sy_reader_refresh(other));
  refreshing = victim;
  want_in_free = SY_INVALID_ARGUMENT;
  sy_reader_free(victim);
  refreshing = NULL;
  CHECK(free_probes == 2);

  sy_reader_free(other);
  sy_channel_free(chan);
  sy_runtime_free(rt);
  CHECK(counter(&pickers_freed) == counter(&pickers_made));
  host_destroy(&the_host);
  new_inside_runtime_free();
  printf("reentry: %d pick callbacks and %d free callbacks refused re-entry: ok\n", pick_probes,
         free_probes);
  return 0;
}
