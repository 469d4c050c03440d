/* Bad input through the ABI: every case gives its documented status and a
 * message, never a crash. */
#include "common.h"

/* The last error's message is non-empty and starts with the status name. */
static void expect_message(sy_status st) {
  char buf[256];
  size_t n = sy_last_error(buf, sizeof buf);
  const char *name = sy_status_str(st);
  CHECK(n > strlen(name));
  CHECK(strncmp(buf, name, strlen(name)) == 0);
  CHECK(sy_last_status() == (uint32_t)st);
}

#define EXPECT(call, want)          \
  do {                              \
    CHECK_STATUS(call, want);       \
    expect_message(want);           \
  } while (0)

static void noop_subchannel(void *ctx, uint64_t id, const char *a, size_t l, void *u) {
  (void)ctx; (void)id; (void)a; (void)l; (void)u;
}

int main(void) {
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL;
  sy_pick_result r;
  uint32_t state;
  host h;
  sy_host_transport t;
  const char bad_utf8[] = {'a', (char)0xff, (char)0xfe, 0};
  sy_address a;
  sy_address bad_addr;
  sy_balancer_callbacks cbs;

  host_init(&h);
  t = host_transport(&h);

  /* Nothing failed yet on this thread. */
  CHECK(sy_last_error(NULL, 0) == 0);
  CHECK(sy_last_status() == SY_OK);
  CHECK(strcmp(sy_status_str(77777), "SY_UNKNOWN_STATUS") == 0);
  CHECK(strcmp(sy_state_str(9), "UNKNOWN") == 0);

  /* NULL for every pointer argument. */
  EXPECT(sy_runtime_new(NULL), SY_NULL_PARAMETER);
  OK(sy_runtime_new(&rt));
  EXPECT(sy_channel_new(NULL, "", NULL, NULL, NULL, NULL, NULL, &ch), SY_NULL_PARAMETER);
  EXPECT(sy_channel_new(rt, NULL, NULL, NULL, NULL, NULL, NULL, &ch), SY_NULL_PARAMETER);
  EXPECT(sy_channel_new(rt, "", NULL, NULL, NULL, NULL, NULL, NULL), SY_NULL_PARAMETER);
  CHECK(ch == NULL); /* out-parameters are written only on success */
  EXPECT(sy_channel_update_addresses(NULL, NULL, 0), SY_NULL_PARAMETER);
  EXPECT(sy_channel_update_service_config(NULL, "{}"), SY_NULL_PARAMETER);
  EXPECT(sy_channel_report_subconn_state(NULL, 1, SY_STATE_READY, NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_report_resolver_error(NULL, "x"), SY_NULL_PARAMETER);
  EXPECT(sy_channel_state(NULL, &state), SY_NULL_PARAMETER);
  EXPECT(sy_channel_wait_for_state_change(NULL, 0, 1, NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_sync(NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_close(NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_connect(NULL), SY_NULL_PARAMETER);
  EXPECT(sy_reader_new(NULL, &reader), SY_NULL_PARAMETER);
  EXPECT(sy_reader_refresh(NULL), SY_NULL_PARAMETER);
  EXPECT(sy_pick(NULL, NULL, 0, NULL, 0, false, &r), SY_NULL_PARAMETER);
  EXPECT(sy_pick_done(NULL, 0, 0, NULL, 0), SY_NULL_PARAMETER);
  EXPECT(sy_balancer_register(NULL, &cbs, NULL), SY_NULL_PARAMETER);
  EXPECT(sy_balancer_register("x", NULL, NULL), SY_NULL_PARAMETER);
  CHECK(!sy_balancer_registered(NULL));
  expect_message(SY_NULL_PARAMETER);
  EXPECT(sy_cc_new_subconn(NULL, 0, NULL), SY_NULL_PARAMETER);
  EXPECT(sy_cc_connect(NULL, 1), SY_NULL_PARAMETER);
  EXPECT(sy_cc_shutdown_subconn(NULL, 1), SY_NULL_PARAMETER);
  EXPECT(sy_cc_resolve_now(NULL), SY_NULL_PARAMETER);
  EXPECT(sy_cc_update_state(NULL, SY_STATE_READY, NULL), SY_NULL_PARAMETER);
  sy_runtime_free(NULL);
  sy_channel_free(NULL);
  sy_reader_free(NULL);

  /* Malformed or unusable service config, bad target, bad host callbacks. */
  EXPECT(sy_channel_new(rt, "", "{not json", NULL, NULL, NULL, NULL, &ch), SY_INVALID_SERVICE_CONFIG);
  EXPECT(sy_channel_new(rt, "", "{\"loadBalancingConfig\":[{\"no_such_policy\":{}}]}", NULL, NULL,
                        NULL, NULL, &ch),
         SY_INVALID_SERVICE_CONFIG);
  EXPECT(sy_channel_new(rt, "nope://what", NULL, NULL, NULL, NULL, NULL, &ch), SY_INVALID_TARGET);
  {
    sy_host_transport half;
    memset(&half, 0, sizeof half);
    half.connect = noop_subchannel;
    EXPECT(sy_channel_new(rt, "", NULL, &half, NULL, NULL, NULL, &ch), SY_INVALID_ARGUMENT);
  }
  CHECK(ch == NULL);

  /* Invalid UTF-8. */
  EXPECT(sy_channel_new(rt, bad_utf8, NULL, NULL, NULL, NULL, NULL, &ch), SY_INVALID_UTF8);
  EXPECT(sy_channel_new(rt, "", bad_utf8, NULL, NULL, NULL, NULL, &ch), SY_INVALID_UTF8);
  CHECK(!sy_balancer_registered(bad_utf8));
  expect_message(SY_INVALID_UTF8);

  OK(sy_channel_new(rt, "", RR_CONFIG, &t, NULL, NULL, NULL, &ch));
  bad_addr.address = bad_utf8;
  bad_addr.weight = 0;
  bad_addr.user_data = NULL;
  EXPECT(sy_channel_update_addresses(ch, &bad_addr, 1), SY_INVALID_UTF8);
  bad_addr.address = NULL;
  EXPECT(sy_channel_update_addresses(ch, &bad_addr, 1), SY_NULL_PARAMETER);
  EXPECT(sy_channel_update_addresses(ch, NULL, 2), SY_NULL_PARAMETER);
  EXPECT(sy_channel_update_service_config(ch, "[1,2"), SY_INVALID_SERVICE_CONFIG);
  EXPECT(sy_channel_report_resolver_error(ch, bad_utf8), SY_INVALID_UTF8);

  /* Unknown state numbers. */
  EXPECT(sy_channel_report_subconn_state(ch, 1, 5, NULL), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_report_subconn_state(ch, 1, 0xffffffffu, NULL), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_report_subconn_state(ch, 1, SY_STATE_SHUTDOWN, NULL), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_wait_for_state_change(ch, 42, 1, NULL), SY_INVALID_ARGUMENT);

  /* Policy registration checks its callbacks and name. */
  memset(&cbs, 0, sizeof cbs);
  EXPECT(sy_balancer_register("incomplete", &cbs, NULL), SY_INVALID_ARGUMENT);
  EXPECT(sy_balancer_register("", &cbs, NULL), SY_INVALID_ARGUMENT);
  EXPECT(sy_balancer_register(bad_utf8, &cbs, NULL), SY_INVALID_UTF8);

  /* Picks: bad method, a result that was never a pick, bad done arguments. */
  OK(sy_reader_new(ch, &reader));
  EXPECT(sy_pick(reader, bad_utf8, 3, NULL, 0, false, &r), SY_INVALID_UTF8);
  EXPECT(sy_pick(reader, NULL, 5, NULL, 0, false, &r), SY_NULL_PARAMETER);
  EXPECT(sy_pick(reader, NULL, 0, NULL, 0, false, NULL), SY_NULL_PARAMETER);
  memset(&r, 0, sizeof r);
  EXPECT(sy_pick_done(&r, 0, 0, NULL, 0), SY_INVALID_ARGUMENT);
  a.address = "127.9.0.1:1";
  a.weight = 0;
  a.user_data = NULL;
  OK(sy_channel_update_addresses(ch, &a, 1));
  host_wait_connects(&h, 1);
  OK(sy_channel_report_subconn_state(ch, host_id(&h, "127.9.0.1:1"), SY_STATE_READY, NULL));
  OK(sy_channel_sync(ch));
  OK(sy_pick(reader, NULL, 0, NULL, 0, false, &r));
  EXPECT(sy_pick_done(&r, 17, 0, NULL, 0), SY_INVALID_ARGUMENT); /* unknown gRPC code */
  EXPECT(sy_pick_done(&r, 0, 0, NULL, 1), SY_NULL_PARAMETER);
  {
    sy_load_metric m[SY_MAX_LOAD_METRICS + 1];
    int i;
    for (i = 0; i < SY_MAX_LOAD_METRICS + 1; i++) {
      m[i].name = "qps";
      m[i].value = 1.0;
    }
    EXPECT(sy_pick_done(&r, 0, 0, m, SY_MAX_LOAD_METRICS + 1), SY_INVALID_ARGUMENT);
    m[0].name = bad_utf8;
    EXPECT(sy_pick_done(&r, 0, 0, m, 1), SY_INVALID_UTF8);
    m[0].name = "cpu_utilization";
    m[0].value = 0.5;
    /* The failed calls left the pick intact: it can still be done, once. */
    OK(sy_pick_done(&r, 0, 0, m, 2));
  }
  EXPECT(sy_pick_done(&r, 0, 0, NULL, 0), SY_INVALID_ARGUMENT);

  /* Calls after close. */
  OK(sy_channel_close(ch));
  EXPECT(sy_pick(reader, NULL, 0, NULL, 0, false, &r), SY_CLOSED);
  EXPECT(sy_pick(reader, NULL, 0, NULL, 1000, true, &r), SY_CLOSED);
  EXPECT(sy_channel_update_addresses(ch, &a, 1), SY_CLOSED);
  EXPECT(sy_channel_report_subconn_state(ch, 1, SY_STATE_READY, NULL), SY_CLOSED);
  EXPECT(sy_channel_connect(ch), SY_CLOSED);
  OK(sy_channel_close(ch));

  /* A reader freed after its channel, then freed again: detected. */
  sy_channel_free(ch);
  sy_reader_free(reader);
  sy_reader_free(reader);
  expect_message(SY_INVALID_ARGUMENT);
  /* ... and so is a second channel free. */
  sy_channel_free(ch);
  expect_message(SY_INVALID_ARGUMENT);

  /* Channels outliving their runtime. */
  OK(sy_channel_new(rt, "", NULL, &t, NULL, NULL, NULL, &ch));
  sy_runtime_free(rt);
  EXPECT(sy_channel_update_addresses(ch, &a, 1), SY_RUNTIME_GONE);
  sy_channel_free(ch);

  /* Message truncation follows snprintf. */
  {
    char small[8];
    size_t n = sy_last_error(small, sizeof small);
    CHECK(n > 7 && strlen(small) == 7);
  }
  host_destroy(&h);
  printf("bad_input: ok\n");
  return 0;
}
