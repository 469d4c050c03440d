/* The service config's methodConfig through the C ABI, against a real gRPC
 * server (grpcio, interop/server.py):
 *   1. an invalid service config does not fail sy_channel_new_simple: the
 *      channel is TRANSIENT_FAILURE and calls fail UNAVAILABLE with the
 *      parse error, which names the JSON path that is wrong; a valid config
 *      brings it up;
 *   2. a host looks a method's config up through a reader (wait-free) or the
 *      channel: timeout, wait-for-ready, size limits, retry policy;
 *   3. the library's own calls apply it: "timeout":"0.3s" ends a 2.5 s call
 *      with DEADLINE_EXCEEDED near 0.3 s, blocking and started; message size
 *      limits fail RESOURCE_EXHAUSTED both ways;
 *   4. and its retryPolicy (gRFC A6): a method the server does not have,
 *      with UNIMPLEMENTED made retryable, is tried maxAttempts (3) times,
 *      0.16-0.24 s apart, blocking and started, before it fails;
 *   5. "waitForReady":true makes a call to a backend that refuses
 *      connections wait out its deadline, unless the call says false
 *      explicitly (has_wait_for_ready): then it fails fast, UNAVAILABLE. */
#include "echo_server.h"

#include <ctype.h>

#define DELAY "/echo.Echo/Delay"
#define UNARY "/echo.Echo/Unary"

static const char *CONFIG =
    "{\"loadBalancingConfig\":[{\"round_robin\":{}}],\"methodConfig\":["
    "{\"name\":[{\"service\":\"echo.Echo\",\"method\":\"Delay\"}],\"timeout\":\"0.3s\"},"
    "{\"name\":[{\"service\":\"echo.Echo\",\"method\":\"Unary\"}],"
    " \"maxRequestMessageBytes\":10,\"maxResponseMessageBytes\":20},"
    "{\"name\":[{\"service\":\"echo.Echo\"}],\"waitForReady\":true,"
    " \"retryPolicy\":{\"maxAttempts\":9,\"initialBackoff\":\"0.1s\",\"maxBackoff\":\"1s\","
    "  \"backoffMultiplier\":2,\"retryableStatusCodes\":[\"UNAVAILABLE\",\"ABORTED\"]}}]}";

/* Unknown methods (the server answers UNIMPLEMENTED) are retried 3 times,
 * 0.2 s (x 0.8-1.2) apart. */
static const char *RETRY_CONFIG =
    "{\"methodConfig\":[{\"name\":[{\"service\":\"echo.Echo\",\"method\":\"Nope\"}],"
    " \"retryPolicy\":{\"maxAttempts\":3,\"initialBackoff\":\"0.2s\",\"maxBackoff\":\"0.2s\","
    "  \"backoffMultiplier\":1,\"retryableStatusCodes\":[\"UNIMPLEMENTED\"]}}]}";

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Whether `text` contains `word`, ignoring ASCII case: a deadline may end
 * the call on either side, and the server says "Deadline Exceeded". */
static int mentions(const char *text, const char *word) {
  size_t i, j, n = strlen(word);
  for (i = 0; text[i] != '\0'; i++) {
    for (j = 0; j < n && text[i + j] != '\0'; j++)
      if (tolower((unsigned char)text[i + j]) != tolower((unsigned char)word[j])) break;
    if (j == n) return 1;
  }
  return 0;
}

static void expect_rpc_error(sy_status got, uint32_t want_code, const char *want_text) {
  char err[512];
  sy_last_error(err, sizeof err);
  CHECK_STATUS(got, SY_RPC_FAILED);
  CHECK(sy_last_grpc_code() == want_code);
  if (!mentions(err, want_text)) {
    fprintf(stderr, "error %s lacks %s\n", err, want_text);
    exit(1);
  }
  printf("  -> grpc code %u: %s\n", (unsigned)sy_last_grpc_code(), err);
}

static sy_status call(sy_reader *r, const char *method, const char *request, uint64_t timeout_ms) {
  sy_buffer *resp = NULL;
  sy_status st = sy_call_unary(r, method, strlen(method), (const uint8_t *)request, strlen(request),
                               &(sy_call_options){.timeout_ms = timeout_ms, .has_timeout = true},
                               &resp);
  sy_buffer_free(resp);
  return st;
}

/* A started call's outcome. */
typedef struct outcome {
  pthread_mutex_t mu;
  int done;
  sy_status status;
  uint32_t code;
  char message[256];
} outcome;

