/* A policy written in C that acts on what each RPC's done reports, as an
 * outlier-ejecting or weighted policy must: "c_outlier" picks at random
 * among the READY subchannels it has not ejected, and ejects one after
 * EJECT_AFTER failures in a row. Its picker's `done_info` callback gets the
 * gRPC status code, the latency and the server's load metrics of every RPC,
 * whether it was finished with sy_reader_done (the reader's kept pick),
 * with sy_pick_done (a pick's token), or never (CANCELLED).
 *
 * The ejection is published from the done callback itself, through a
 * `sy_balancer_waker`: a done callback runs on an RPC thread, where no
 * sy_cc_* call is allowed, so it posts a function that the loop runs as one
 * of the policy's callbacks (what a timer thread of the policy's own would
 * do too: here the main thread posts the return of the ejected backend).
 *
 * Host transports, three addresses; the host plays the backends: the
 * second fails every RPC with UNAVAILABLE and reports a high CPU load. */
#include "common.h"

#define MAX_SC 8
#define EJECT_AFTER 5

/* What the policy learned per subchannel, shared by the done callbacks
 * (any RPC thread) and the picks (which read `ejected`). */
typedef struct stats {
  uint64_t id;
  int calls, ok, failed, cancelled, failures_in_a_row, ejected, bad_reports;
  uint64_t latency_ns;
  double cpu; /* the latest cpu_utilization reported */
  double qps; /* the latest qps reported */
} stats;

static stats table[MAX_SC];
static size_t table_len;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* The row of subchannel `id`, made on first sight. Under `mu`. */
static stats *row(uint64_t id) {
  size_t i;
  for (i = 0; i < table_len; i++) {
    if (table[i].id == id) return &table[i];
  }
  CHECK(table_len < MAX_SC);
  table[table_len].id = id;
  return &table[table_len++];
}

typedef struct policy {
  uint64_t ids[MAX_SC];
  uint32_t states[MAX_SC];
  size_t n;
} policy;

/* Posts to the policy from any thread (made in its first callback). */
static sy_balancer_waker *waker;
static sy_cc *policy_cc; /* the same for the balancer's life */
static int republished; /* pickers published by posted runs (under `mu`) */

typedef struct picker_ctx {
  uint64_t ids[MAX_SC];
  size_t n;
} picker_ctx;

/* RPC threads: uniform over the READY subchannels not ejected. */
static uint32_t pick(void *ctx, const sy_pick_args *args, size_t *out_index) {
  const picker_ctx *p = (const picker_ctx *)ctx;
  size_t usable[MAX_SC], n = 0, i;
  pthread_mutex_lock(&mu);
  for (i = 0; i < p->n; i++) {
    if (!row(p->ids[i])->ejected) usable[n++] = i;
  }
  pthread_mutex_unlock(&mu);
  if (n == 0) return SY_PICK_QUEUE;
  *out_index = usable[args->random % n];
  return SY_PICK_COMPLETE;
}

static int named(const sy_done_metric *m, const char *name) {
  return m->name_len == strlen(name) && memcmp(m->name, name, m->name_len) == 0;
}

static void publish(policy *p, sy_cc *cc);

/* The loop thread, as one of the policy's callbacks: a new picker
 * (without the ejected). */
static void republish(void *balancer, sy_cc *cc, void *arg) {
  (void)arg;
  publish((policy *)balancer, cc);
  pthread_mutex_lock(&mu);
  republished++;
  pthread_mutex_unlock(&mu);
}

/* The loop thread: the ejected backend returns. */
static void uneject(void *balancer, sy_cc *cc, void *arg) {
  pthread_mutex_lock(&mu);
  row(*(const uint64_t *)arg)->ejected = 0;
  row(*(const uint64_t *)arg)->failures_in_a_row = 0;
  pthread_mutex_unlock(&mu);
  republish(balancer, cc, NULL);
}

/* RPC threads: everything the RPC's done reported. */
static void done_info(void *ctx, const sy_done_info *info) {
  size_t i;
  stats *s;
  int ejected_now = 0;
  (void)ctx;
  pthread_mutex_lock(&mu);
  s = row(info->subchannel_id);
  s->calls++;
  s->latency_ns += info->latency_ns;
  /* The message and the code agree: none exactly when OK. */
  if ((info->grpc_code == 0) != (info->error == NULL && info->error_len == 0)) s->bad_reports++;
  if (info->metrics_len > 0 && info->metrics == NULL) s->bad_reports++;
  for (i = 0; i < info->metrics_len; i++) {
    if (named(&info->metrics[i], "cpu_utilization"))
      s->cpu = info->metrics[i].value;
    else if (named(&info->metrics[i], "qps"))
      s->qps = info->metrics[i].value;
    else
      s->bad_reports++;
  }
  if (info->grpc_code == 0) {
    s->ok++;
    s->failures_in_a_row = 0;
  } else if (info->grpc_code == 1) {
    s->cancelled++; /* the caller gave up: not the backend's fault */
  } else {
    s->failed++;
    if (++s->failures_in_a_row >= EJECT_AFTER && !s->ejected) s->ejected = ejected_now = 1;
  }
  pthread_mutex_unlock(&mu);
  /* No sy_cc_* here (an RPC thread): the loop publishes, soon. */
  if (ejected_now) OK(sy_balancer_waker_run(waker, republish, NULL));
}

