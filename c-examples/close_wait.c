/* Close while picks wait: RPC threads blocked in sy_pick (no time limit,
 * wait-for-ready) all return SY_CLOSED when another thread closes the
 * channel; later calls report SY_CLOSED; close is idempotent. */
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
  printf("close_wait: ok\n");
  return 0;
}