static void on_done(void *ctx, sy_status st, uint32_t code, const char *msg, sy_buffer *resp) {
  outcome *o = ctx;
  pthread_mutex_lock(&o->mu);
  o->status = st;
  o->code = code;
  snprintf(o->message, sizeof o->message, "%s", msg != NULL ? msg : "");
  o->done = 1;
  pthread_mutex_unlock(&o->mu);
  sy_buffer_free(resp);
}

static void started(const sy_channel *ch, const char *method, const char *request,
                    uint32_t want_code, const char *want_text) {
  outcome o;
  uint64_t id = 0;
  int waited;
  memset(&o, 0, sizeof o);
  pthread_mutex_init(&o.mu, NULL);
  OK(sy_call_unary_start(ch, method, strlen(method), (const uint8_t *)request, strlen(request),
                         NULL, on_done, &o, &id));
  pthread_mutex_lock(&o.mu);
  for (waited = 0; !o.done && waited < 200; waited++) { /* at most 20 s */
    pthread_mutex_unlock(&o.mu);
    sleep_ms(100);
    pthread_mutex_lock(&o.mu);
  }
  CHECK(o.done && o.status == SY_RPC_FAILED && o.code == want_code);
  CHECK(strstr(o.message, want_text) != NULL);
  pthread_mutex_unlock(&o.mu);
  pthread_mutex_destroy(&o.mu);
}

