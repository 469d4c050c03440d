/* Bad input through the ABI: every case gives its documented status and a
 * message, never a crash. */
#include "common.h"

#include <stdint.h>

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

/* A completion callback that tries blocking calls from inside (refused). */
typedef struct inside {
  pthread_mutex_t mu;
  int done;
  sy_status status;
  uint32_t code;
  sy_status blocking_call;
  sy_status close_call;
  sy_status start_call;
  uint32_t free_channel; /* sy_last_status() after sy_channel_free */
  uint32_t free_runtime; /* ... and after sy_runtime_free */
} inside;

static void ignore_done(void *ctx, sy_status st, uint32_t code, const char *msg, sy_buffer *resp) {
  (void)ctx; (void)st; (void)code; (void)msg;
  sy_buffer_free(resp);
}

static sy_reader *inside_reader; /* a reader of the channel below */
static sy_channel *inside_channel;
static sy_runtime *inside_runtime;

static void on_done_inside(void *ctx, sy_status st, uint32_t code, const char *msg,
                           sy_buffer *resp) {
  inside *in = (inside *)ctx;
  sy_buffer *r2 = NULL;
  (void)msg;
  CHECK(resp == NULL);
  pthread_mutex_lock(&in->mu);
  in->status = st;
  in->code = code;
  in->blocking_call =
      sy_call_unary(inside_reader, "/a/b", 4, NULL, 0,
                    &(sy_call_options){.wait_for_ready = true}, &r2);
  in->close_call = sy_channel_close(inside_channel);
  /* Freeing the channel or runtime running this callback would wait for
   * this very thread: refused, nothing freed, the reason recorded. */
  sy_channel_free(inside_channel);
  in->free_channel = sy_last_status();
  sy_runtime_free(inside_runtime);
  in->free_runtime = sy_last_status();
  /* Non-blocking: allowed (and fails fast again; its callback is ignored). */
  in->start_call = sy_call_unary_start(inside_channel, "/a/b", 4, NULL, 0,
                                       &(sy_call_options){.timeout_ms = 1000, .has_timeout = true},
                                       ignore_done, NULL, NULL);
  in->done = 1;
  pthread_mutex_unlock(&in->mu);
}

/* Managed channels and calls: options, sy_call_unary, sy_call_unary_start,
 * sy_buffer. None of this needs a server: the arguments are checked first. */
