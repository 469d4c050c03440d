/* A load-balancing policy written in C, registered by name and selected by a
 * channel's service config: "c_ready_random" connects every address and picks
 * uniformly at random among the READY ones (a C picker). */
#include "common.h"

#define MAX_SC 16

typedef struct policy {
  uint64_t ids[MAX_SC];
  uint32_t states[MAX_SC];
  size_t n;
} policy;

/* What a published picker owns: a copy of the READY list's size. */
typedef struct picker_ctx {
  size_t n;
} picker_ctx;

static int builds, closes, pickers_freed, pickers_made, dones, unavailable_dones, bad_dones;
/* SHUTDOWN callbacks: in all, after close (never), and any id heard twice. */
static int shutdowns, shutdowns_after_close, shutdown_twice, shut_by_policy;
static sy_cc *saved_cc; /* kept only to show that using it later is refused */
static pthread_mutex_t counters_mu = PTHREAD_MUTEX_INITIALIZER;

static void bump(int *c) {
  pthread_mutex_lock(&counters_mu);
  (*c)++;
  pthread_mutex_unlock(&counters_mu);
}

static int read_counter(const int *c) {
  int v;
  pthread_mutex_lock(&counters_mu);
  v = *c;
  pthread_mutex_unlock(&counters_mu);
  return v;
}

/* RPC threads: the pick. Reads only its own immutable ctx. */
static uint32_t rr_pick(void *ctx, const sy_pick_args *args, size_t *out_index) {
  const picker_ctx *p = (const picker_ctx *)ctx;
  if (p->n == 0) return SY_PICK_QUEUE;
  *out_index = (size_t)(args->random % p->n);
  return SY_PICK_COMPLETE;
}

/* RPC threads: the outcome sy_pick_done reported. The test passes code 0 or
 * UNAVAILABLE (14) and a latency of 100 ns. */
static void rr_done(void *ctx, uint64_t id, const char *error, size_t error_len,
                    uint64_t latency_ns) {
  (void)ctx;
  (void)id;
  bump(&dones);
  if (error != NULL && error_len == strlen("UNAVAILABLE") && memcmp(error, "UNAVAILABLE", error_len) == 0)
    bump(&unavailable_dones);
  else if (error != NULL || latency_ns != 100)
    bump(&bad_dones);
}

static void rr_free(void *ctx) {
  free(ctx);
  bump(&pickers_freed);
}

/* Loop thread: publish a picker over the READY subchannels. */
static void publish(policy *p, sy_cc *cc) {
  uint64_t ready[MAX_SC];
  size_t n = 0, i;
  sy_picker pk;
  picker_ctx *ctx = (picker_ctx *)malloc(sizeof *ctx);
  CHECK(ctx != NULL);
  for (i = 0; i < p->n; i++) {
    if (p->states[i] == SY_STATE_READY) ready[n++] = p->ids[i];
  }
  ctx->n = n;
  memset(&pk, 0, sizeof pk);
  pk.ctx = ctx;
  pk.pick = rr_pick;
  pk.done = rr_done;
  pk.free = rr_free;
  pk.subchannels = ready;
  pk.subchannels_len = n;
  OK(sy_cc_update_state(cc, n > 0 ? SY_STATE_READY : SY_STATE_CONNECTING, &pk));
  bump(&pickers_made);
}

static void *build(void *builder_ctx) {
  CHECK(strcmp((const char *)builder_ctx, "builder") == 0);
  bump(&builds);
  return calloc(1, sizeof(policy));
}

static bool update_addresses(void *balancer, sy_cc *cc, const sy_address *addrs, size_t len) {
  policy *p = (policy *)balancer;
  size_t i;
  (void)addrs; /* this toy policy needs only the count */
  saved_cc = cc;
  if (p->n > 0) return true; /* this toy policy keeps its first list */
  for (i = 0; i < len && i < MAX_SC; i++) {
    OK(sy_cc_new_subconn(cc, i, &p->ids[i]));
    p->states[i] = SY_STATE_IDLE;
    OK(sy_cc_connect(cc, p->ids[i]));
  }
  p->n = i;
  /* Unknown ids and out-of-range indices are refused. */
  CHECK_STATUS(sy_cc_connect(cc, 987654), SY_NOT_FOUND);
  CHECK_STATUS(sy_cc_new_subconn(cc, 99, &p->ids[0]), SY_INVALID_ARGUMENT);
  publish(p, cc);
  return true;
}

static void subchannel_state(void *balancer, sy_cc *cc, uint64_t id, uint32_t state,
                             const char *error) {
  policy *p = (policy *)balancer;
  size_t i;
  (void)error;
  for (i = 0; i < p->n; i++) {
    if (p->ids[i] != id) continue;
    if (state == SY_STATE_SHUTDOWN) {
      bump(&shutdowns);
      if (p->states[i] == SY_STATE_SHUTDOWN) bump(&shutdown_twice);
    }
    p->states[i] = state;
  }
  if (read_counter(&closes) > 0) bump(&shutdowns_after_close);
  if (state == SY_STATE_TRANSIENT_FAILURE) {
    /* This toy policy drops a failed subchannel: from then on its id is
     * refused (a picker could otherwise hand out a closed transport). */
    sy_picker pk;
    memset(&pk, 0, sizeof pk);
    pk.pick = rr_pick;
    pk.subchannels = &id;
    pk.subchannels_len = 1;
    OK(sy_cc_shutdown_subconn(cc, id));
    CHECK_STATUS(sy_cc_shutdown_subconn(cc, id), SY_NOT_FOUND);
    CHECK_STATUS(sy_cc_connect(cc, id), SY_NOT_FOUND);
    CHECK_STATUS(sy_cc_update_state(cc, SY_STATE_READY, &pk), SY_NOT_FOUND);
    bump(&shut_by_policy);
  }
  if (state != SY_STATE_SHUTDOWN) publish(p, cc);
}