int main(void) {
  echo_server servers;
  sy_runtime *rt = NULL;
  sy_channel_options *opts = NULL;
  sy_channel *ch = NULL;
  sy_reader *r = NULL;
  sy_method_config mc, again;
  char target[64];
  uint32_t state = 0;
  double t, plain, method_timeout;

  echo_server_start(&servers, 1);
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d", servers.ports[0]);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_options_new_insecure(&opts));

  /* 1. An invalid config: the channel is made, and fails calls with why. */
  OK(sy_channel_new_simple(rt, target, "{\"methodConfig\":[{},{\"timeout\":\"3\"}]}", opts, &ch));
  OK(sy_channel_sync(ch));
  OK(sy_channel_state(ch, &state));
  CHECK(state == SY_STATE_TRANSIENT_FAILURE);
  OK(sy_reader_new(ch, &r));
  printf("invalid config:\n");
  expect_rpc_error(call(r, UNARY, "x", 5000), 14 /* UNAVAILABLE */,
                   "methodConfig[1].timeout: \"3\" is not a duration");
  OK(sy_channel_update_service_config(ch, CONFIG));
  OK(sy_channel_sync(ch)); /* applied: the calls below see it */
  CHECK(call(r, "/echo.Echo/Unary", "hi", 5000) == SY_OK);

  /* 2. Lookups: the method's entry, its service's, none. */
  OK(sy_reader_method_config(r, DELAY, &mc));
  CHECK(mc.found && mc.timeout_ms == 300 && !mc.has_wait_for_ready && !mc.has_retry_policy);
  OK(sy_reader_method_config(r, UNARY, &mc));
  CHECK(mc.found && mc.timeout_ms == SY_WAIT_FOREVER);
  CHECK(mc.has_max_request_message_bytes && mc.max_request_message_bytes == 10);
  CHECK(mc.has_max_response_message_bytes && mc.max_response_message_bytes == 20);
  OK(sy_reader_method_config(r, "/echo.Echo/Other", &mc));
  CHECK(mc.found && mc.has_wait_for_ready && mc.wait_for_ready);
  CHECK(mc.has_retry_policy && mc.retry_max_attempts == 5 /* 9, capped */);
  CHECK(mc.retry_initial_backoff_ms == 100 && mc.retry_max_backoff_ms == 1000);
  CHECK(mc.retry_backoff_multiplier == 2.0);
  CHECK(mc.retry_retryable_codes == ((1u << 14) | (1u << 10)));
  OK(sy_channel_method_config(ch, "/echo.Echo/Other", &again));
  CHECK(again.found && again.retry_max_attempts == 5 &&
        again.retry_retryable_codes == mc.retry_retryable_codes);
  OK(sy_channel_method_config(ch, "/other.Svc/M", &mc));
  CHECK(!mc.found && mc.timeout_ms == SY_WAIT_FOREVER);
  CHECK_STATUS(sy_reader_method_config(r, NULL, &mc), SY_NULL_PARAMETER);
  CHECK_STATUS(sy_reader_method_config(r, UNARY, NULL), SY_NULL_PARAMETER);
  CHECK_STATUS(sy_channel_method_config(NULL, UNARY, &mc), SY_NULL_PARAMETER);
  printf("lookups: ok\n");

  /* 3. The library's calls follow it. A 2.5 s call, no caller deadline. */
  printf("timeout 0.3s:\n");
  t = now_ms();
  expect_rpc_error(call(r, DELAY, "2500", SY_WAIT_FOREVER), 4 /* DEADLINE_EXCEEDED */, "deadline");
  t = now_ms() - t;
  method_timeout = t;
  printf("  blocking call ended after %.0f ms\n", t);
  CHECK(t >= 290 && t < 2000);
  t = now_ms();
  started(ch, DELAY, "2500", 4, "deadline");
  t = now_ms() - t;
  printf("  started call ended after %.0f ms\n", t);
  CHECK(t >= 290 && t < 2000);
  /* The caller's earlier deadline wins: 50 ms against the method's 300 (the
   * two calls compared, not a fixed time: valgrind runs this too). */
  t = now_ms();
  expect_rpc_error(call(r, DELAY, "2500", 50), 4, "deadline");
  t = now_ms() - t;
  printf("  with a 50 ms caller deadline: ended after %.0f ms\n", t);
  CHECK(t + 150 < method_timeout);

  printf("size limits:\n");
  CHECK(call(r, UNARY, "hello", 5000) == SY_OK); /* 16 bytes back */
  expect_rpc_error(call(r, UNARY, "hello world", 5000), 8 /* RESOURCE_EXHAUSTED */,
                   "larger than max (11 vs. 10)");
  started(ch, UNARY, "hello world", 8, "larger than max (11 vs. 10)");
  expect_rpc_error(call(r, UNARY, "0123456789", 5000), 8, "larger than max"); /* 21 back */
  started(ch, UNARY, "0123456789", 8, "larger than max");

  sy_reader_free(r);
  sy_channel_free(ch);

  /* 4. Retries: three attempts, two backoffs of at least 0.16 s each; a
   * method no retry policy names fails at the first answer. (Lower bounds
   * only: valgrind runs this too.) */
  printf("retryPolicy:\n");
  OK(sy_channel_new_simple(rt, target, RETRY_CONFIG, opts, &ch));
  OK(sy_reader_new(ch, &r));
  CHECK(call(r, UNARY, "warm", 5000) == SY_OK);
  t = now_ms();
  expect_rpc_error(call(r, "/echo.Echo/Other", "x", 5000), 12 /* UNIMPLEMENTED */, "");
  plain = now_ms() - t;
  printf("  without a retry policy: failed after %.0f ms\n", plain);
  t = now_ms();
  expect_rpc_error(call(r, "/echo.Echo/Nope", "x", 5000), 12, "");
  t = now_ms() - t;
  printf("  blocking call failed after %.0f ms (3 attempts)\n", t);
  CHECK(t >= 320);
  t = now_ms();
  started(ch, "/echo.Echo/Nope", "x", 12, "");
  t = now_ms() - t;
  printf("  started call failed after %.0f ms (3 attempts)\n", t);
  CHECK(t >= 320);

  sy_reader_free(r);
  sy_channel_free(ch);

  /* 5. waitForReady from the config, and a call's explicit false over it. */
  printf("waitForReady:\n");
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d", dead_port());
  OK(sy_channel_new_simple(rt, target, "{\"methodConfig\":[{\"name\":[{}],\"waitForReady\":true}]}",
                           opts, &ch));
  OK(sy_reader_new(ch, &r));
  OK(sy_channel_connect(ch));
  for (state = 0; state != SY_STATE_TRANSIENT_FAILURE;) { /* refused at once */
    sleep_ms(10);
    OK(sy_channel_state(ch, &state));
  }
  t = now_ms();
  expect_rpc_error(call(r, UNARY, "x", 300), 4 /* DEADLINE_EXCEEDED */, "deadline");
  t = now_ms() - t;
  printf("  waited %.0f ms through TRANSIENT_FAILURE\n", t);
  CHECK(t >= 290);
  {
    sy_buffer *resp = NULL;
    sy_call_options fail_fast = {.timeout_ms = 5000,
                                 .has_timeout = true,
                                 .wait_for_ready = false,
                                 .has_wait_for_ready = true};
    expect_rpc_error(sy_call_unary(r, UNARY, strlen(UNARY), (const uint8_t *)"x", 1, &fail_fast,
                                   &resp),
                     14 /* UNAVAILABLE */, "");
    CHECK(resp == NULL);
  }

  sy_reader_free(r);
  sy_channel_free(ch);
  sy_channel_options_free(opts);
  sy_runtime_free(rt);
  echo_server_stop(&servers);
  printf("service_config: ok\n");
  return 0;
}
