/* Close while picks wait: RPC threads blocked in sy_pick (no time limit,
 * wait-for-ready) all return SY_CLOSED when another thread closes the
 * channel; later calls report SY_CLOSED; close is idempotent.
 *
 * Then the same for calls on library-managed channels: wait-for-ready calls
 * (blocking, and started with completion callbacks) to an address nobody
 * listens on end with SY_CLOSED when the channel is freed, or when its
 * runtime is freed; every callback has run by the time the free returns. */
#include "common.h"

#define N_THREADS 4

typedef struct waiter {
  sy_reader *reader;
  sy_status status;
} waiter;

static void *wait_pick(void *arg) {
  waiter *w = (waiter *)arg;
  sy_pick_result r;
  w->status = sy_pick(w->reader, "/svc/M", 6, NULL, SY_WAIT_FOREVER, true, &r);
  if (w->status == SY_OK) OK(sy_pick_done(&r, 0, 0, NULL, 0));
  return NULL;
}

static int shutdown_seen;
static void on_state(void *ctx, uint32_t state) {
  (void)ctx;
  if (state == SY_STATE_SHUTDOWN) shutdown_seen++;
}

/* ---- managed channels: calls in flight at free ---------------------------- */

#define N_CALLS 6

typedef struct tally {
  pthread_mutex_t mu;
  int done;
  int closed;
} tally;

static void on_call_done(void *ctx, sy_status st, uint32_t code, const char *msg,
                         sy_buffer *resp) {
  tally *t = (tally *)ctx;
  (void)code;
  (void)msg;
  CHECK(resp == NULL);
  pthread_mutex_lock(&t->mu);
  t->done++;
  if (st == SY_CLOSED) t->closed++;
  pthread_mutex_unlock(&t->mu);
}

typedef struct blocking {
  sy_reader *reader;
  sy_status status;
} blocking;

static void *blocking_call(void *arg) {
  blocking *b = (blocking *)arg;
  sy_buffer *resp = NULL;
  b->status = sy_call_unary(b->reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                            &(sy_call_options){.wait_for_ready = true}, &resp);
  CHECK(resp == NULL);
  return NULL;
}

/* Starts N_CALLS wait-for-ready calls that can never complete (nobody
 * listens on port 1), plus one blocking call on another thread. */
static void start_stuck_calls(sy_channel *ch, tally *t, blocking *b, pthread_t *th) {
  int i;
  for (i = 0; i < N_CALLS; i++)
    OK(sy_call_unary_start(ch, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                           &(sy_call_options){.wait_for_ready = true}, on_call_done, t, NULL));
  OK(sy_reader_new(ch, &b->reader));
  b->status = SY_PANIC;
  CHECK(pthread_create(th, NULL, blocking_call, b) == 0);
  sleep_ms(100);
  pthread_mutex_lock(&t->mu);
  CHECK(t->done == 0);
  pthread_mutex_unlock(&t->mu);
}

static void managed_calls_at_free(void) {
  sy_runtime *rt = NULL;
  sy_channel_options *o = NULL;
  sy_channel *ch = NULL;
  tally t;
  blocking b;
  pthread_t th;

  memset(&t, 0, sizeof t);
  pthread_mutex_init(&t.mu, NULL);
  OK(sy_channel_options_new(&o));
  OK(sy_channel_options_set_insecure(o, true));
  OK(sy_channel_options_set_call_threads(o, 2)); /* deprecated, no effect: calls run on the loop */

  /* sy_channel_free with calls running and queued. */
  OK(sy_runtime_new(&rt));
  OK(sy_channel_new_with_options(rt, "127.0.0.1:1", NULL, o, NULL, NULL, NULL, NULL, &ch));
  start_stuck_calls(ch, &t, &b, &th);
  sy_channel_free(ch);
  CHECK(t.done == N_CALLS && t.closed == N_CALLS); /* no lock needed: threads are joined */
  CHECK(pthread_join(th, NULL) == 0);
  CHECK(b.status == SY_CLOSED);
  sy_reader_free(b.reader);

  /* sy_runtime_free with the channel still alive. */
  t.done = t.closed = 0;
  OK(sy_channel_new_with_options(rt, "127.0.0.1:1", NULL, o, NULL, NULL, NULL, NULL, &ch));
  start_stuck_calls(ch, &t, &b, &th);
  sy_runtime_free(rt);
  CHECK(t.done == N_CALLS && t.closed == N_CALLS);
  CHECK(pthread_join(th, NULL) == 0);
  CHECK(b.status == SY_CLOSED);
  CHECK_STATUS(sy_call_unary_start(ch, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                                   &(sy_call_options){.wait_for_ready = true}, on_call_done, &t,
                                   NULL),
               SY_CLOSED);
  sy_reader_free(b.reader);
  sy_channel_free(ch);

  sy_channel_options_free(o);
  pthread_mutex_destroy(&t.mu);
}

int main(void) {
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL;
  host h;
  sy_host_transport t;
  sy_address a;
  pthread_t threads[N_THREADS];
  waiter w[N_THREADS];
  uint32_t state = 99;
  int i;

  host_init(&h);
  t = host_transport(&h);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_new(rt, "", NULL, &t, on_state, NULL, NULL, &ch));
  a.address = "127.3.0.1:8080";
  a.weight = 0;
  a.user_data = NULL;
  OK(sy_channel_update_addresses(ch, &a, 1));
  host_wait_connects(&h, 1);
  /* The attempt fails: fail-fast picks fail, wait-for-ready ones wait. */
  OK(sy_channel_report_subconn_state(ch, host_id(&h, "127.3.0.1:8080"),
                                     SY_STATE_TRANSIENT_FAILURE, "refused"));
  OK(sy_channel_sync(ch));
  for (i = 0; i < N_THREADS; i++) {
    OK(sy_reader_new(ch, &w[i].reader));
    w[i].status = SY_PANIC;
    CHECK(pthread_create(&threads[i], NULL, wait_pick, &w[i]) == 0);
  }
  {
    sy_reader *mine = NULL;
    sy_pick_result r;
    OK(sy_reader_new(ch, &mine));
    CHECK_STATUS(sy_pick(mine, NULL, 0, NULL, 0, false, &r), SY_UNAVAILABLE);
    CHECK(sy_last_grpc_code() == 14);
    sy_reader_free(mine);
  }
  sleep_ms(100);
  OK(sy_channel_close(ch));
  for (i = 0; i < N_THREADS; i++) {
    CHECK(pthread_join(threads[i], NULL) == 0);
    CHECK(w[i].status == SY_CLOSED);
  }
  OK(sy_channel_close(ch)); /* idempotent */
  OK(sy_channel_state(ch, &state));
  CHECK(state == SY_STATE_SHUTDOWN);
  CHECK(shutdown_seen == 1);
  CHECK(h.shutdowns == 1);
  CHECK_STATUS(sy_channel_update_addresses(ch, &a, 0), SY_CLOSED);
  CHECK_STATUS(sy_channel_sync(ch), SY_CLOSED);
  CHECK_STATUS(sy_channel_wait_for_state_change(ch, SY_STATE_SHUTDOWN, 10, NULL), SY_CLOSED);
  {
    sy_reader *late = NULL;
    CHECK_STATUS(sy_reader_new(ch, &late), SY_CLOSED);
    CHECK(late == NULL);
  }
  for (i = 0; i < N_THREADS; i++) sy_reader_free(w[i].reader);
  sy_channel_free(ch);
  sy_runtime_free(rt);
  host_destroy(&h);
  managed_calls_at_free();
  printf("close_wait: ok\n");
  return 0;
}