/* Never called: `done_info` takes its place. */
static void plain_done(void *ctx, uint64_t id, const char *e, size_t l, uint64_t ns) {
  (void)ctx; (void)id; (void)e; (void)l; (void)ns;
  CHECK(0 && "the plain done callback was called although done_info is set");
}

static void free_picker(void *ctx) { free(ctx); }

static void publish(policy *p, sy_cc *cc) {
  sy_picker pk;
  picker_ctx *ctx = (picker_ctx *)calloc(1, sizeof *ctx);
  size_t i;
  CHECK(ctx != NULL);
  pthread_mutex_lock(&mu);
  for (i = 0; i < p->n; i++) {
    if (p->states[i] == SY_STATE_READY && !row(p->ids[i])->ejected) ctx->ids[ctx->n++] = p->ids[i];
  }
  pthread_mutex_unlock(&mu);
  memset(&pk, 0, sizeof pk);
  pk.ctx = ctx;
  pk.pick = pick;
  pk.done = plain_done;
  pk.done_info = done_info;
  pk.free = free_picker;
  pk.subchannels = ctx->ids;
  pk.subchannels_len = ctx->n;
  OK(sy_cc_update_state(cc, ctx->n > 0 ? SY_STATE_READY : SY_STATE_CONNECTING, &pk));
}

static void *build(void *builder_ctx) {
  (void)builder_ctx;
  return calloc(1, sizeof(policy));
}

