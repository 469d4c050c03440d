/* Blocking picks: RPC threads wait in sy_pick (timeout > 0) while nothing is
 * READY and are woken by a subchannel becoming READY; a short timeout ends in
 * SY_DEADLINE_EXCEEDED; wait_for_state_change sees the transition. */
#include "common.h"

#define N_THREADS 4

typedef struct waiter {
  sy_channel *ch;
  sy_status status;
  char address[64];
} waiter;

static void *wait_pick(void *arg) {
  waiter *w = (waiter *)arg;
  sy_reader *reader = NULL;
  sy_pick_result r;
  OK(sy_reader_new(w->ch, &reader)); /* one reader per RPC thread */
  w->status = sy_pick(reader, NULL, 0, NULL, 10000, true, &r);
  if (w->status == SY_OK) {
    snprintf(w->address, sizeof w->address, "%.*s", (int)r.address_len, r.address);
    OK(sy_pick_done(&r, 0, 0, NULL, 0));
  }
  sy_reader_free(reader);
  return NULL;
}

int main(void) {
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL;
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
  OK(sy_channel_new(rt, "", RR_CONFIG, &t, NULL, NULL, NULL, &ch));
  a.address = "127.2.0.1:50051";
  a.weight = 0;
  a.user_data = NULL;
  OK(sy_channel_update_addresses(ch, &a, 1));
  host_wait_connects(&h, 1);
  OK(sy_channel_sync(ch));
  OK(sy_channel_state(ch, &state));
  CHECK(state == SY_STATE_CONNECTING);

  /* A short wait times out with DEADLINE_EXCEEDED. */
  OK(sy_reader_new(ch, &reader));
  {
    sy_pick_result r;
    CHECK_STATUS(sy_pick(reader, NULL, 0, NULL, 30, false, &r), SY_DEADLINE_EXCEEDED);
    CHECK(sy_last_grpc_code() == 4);
  }
  CHECK_STATUS(sy_channel_wait_for_state_change(ch, SY_STATE_CONNECTING, 20, NULL), SY_TIMEOUT);

  for (i = 0; i < N_THREADS; i++) {
    w[i].ch = ch;
    w[i].status = SY_PANIC;
    w[i].address[0] = 0;
    CHECK(pthread_create(&threads[i], NULL, wait_pick, &w[i]) == 0);
  }
  sleep_ms(100); /* let them block */
  OK(sy_channel_report_subconn_state(ch, host_id(&h, "127.2.0.1:50051"), SY_STATE_READY, NULL));
  OK(sy_channel_wait_for_state_change(ch, SY_STATE_CONNECTING, 5000, &state));
  CHECK(state == SY_STATE_READY);
  for (i = 0; i < N_THREADS; i++) {
    CHECK(pthread_join(threads[i], NULL) == 0);
    CHECK(w[i].status == SY_OK);
    CHECK(strcmp(w[i].address, "127.2.0.1:50051") == 0);
  }
  {
    sy_pick_result r;
    OK(sy_pick(reader, NULL, 0, NULL, 0, false, &r));
    OK(sy_pick_done(&r, 0, 0, NULL, 0));
  }
  sy_reader_free(reader);
  sy_channel_free(ch);
  sy_runtime_free(rt);
  host_destroy(&h);
  printf("blocking_pick: ok\n");
  return 0;
}
