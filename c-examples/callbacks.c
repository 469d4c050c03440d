/* The host's callbacks meet the library at awkward moments; each case here
 * once went wrong:
 *   1. a started call's callback that frees the record `call_id_out` points
 *      into: the id must be written before the callback can run (it was
 *      written after, into freed memory: heap use-after-free under ASan);
 *   2. a replaced C policy's free_builder that asks the policy registry
 *      something: it ran under the registry's lock (a deadlock);
 *   3. two threads setting and removing the log callback over and over:
 *      one could wait forever for a wake-up nobody sent.
 * An alarm turns a hang into a failure. */
#include "common.h"

#include <unistd.h>

/* ---- 1. call ids --------------------------------------------------------- */

typedef struct request {
  uint64_t id; /* written by sy_call_unary_start */
  char pad[56];
} request;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int calls_done;

static void call_done(void *ctx, sy_status status, uint32_t grpc_code, const char *message,
                      sy_buffer *response) {
  request *r = ctx;
  (void)status;
  (void)grpc_code;
  (void)message;
  sy_buffer_free(response); /* NULL: the calls here fail */
  /* The id is there when the callback runs: the call is its own. */
  CHECK(r->id != UINT64_MAX);
  free(r); /* the record that held the id goes with the call */
  pthread_mutex_lock(&mu);
  calls_done++;
  pthread_mutex_unlock(&mu);
}

static void call_ids(void) {
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL;
  sy_call_options o;
  int i, done = 0;
  enum { CALLS = 200 };

  OK(sy_runtime_new(&rt));
  OK(sy_channel_new_insecure(rt, "127.0.0.1:1", NULL, &ch));
  memset(&o, 0, sizeof o);
  o.has_timeout = true;
  o.timeout_ms = 0; /* SY_NO_WAIT: each call fails at once */
  for (i = 0; i < CALLS; i++) {
    request *r = malloc(sizeof *r);
    CHECK(r != NULL);
    r->id = UINT64_MAX;
    OK(sy_call_unary_start(ch, "/echo.Echo/Unary", 16, NULL, 0, &o, call_done, r, &r->id));
  }
  for (i = 0; i < 1000 && done < CALLS; i++) {
    pthread_mutex_lock(&mu);
    done = calls_done;
    pthread_mutex_unlock(&mu);
    if (done < CALLS) sleep_ms(10);
  }
  CHECK(done == CALLS);
  sy_channel_free(ch);
  sy_runtime_free(rt);
}

/* ---- 2. a replaced policy's free_builder --------------------------------- */

static int builders_freed;

static void *build(void *builder_ctx) { return builder_ctx; }

static bool update_addresses(void *balancer, sy_cc *cc, const sy_address *addresses,
                             size_t len) {
  (void)balancer;
  (void)cc;
  (void)addresses;
  (void)len;
  return true;
}

static void subchannel_state(void *balancer, sy_cc *cc, uint64_t id, uint32_t state,
                             const char *error) {
  (void)balancer;
  (void)cc;
  (void)id;
  (void)state;
  (void)error;
}

static void free_builder(void *builder_ctx) {
  (void)builder_ctx;
  /* The registry is usable from here: the builder this frees is already
   * replaced by the new one. */
  CHECK(sy_balancer_registered("c_callbacks_replaced"));
  builders_freed++;
}

static void replaced_builders(void) {
  sy_balancer_callbacks cbs;
  memset(&cbs, 0, sizeof cbs);
  cbs.build = build;
  cbs.update_addresses = update_addresses;
  cbs.subchannel_state = subchannel_state;
  cbs.free_builder = free_builder;
  OK(sy_balancer_register("c_callbacks_replaced", &cbs, NULL));
  CHECK(builders_freed == 0);
  OK(sy_balancer_register("c_callbacks_replaced", &cbs, NULL));
  CHECK(builders_freed == 1);
  OK(sy_balancer_register("c_callbacks_replaced", &cbs, NULL));
  CHECK(builders_freed == 2);
}

/* ---- 3. the log callback, set and removed from two threads --------------- */

static void on_log(void *ctx, uint32_t level, const char *target, size_t target_len,
                   const char *message, size_t message_len) {
  (void)ctx;
  (void)level;
  (void)target;
  (void)target_len;
  (void)message;
  (void)message_len;
}

static void *toggle_log(void *arg) {
  int i;
  (void)arg;
  for (i = 0; i < 5000; i++) {
    OK(sy_log_set_callback(on_log, NULL, SY_LOG_INFO));
    OK(sy_log_set_callback(NULL, NULL, SY_LOG_OFF));
  }
  return NULL;
}

static void log_toggles(void) {
  pthread_t a, b;
  CHECK(pthread_create(&a, NULL, toggle_log, NULL) == 0);
  CHECK(pthread_create(&b, NULL, toggle_log, NULL) == 0);
  CHECK(pthread_join(a, NULL) == 0);
  CHECK(pthread_join(b, NULL) == 0);
}

int main(void) {
  alarm(120); /* a hang is a failure (SIGALRM ends the process) */
  call_ids();
  replaced_builders();
  log_toggles();
  printf("callbacks: call ids before callbacks, a replaced builder's free, log toggles: ok\n");
  return 0;
}