static void close_policy(void *balancer, sy_cc *cc) {
  policy *p = (policy *)balancer;
  size_t i;
  uint64_t id;
  /* Every subchannel heard SHUTDOWN before close. */
  for (i = 0; i < p->n; i++) CHECK(p->states[i] == SY_STATE_SHUTDOWN);
  /* A closing balancer creates no subchannel (as in gRPC). */
  CHECK_STATUS(sy_cc_new_subconn(cc, 0, &id), SY_CLOSED);
  free(balancer);
  bump(&closes);
}


int main(void) {
  sy_balancer_callbacks cbs;
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL;
  host h;
  sy_host_transport t;
  static char builder_ctx[] = "builder";
  const char *addrs[3] = {"127.1.0.1:80", "127.1.0.2:80", "127.1.0.3:80"};
  sy_address list[3];
  int seen[3] = {0, 0, 0};
  int i;

  memset(&cbs, 0, sizeof cbs);
  cbs.build = build;
  cbs.update_addresses = update_addresses;
  cbs.subchannel_state = subchannel_state;
  cbs.close = close_policy;

  CHECK(!sy_balancer_registered("c_ready_random"));
  CHECK(sy_balancer_registered("round_robin"));
  OK(sy_balancer_register("c_ready_random", &cbs, builder_ctx));
  CHECK(sy_balancer_registered("c_ready_random"));
  CHECK(!sy_balancer_registered("C_Ready_Random")); /* names match exactly, as gRPC's */

  host_init(&h);
  t = host_transport(&h);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_new(rt, "", "{\"loadBalancingConfig\":[{\"c_ready_random\":{}}]}", &t, NULL,
                    NULL, NULL, &ch));
  for (i = 0; i < 3; i++) {
    list[i].address = addrs[i];
    list[i].weight = 1;
    list[i].user_data = NULL;
  }
  OK(sy_channel_update_addresses(ch, list, 3));
  host_wait_connects(&h, 3);
  OK(sy_channel_sync(ch));
  CHECK(read_counter(&builds) == 1);

  OK(sy_reader_new(ch, &reader));
  {
    sy_pick_result r;
    CHECK_STATUS(sy_pick(reader, NULL, 0, NULL, 0, false, &r), SY_NO_SUBCHANNEL);
  }
  /* Two of three become READY: picks only ever return those two. */
  OK(sy_channel_report_subconn_state(ch, host_id(&h, addrs[0]), SY_STATE_READY, NULL));
  OK(sy_channel_report_subconn_state(ch, host_id(&h, addrs[2]), SY_STATE_READY, NULL));
  OK(sy_channel_sync(ch));
  for (i = 0; i < 1000; i++) {
    sy_pick_result r;
    int k;
    OK(sy_pick(reader, NULL, 0, NULL, 0, false, &r));
    for (k = 0; k < 3; k++) {
      if (r.address_len == strlen(addrs[k]) && memcmp(r.address, addrs[k], r.address_len) == 0)
        seen[k]++;
    }
    if (i % 4 == 3) {
      /* with a load report: the same outcome reaches the policy */
      sy_load_metric m = {"cpu_utilization", 0.5};
      OK(sy_pick_done(&r, 14, 100, &m, 1));
    } else {
      OK(sy_pick_done(&r, i % 4 == 1 ? 14 : 0, 100, NULL, 0));
    }
  }
  printf("c_ready_random: %d %d %d\n", seen[0], seen[1], seen[2]);
  CHECK(seen[1] == 0 && seen[0] > 300 && seen[2] > 300 && seen[0] + seen[2] == 1000);
  CHECK(read_counter(&dones) == 1000);
  CHECK(read_counter(&unavailable_dones) == 500);
  CHECK(read_counter(&bad_dones) == 0);

  /* The policy shuts a failed subchannel down; its SHUTDOWN comes once. */
  OK(sy_channel_report_subconn_state(ch, host_id(&h, addrs[1]), SY_STATE_TRANSIENT_FAILURE,
                                     "refused"));
  OK(sy_channel_sync(ch));
  OK(sy_channel_sync(ch));
  CHECK(read_counter(&shut_by_policy) == 1);
  CHECK(read_counter(&shutdowns) == 1);

  /* sy_cc outside a callback is refused, not undefined. */
  CHECK_STATUS(sy_cc_resolve_now(saved_cc), SY_WRONG_CONTEXT);
  CHECK_STATUS(sy_cc_resolve_now(NULL), SY_NULL_PARAMETER);

  sy_channel_free(ch);
  CHECK(read_counter(&closes) == 1);
  /* The other two heard SHUTDOWN as the channel closed, before close. */
  CHECK(read_counter(&shutdowns) == 3);
  CHECK(read_counter(&shutdown_twice) == 0);
  CHECK(read_counter(&shutdowns_after_close) == 0);
  sy_reader_free(reader);
  sy_runtime_free(rt);
  /* Every published picker freed once nothing could reach it. */
  CHECK(read_counter(&pickers_freed) == read_counter(&pickers_made));
  host_destroy(&h);
  printf("custom_policy: ok\n");
  return 0;
}