static void bad_calls(sy_runtime *rt, sy_channel *host_ch) {
  const char bad_utf8[] = {'/', (char)0xff, (char)0xfe, 0};
  sy_channel_options *o = NULL;
  sy_channel *ch = NULL;
  sy_reader *r = NULL;
  sy_reader *host_r = NULL;
  sy_buffer *resp = NULL;
  sy_metadata md;
  const uint8_t *v = NULL;
  size_t vlen = 0;
  const size_t huge = (size_t)-1; /* a negative length from C */
  host h2;
  sy_host_transport t2;

  /* Options. */
  EXPECT(sy_channel_options_new(NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_set_insecure(NULL, true), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_set_tls_roots_pem(NULL, (const uint8_t *)"x", 1), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_set_keepalive(NULL, 1, 1, false), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_set_backoff(NULL, 1, 1, 1), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_set_backoff_growth(NULL, 1.6, 0.2), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_set_call_threads(NULL, 1), SY_NULL_PARAMETER);
  sy_channel_options_free(NULL);
  /* The one-call builders and the short channel path. */
  EXPECT(sy_channel_options_new_insecure(NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_new_tls(NULL, 0, NULL), SY_NULL_PARAMETER);
  o = NULL;
  EXPECT(sy_channel_options_new_tls(NULL, 5, &o), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_new_tls((const uint8_t *)"not pem", 7, &o), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_new_tls((const uint8_t *)"x", huge, &o), SY_INVALID_ARGUMENT);
  CHECK(o == NULL); /* written on success only */
  OK(sy_channel_options_new_tls(NULL, 0, &o)); /* the bundled roots */
  EXPECT(sy_channel_new_simple(NULL, "127.0.0.1:1", NULL, o, &ch), SY_NULL_PARAMETER);
  EXPECT(sy_channel_new_simple(rt, NULL, NULL, o, &ch), SY_NULL_PARAMETER);
  /* An invalid config is the channel's state (TRANSIENT_FAILURE), not an error. */
  OK(sy_channel_new_simple(rt, "127.0.0.1:1", "{not json", o, &ch));
  sy_channel_free(ch);
  ch = NULL;
  EXPECT(sy_channel_new_simple(rt, "127.0.0.1:1", NULL, o, NULL), SY_NULL_PARAMETER);
  sy_channel_options_free(o);
  /* The credentials are not optional on the short path. */
  EXPECT(sy_channel_new_simple(rt, "127.0.0.1:1", NULL, NULL, &ch), SY_NULL_PARAMETER);
  CHECK(ch == NULL);
  /* The plaintext channel in one call checks its arguments the same way. */
  EXPECT(sy_channel_new_insecure(NULL, "127.0.0.1:1", NULL, &ch), SY_NULL_PARAMETER);
  EXPECT(sy_channel_new_insecure(rt, NULL, NULL, &ch), SY_NULL_PARAMETER);
  EXPECT(sy_channel_new_insecure(rt, bad_utf8, NULL, &ch), SY_INVALID_UTF8);
  EXPECT(sy_channel_new_insecure(rt, "127.0.0.1:1", NULL, NULL), SY_NULL_PARAMETER);
  CHECK(ch == NULL);
  OK(sy_channel_options_new(&o));
  EXPECT(sy_channel_options_set_tls_roots_pem(o, NULL, 5), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_set_tls_roots_pem(o, (const uint8_t *)"x", huge), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_set_tls_roots_pem(o, (const uint8_t *)"not pem", 7), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_set_tls_roots_pem(o, NULL, 0), SY_INVALID_ARGUMENT); /* no certificate */
  EXPECT(sy_channel_options_set_tls_server_name(o, NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_set_tls_server_name(o, bad_utf8), SY_INVALID_UTF8);
  EXPECT(sy_channel_options_set_tls_server_name(o, "no spaces allowed"), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_set_client_cert(o, NULL, 3, (const uint8_t *)"k", 1), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_set_client_cert(o, (const uint8_t *)"c", 1, (const uint8_t *)"k", 1),
         SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_set_backoff(o, 5000, 1000, 0), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_set_backoff_growth(o, 0.5, 0.2), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_set_backoff_growth(o, 1.6, 2.0), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_set_call_threads(o, 0), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_set_call_threads(o, SY_MAX_CALL_THREADS + 1), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_set_user_agent(o, NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_options_set_user_agent(o, bad_utf8), SY_INVALID_UTF8);
  EXPECT(sy_channel_options_set_user_agent(o, "new\nline"), SY_INVALID_ARGUMENT);
  EXPECT(sy_channel_options_set_user_agent(o, "caf\xc3\xa9/1"), SY_INVALID_ARGUMENT);
  OK(sy_channel_options_set_user_agent(o, "")); /* none: the library's alone */
  /* Transport settings conflict with each other, and with a host transport. */
  OK(sy_channel_options_set_insecure(o, true));
  OK(sy_channel_options_set_tls_server_name(o, "example.com"));
  EXPECT(sy_channel_new_with_options(rt, "127.0.0.1:1", NULL, o, NULL, NULL, NULL, NULL, &ch),
         SY_INVALID_ARGUMENT);
  OK(sy_channel_options_set_tls_server_name(o, "")); /* back to the default */
  host_init(&h2);
  t2 = host_transport(&h2);
  EXPECT(sy_channel_new_with_options(rt, "", NULL, o, &t2, NULL, NULL, NULL, &ch),
         SY_INVALID_ARGUMENT);
  CHECK(ch == NULL);
  OK(sy_channel_options_set_keepalive(o, 0, 0, false));
  OK(sy_channel_options_set_call_threads(o, 1));
  /* Nothing listens on port 1: calls fail fast once the connection is refused. */
  OK(sy_channel_new_with_options(rt, "127.0.0.1:1", NULL, o, NULL, NULL, NULL, NULL, &ch));
  sy_channel_options_free(o);
  OK(sy_reader_new(ch, &r));

  /* sy_call_unary. */
  EXPECT(sy_call_unary(NULL, "/a/b", 4, NULL, 0, NULL, &resp), SY_NULL_PARAMETER);
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0, NULL, NULL), SY_NULL_PARAMETER);
  EXPECT(sy_call_unary(r, NULL, 0, NULL, 0, NULL, &resp), SY_NULL_PARAMETER);
  EXPECT(sy_call_unary(r, bad_utf8, strlen(bad_utf8), NULL, 0, NULL, &resp), SY_INVALID_UTF8);
  EXPECT(sy_call_unary(r, "no-slash", 8, NULL, 0, NULL, &resp), SY_INVALID_ARGUMENT);
  EXPECT(sy_call_unary(r, "/", 1, NULL, 0, NULL, &resp), SY_INVALID_ARGUMENT);
  EXPECT(sy_call_unary(r, "/a/b c", 6, NULL, 0, NULL, &resp), SY_INVALID_ARGUMENT);
  EXPECT(sy_call_unary(r, "/a\x7f", 3, NULL, 0, NULL, &resp), SY_INVALID_ARGUMENT);
  EXPECT(sy_call_unary(r, "/a?b", 4, NULL, 0, NULL, &resp), SY_INVALID_ARGUMENT);
  EXPECT(sy_call_unary(r, "/a/b", 1, NULL, 0, NULL, &resp), SY_INVALID_ARGUMENT); /* "/" */
  EXPECT(sy_call_unary(r, "/a/b", huge, NULL, 0, NULL, &resp), SY_INVALID_ARGUMENT);
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 5, NULL, &resp), SY_NULL_PARAMETER);
  EXPECT(sy_call_unary(r, "/a/b", 4, (const uint8_t *)"x", huge, NULL, &resp),
         SY_INVALID_ARGUMENT);
  EXPECT(sy_call_unary(r, "/a/b", 4, (const uint8_t *)"x", (size_t)1 << 32, NULL, &resp),
         SY_INVALID_ARGUMENT); /* over gRPC's 4 GiB frame limit */
  {
    /* A value without its has_ flag is refused, not ignored. */
    sy_call_options opts = {0};
    opts.timeout_ms = 5000;
    EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0, &opts, &resp), SY_INVALID_ARGUMENT);
    opts.timeout_ms = 0;
    opts.request_hash = 42;
    EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0, &opts, &resp), SY_INVALID_ARGUMENT);
  }
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.metadata = NULL, .metadata_len = 1}, &resp),
         SY_NULL_PARAMETER);
  md.key = "x-ok";
  md.value = "fine";
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.metadata = &md, .metadata_len = huge},
                       &resp), SY_INVALID_ARGUMENT);
  md.key = NULL;
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.metadata = &md, .metadata_len = 1},
                       &resp), SY_NULL_PARAMETER);
  md.key = "x-ok";
  md.value = NULL;
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.metadata = &md, .metadata_len = 1},
                       &resp), SY_NULL_PARAMETER);
  md.value = bad_utf8;
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.metadata = &md, .metadata_len = 1},
                       &resp), SY_INVALID_UTF8);
  md.value = "two\nlines";
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.metadata = &md, .metadata_len = 1},
                       &resp), SY_INVALID_ARGUMENT);
  md.value = "fine";
  md.key = "grpc-timeout";
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.metadata = &md, .metadata_len = 1},
                       &resp), SY_INVALID_ARGUMENT);
  md.key = "bad key";
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.metadata = &md, .metadata_len = 1},
                       &resp), SY_INVALID_ARGUMENT);
  md.key = "";
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.metadata = &md, .metadata_len = 1},
                       &resp), SY_INVALID_ARGUMENT);
  CHECK(resp == NULL);
  /* Well-formed, but nobody listens: the RPC fails with UNAVAILABLE. */
  md.key = "X-Ok";
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.timeout_ms = 5000, .has_timeout = true, .metadata = &md,
                                          .metadata_len = 1},
                       &resp), SY_RPC_FAILED);
  CHECK(sy_last_grpc_code() == 14);
  CHECK(resp == NULL);

  /* A channel whose transports are the host's has no calls. */
  OK(sy_reader_new(host_ch, &host_r));
  EXPECT(sy_call_unary(host_r, "/a/b", 4, NULL, 0, NULL, &resp), SY_INVALID_ARGUMENT);
  {
    char buf[256];
    sy_last_error(buf, sizeof buf);
    CHECK(strstr(buf, "host") != NULL);
  }
  EXPECT(sy_call_unary_start(host_ch, "/a/b", 4, NULL, 0, NULL, ignore_done, NULL, NULL),
         SY_INVALID_ARGUMENT);
  sy_reader_free(host_r);

  /* sy_call_unary_start: checked up front; the callback never runs then. */
  EXPECT(sy_call_unary_start(NULL, "/a/b", 4, NULL, 0, NULL, ignore_done, NULL, NULL),
         SY_NULL_PARAMETER);
  EXPECT(sy_call_unary_start(ch, "/a/b", 4, NULL, 0, NULL, NULL, NULL, NULL), SY_NULL_PARAMETER);
  EXPECT(sy_call_unary_start(ch, bad_utf8, strlen(bad_utf8), NULL, 0, NULL, ignore_done, NULL,
                             NULL),
         SY_INVALID_UTF8);
  EXPECT(sy_call_unary_start(ch, "/a/b", huge, NULL, 0, NULL, ignore_done, NULL, NULL),
         SY_INVALID_ARGUMENT);
  EXPECT(sy_call_unary_start(ch, "/a/b", 4, (const uint8_t *)"x", huge, NULL, ignore_done, NULL,
                             NULL),
         SY_INVALID_ARGUMENT);
  EXPECT(sy_call_unary_start(ch, "/a/b", 4, NULL, 0,
                             &(sy_call_options){.metadata = &md, .metadata_len = huge},
                             ignore_done, NULL, NULL),
         SY_INVALID_ARGUMENT);
  EXPECT(sy_call_unary_start(ch, "/a/b", 4, NULL, 0, &(sy_call_options){.timeout_ms = 1},
                             ignore_done, NULL, NULL),
         SY_INVALID_ARGUMENT); /* timeout_ms without has_timeout */

  /* Inside a completion callback, blocking calls are refused. */
  {
    inside in;
    int i;
    memset(&in, 0, sizeof in);
    pthread_mutex_init(&in.mu, NULL);
    inside_reader = r;
    inside_channel = ch;
    inside_runtime = rt;
    OK(sy_call_unary_start(ch, "/a/b", 4, NULL, 0,
                           &(sy_call_options){.timeout_ms = 5000, .has_timeout = true},
                           on_done_inside, &in, NULL));
    for (i = 0; i < 500; i++) {
      int d;
      pthread_mutex_lock(&in.mu);
      d = in.done;
      pthread_mutex_unlock(&in.mu);
      if (d) break;
      sleep_ms(10);
    }
    CHECK(in.done);
    CHECK(in.status == SY_RPC_FAILED && in.code == 14);
    CHECK(in.blocking_call == SY_WRONG_CONTEXT);
    CHECK(in.close_call == SY_WRONG_CONTEXT);
    CHECK(in.free_channel == SY_WRONG_CONTEXT);
    CHECK(in.free_runtime == SY_WRONG_CONTEXT);
    CHECK(in.start_call == SY_OK);
    pthread_mutex_destroy(&in.mu);
  }

  /* Buffers: NULL-safe accessors. */
  CHECK(sy_buffer_data(NULL) == NULL);
  CHECK(sy_buffer_len(NULL) == 0);
  sy_buffer_free(NULL);
  EXPECT(sy_buffer_trailer(NULL, "k", 0, &v, &vlen), SY_NULL_PARAMETER);
  EXPECT(sy_buffer_header(NULL, "k", 0, &v, &vlen), SY_NULL_PARAMETER);

  /* After close. */
  OK(sy_channel_close(ch));
  EXPECT(sy_call_unary(r, "/a/b", 4, NULL, 0,
                       &(sy_call_options){.wait_for_ready = true}, &resp), SY_CLOSED);
  EXPECT(sy_call_unary_start(ch, "/a/b", 4, NULL, 0, NULL, ignore_done, NULL, NULL),
         SY_CLOSED);
  sy_reader_free(r);
  sy_channel_free(ch);
  host_destroy(&h2);
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
  EXPECT(sy_channel_get_state(NULL, true, &state), SY_NULL_PARAMETER);
  EXPECT(sy_channel_wait_for_state_change(NULL, 0, 1, NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_sync(NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_close(NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_connect(NULL), SY_NULL_PARAMETER);
  EXPECT(sy_channel_reset_connect_backoff(NULL), SY_NULL_PARAMETER);
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

  /* Malformed or unusable service config: a channel in TRANSIENT_FAILURE
   * whose picks are dropped with the parse error (wait-for-ready ones too,
   * as gRPC fails them). Bad target, bad host callbacks: errors. */
  {
    OK(sy_channel_new(rt, "", "{\"loadBalancingConfig\":[{\"no_such_policy\":{}}]}", &t, NULL,
                      NULL, NULL, &ch));
    OK(sy_channel_sync(ch));
    OK(sy_channel_state(ch, &state));
    CHECK(state == SY_STATE_TRANSIENT_FAILURE);
    OK(sy_reader_new(ch, &reader));
    CHECK(sy_pick(reader, "/x.Y/Z", 6, NULL, SY_NO_WAIT, false, &r) == SY_DROPPED);
    CHECK(sy_pick(reader, "/x.Y/Z", 6, NULL, 5000, true, &r) == SY_DROPPED);
    {
      char why[256];
      sy_last_error(why, sizeof why);
      CHECK(strstr(why, "loadBalancingConfig: no supported policies") != NULL);
    }
    sy_reader_free(reader);
    reader = NULL;
    sy_channel_free(ch);
    ch = NULL;
  }
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
  bad_addr.address = ""; /* as sy_resolver_cc_update: no address at all */
  EXPECT(sy_channel_update_addresses(ch, &bad_addr, 1), SY_INVALID_ARGUMENT);
  bad_addr.address = "127.9.0.9:1";
  EXPECT(sy_channel_update_addresses(ch, &bad_addr, SIZE_MAX), SY_INVALID_ARGUMENT);
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
  /* A method length no object can have (a negative number as size_t) is
   * refused, not trusted: it aborted a debug build and read out of bounds. */
  EXPECT(sy_pick(reader, "x", SIZE_MAX, NULL, 0, false, &r), SY_INVALID_ARGUMENT);
  EXPECT(sy_pick(reader, "x", (size_t)PTRDIFF_MAX + 1, NULL, 0, false, &r), SY_INVALID_ARGUMENT);
  EXPECT(sy_pick(reader, "x", SIZE_MAX, NULL, 50, true, &r), SY_INVALID_ARGUMENT);
  memset(&r, 0, sizeof r);
  EXPECT(sy_pick_done(&r, 0, 0, NULL, 0), SY_INVALID_ARGUMENT);
  a.address = "127.9.0.1:1";
  a.weight = 0;
  a.user_data = NULL;
  OK(sy_channel_update_addresses(ch, &a, 1));
  host_wait_connects(&h, 1);
  OK(sy_channel_report_subconn_state(ch, host_id(&h, "127.9.0.1:1"), SY_STATE_READY, NULL));
  OK(sy_channel_sync(ch));
  {
    /* A request hash without has_request_hash is refused (as sy_call_options
     * refuses it), with a subchannel ready to pick. */
    sy_pick_request req = {0};
    sy_borrowed_pick kept;
    sy_outcome done;
    req.request_hash = 42;
    EXPECT(sy_reader_pick(reader, &req, &kept), SY_INVALID_ARGUMENT);
    /* sy_reader_next: bad arguments change nothing, the kept pick included. */
    memset(&done, 0, sizeof done);
    EXPECT(sy_reader_next(NULL, NULL, NULL, &kept), SY_NULL_PARAMETER);
    EXPECT(sy_reader_next(reader, NULL, NULL, NULL), SY_NULL_PARAMETER);
    EXPECT(sy_reader_next(reader, &done, NULL, &kept), SY_INVALID_ARGUMENT); /* nothing kept */
    OK(sy_reader_next(reader, NULL, NULL, &kept));
    EXPECT(sy_reader_next(reader, &done, &req, &kept), SY_INVALID_ARGUMENT); /* the hash */
    done.grpc_code = 17; /* unknown gRPC code */
    EXPECT(sy_reader_next(reader, &done, NULL, &kept), SY_INVALID_ARGUMENT);
    done.grpc_code = 0;
    done.metrics_len = 1; /* and no metrics */
    EXPECT(sy_reader_next(reader, &done, NULL, &kept), SY_NULL_PARAMETER);
    done.metrics_len = 0;
    OK(sy_reader_next(reader, &done, NULL, &kept));
    OK(sy_reader_done(reader, 0, 0, NULL, 0));
    EXPECT(sy_reader_done(reader, 0, 0, NULL, 0), SY_INVALID_ARGUMENT);
  }
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

  bad_calls(rt, ch);

  /* Calls after close. */
  OK(sy_channel_close(ch));
  EXPECT(sy_pick(reader, NULL, 0, NULL, 0, false, &r), SY_CLOSED);
  EXPECT(sy_pick(reader, NULL, 0, NULL, 1000, true, &r), SY_CLOSED);
  EXPECT(sy_channel_update_addresses(ch, &a, 1), SY_CLOSED);
  EXPECT(sy_channel_report_subconn_state(ch, 1, SY_STATE_READY, NULL), SY_CLOSED);
  EXPECT(sy_channel_connect(ch), SY_CLOSED);
  EXPECT(sy_channel_reset_connect_backoff(ch), SY_CLOSED);
  EXPECT(sy_channel_get_state(ch, true, NULL), SY_NULL_PARAMETER);
  state = SY_STATE_IDLE;
  OK(sy_channel_get_state(ch, true, &state)); /* gRPC's GetState: SHUTDOWN, no error */
  CHECK(state == SY_STATE_SHUTDOWN);
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
  {
    /* Its runtime gone, the channel is closed: no new reader. */
    sy_reader *late = NULL;
    EXPECT(sy_reader_new(ch, &late), SY_CLOSED);
    CHECK(late == NULL);
  }
  sy_channel_free(ch);

  /* Message truncation follows snprintf. */
  {
    char small[8];
    size_t n = sy_last_error(small, sizeof small);
    CHECK(n > 7 && strlen(small) == 7);
    /* A length no buffer has (a negative number) writes nothing. */
    memset(small, 'z', sizeof small);
    CHECK(sy_last_error(small, SIZE_MAX) == n && small[0] == 'z' && small[7] == 'z');
    CHECK(sy_last_error(small, (size_t)PTRDIFF_MAX + 1) == n && small[0] == 'z');
  }
  host_destroy(&h);
  printf("bad_input: ok\n");
  return 0;
}