static bool update_addresses(void *balancer, sy_cc *cc, const sy_address *addrs, size_t len) {
  policy *p = (policy *)balancer;
  size_t i;
  (void)addrs;
  if (p->n > 0) return true; /* this example keeps its first list */
  if (waker == NULL) OK(sy_cc_waker_new(cc, &waker));
  policy_cc = cc;
  for (i = 0; i < len && i < MAX_SC; i++) {
    OK(sy_cc_new_subconn(cc, i, &p->ids[i]));
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

static stats snapshot(uint64_t id) {
  stats s;
  pthread_mutex_lock(&mu);
  s = *row(id);
  pthread_mutex_unlock(&mu);
  return s;
}

int main(void) {
  sy_balancer_callbacks cbs;
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL;
  host h;
  sy_host_transport t;
  const char *addrs[3] = {"127.1.1.1:80", "127.1.1.2:80", "127.1.1.3:80"};
  sy_address list[3];
  uint64_t ids[3], bad;
  stats s[3];
  int i, k, picked_bad_after_ejection = 0;

  memset(&cbs, 0, sizeof cbs);
  cbs.build = build;
  cbs.update_addresses = update_addresses;
  cbs.subchannel_state = subchannel_state;
  cbs.close = close_policy;
  OK(sy_balancer_register("c_outlier", &cbs, NULL));

  host_init(&h);
  t = host_transport(&h);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_new(rt, "", "{\"loadBalancingConfig\":[{\"c_outlier\":{}}]}", &t, NULL, NULL,
                    NULL, &ch));
  for (i = 0; i < 3; i++) {
    list[i].address = addrs[i];
    list[i].weight = 1;
    list[i].user_data = NULL;
  }
  OK(sy_channel_update_addresses(ch, list, 3));
  host_wait_connects(&h, 3);
  for (i = 0; i < 3; i++) {
    ids[i] = host_id(&h, addrs[i]);
    OK(sy_channel_report_subconn_state(ch, ids[i], SY_STATE_READY, NULL));
  }
  OK(sy_channel_sync(ch));
  bad = ids[1];
  OK(sy_reader_new(ch, &reader));

  /* 300 RPCs through the reader's kept pick: the bad backend fails each with
   * UNAVAILABLE after 2 us at 90% CPU, the others succeed after 1 us at 20%
   * CPU and 50 qps. */
  for (i = 0; i < 300; i++) {
    sy_borrowed_pick p;
    OK(sy_reader_pick(reader, NULL, &p));
    if (p.subchannel_id == bad) {
      sy_load_metric load[1] = {{"cpu_utilization", 0.9}};
      if (snapshot(bad).ejected) picked_bad_after_ejection++;
      OK(sy_reader_done(reader, 14, 2000, load, 1));
    } else {
      sy_load_metric load[2] = {{"cpu_utilization", 0.2}, {"qps", 50}};
      OK(sy_reader_done(reader, 0, 1000, load, 2));
    }
  }
  /* 30 more through a pick's token, finished after the next pick (as an
   * asynchronous stack does): the same reports reach the policy. */
  for (i = 0; i < 30; i++) {
    sy_pick_result r;
    OK(sy_pick(reader, NULL, 0, NULL, 0, false, &r));
    CHECK(r.subchannel_id != bad);
    {
      sy_load_metric load[2] = {{"cpu_utilization", 0.3}, {"qps", 60}};
      OK(sy_pick_done(&r, 0, 1000, load, 2));
    }
  }
  /* A kept pick never finished: the reader's next pick reports it CANCELLED. */
  {
    sy_borrowed_pick p, q;
    OK(sy_reader_pick(reader, NULL, &p));
    OK(sy_reader_pick(reader, NULL, &q));
    OK(sy_reader_done(reader, 0, 1000, NULL, 0));
    CHECK(snapshot(p.subchannel_id).cancelled == 1);
  }

  for (k = 0; k < 3; k++) s[k] = snapshot(ids[k]);
  printf("c_outlier: calls %d %d %d; bad: %d failed, ejected %d, cpu %.1f; good cpu %.1f qps %.0f\n",
         s[0].calls, s[1].calls, s[2].calls, s[1].failed, s[1].ejected, s[1].cpu, s[0].cpu,
         s[0].qps);
  /* The code: the bad backend was ejected after exactly EJECT_AFTER
   * UNAVAILABLEs and never picked again. */
  CHECK(s[1].ejected && s[1].failed == EJECT_AFTER && s[1].ok == 0 && s[1].calls == EJECT_AFTER);
  CHECK(picked_bad_after_ejection == 0);
  CHECK(!s[0].ejected && !s[2].ejected && s[0].failed == 0 && s[2].failed == 0);
  CHECK(s[0].ok + s[2].ok == 300 - EJECT_AFTER + 30 + 1);
  CHECK(s[0].cancelled + s[2].cancelled == 1);
  /* The latency, summed per subchannel. */
  CHECK(s[1].latency_ns == 2000u * EJECT_AFTER);
  CHECK(s[0].latency_ns == 1000u * (uint64_t)s[0].ok && s[2].latency_ns == 1000u * (uint64_t)s[2].ok);
  /* The load: the latest report of each backend. */
  CHECK(s[1].cpu == 0.9 && s[1].qps == 0);
  CHECK((s[0].cpu == 0.3 || s[2].cpu == 0.3) && (s[0].qps == 60 || s[2].qps == 60));
  for (k = 0; k < 3; k++) CHECK(s[k].bad_reports == 0);
  /* The ejection was published once, by the run the done callback posted. */
  OK(sy_channel_sync(ch));
  pthread_mutex_lock(&mu);
  CHECK(republished == 1);
  pthread_mutex_unlock(&mu);

  /* The main thread posts the return (a policy's timer would): once the loop
   * has run it, picks reach the backend again. */
  OK(sy_balancer_waker_run(waker, uneject, &bad));
  OK(sy_channel_sync(ch));
  CHECK(!snapshot(bad).ejected);
  for (i = 0, k = 0; i < 100 && !k; i++) {
    sy_borrowed_pick p;
    OK(sy_reader_pick(reader, NULL, &p));
    k = p.subchannel_id == bad;
    OK(sy_reader_done(reader, 0, 1000, NULL, 0));
  }
  CHECK(k);
  CHECK_STATUS(sy_balancer_waker_run(waker, NULL, NULL), SY_NULL_PARAMETER);
  {
    /* A waker is made inside the balancer's callbacks only. */
    sy_balancer_waker *other = NULL;
    CHECK_STATUS(sy_cc_waker_new(policy_cc, &other), SY_WRONG_CONTEXT);
    CHECK(other == NULL);
  }

  sy_reader_free(reader);
  sy_channel_free(ch);
  /* The balancer is gone: posts are refused, the waker is still ours. */
  CHECK_STATUS(sy_balancer_waker_run(waker, republish, NULL), SY_CLOSED);
  sy_balancer_waker_free(waker);
  sy_runtime_free(rt);
  host_destroy(&h);
  printf("outlier_policy: ok\n");
  return 0;
}
