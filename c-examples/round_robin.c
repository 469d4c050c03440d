/* round_robin over host-managed subchannels: the host owns the transports
 * (external connector), supplies addresses with user data, reports READY,
 * and picks rotate evenly over the READY subchannels. */
#include "common.h"

#define N_ADDRS 3
#define N_PICKS 3000

/* The sum of every number after `"key":` in a snapshot's JSON. */
static long sum_key(const char *json, const char *key) {
  char pat[64];
  long sum = 0;
  const char *at = json;
  snprintf(pat, sizeof pat, "\"%s\":", key);
  while ((at = strstr(at, pat)) != NULL) {
    at += strlen(pat);
    sum += strtol(at, NULL, 10);
  }
  return sum;
}

int main(void) {
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL;
  host h;
  sy_host_transport t;
  int released = 0;
  const char *addrs[N_ADDRS] = {"127.0.0.1:443", "127.0.0.2:443", "127.0.0.3:443"};
  sy_address list[N_ADDRS];
  int counts[N_ADDRS] = {0, 0, 0};
  uint32_t state = 99;
  int i;

  CHECK(strcmp(sy_version(), SY_VERSION_STRING) == 0);
  host_init(&h);
  t = host_transport(&h);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_new(rt, "", RR_CONFIG, &t, NULL, NULL, release_backend, &ch));
  OK(sy_channel_state(ch, &state));
  CHECK(state == SY_STATE_IDLE);

  for (i = 0; i < N_ADDRS; i++) {
    list[i].address = addrs[i];
    list[i].weight = 0;
    list[i].user_data = new_backend(addrs[i], &released);
  }
  OK(sy_channel_update_addresses(ch, list, N_ADDRS));
  host_wait_connects(&h, N_ADDRS);

  OK(sy_reader_new(ch, &reader));
  {
    sy_pick_result r;
    /* Connecting: nothing ready, a non-waiting pick says so. */
    CHECK_STATUS(sy_pick(reader, NULL, 0, NULL, 0, false, &r), SY_NO_SUBCHANNEL);
  }
  for (i = 0; i < N_ADDRS; i++) {
    OK(sy_channel_report_subconn_state(ch, host_id(&h, addrs[i]), SY_STATE_READY, NULL));
  }
  OK(sy_channel_sync(ch));
  OK(sy_channel_state(ch, &state));
  CHECK(state == SY_STATE_READY);

  for (i = 0; i < N_PICKS; i++) {
    sy_pick_result r;
    const backend *b;
    int k;
    OK(sy_pick(reader, "/echo.Echo/Say", 14, NULL, 0, false, &r));
    b = (const backend *)r.user_data;
    CHECK(b != NULL);
    CHECK(strlen(b->name) == r.address_len && memcmp(b->name, r.address, r.address_len) == 0);
    for (k = 0; k < N_ADDRS; k++) {
      if (strcmp(b->name, addrs[k]) == 0) counts[k]++;
    }
    OK(sy_pick_done(&r, 0, 1000, NULL, 0));
    /* Done twice is detected, not undefined. */
    if (i == 0) CHECK_STATUS(sy_pick_done(&r, 0, 1000, NULL, 0), SY_INVALID_ARGUMENT);
  }
  for (i = 0; i < N_ADDRS; i++) {
    printf("%s: %d\n", addrs[i], counts[i]);
    CHECK(counts[i] == N_PICKS / N_ADDRS);
  }

  /* One backend goes away: picks skip it. */
  OK(sy_channel_report_subconn_state(ch, host_id(&h, addrs[1]), SY_STATE_TRANSIENT_FAILURE,
                                     "connection refused"));
  OK(sy_channel_sync(ch));
  for (i = 0; i < 100; i++) {
    sy_pick_result r;
    OK(sy_pick(reader, NULL, 0, NULL, 0, false, &r));
    CHECK(strcmp(((const backend *)r.user_data)->name, addrs[1]) != 0);
    OK(sy_pick_done(&r, 14, 5000, NULL, 0));
  }

  /* The snapshot counts the host's picks with the outcomes their dones
   * reported; a kept pick not finished yet is in flight. */
  {
    sy_borrowed_pick kept;
    char *json = NULL;
    OK(sy_reader_pick(reader, NULL, &kept));
    OK(sy_channel_snapshot_json(ch, &json, NULL));
    CHECK(sum_key(json, "calls_started") == N_PICKS + 100 + 1);
    CHECK(sum_key(json, "calls_succeeded") == N_PICKS);
    CHECK(sum_key(json, "calls_failed") == 100);
    CHECK(sum_key(json, "calls_in_flight") == 1);
    sy_snapshot_json_free(json);
    OK(sy_reader_done(reader, 14, 1000, NULL, 0)); /* UNAVAILABLE: it failed */
    OK(sy_channel_snapshot_json(ch, &json, NULL));
    CHECK(sum_key(json, "calls_failed") == 101 && sum_key(json, "calls_in_flight") == 0);
    sy_snapshot_json_free(json);
  }

  /* An RPC thread whose RPCs follow one another: sy_reader_next reports
   * each one's outcome and makes the next one's pick, in one call. */
  {
    sy_borrowed_pick kept;
    sy_outcome outcome;
    char *json = NULL;
    memset(&outcome, 0, sizeof outcome);
    OK(sy_reader_next(reader, NULL, NULL, &kept)); /* nothing to finish yet */
    for (i = 0; i < 100; i++) {
      CHECK(strcmp(((const backend *)kept.user_data)->name, addrs[1]) != 0);
      outcome.grpc_code = i % 2 ? 0 : 14; /* every other one fails */
      outcome.latency_ns = 1000;
      OK(sy_reader_next(reader, &outcome, NULL, &kept));
    }
    OK(sy_reader_done(reader, 0, 1000, NULL, 0)); /* the last one */
    OK(sy_channel_snapshot_json(ch, &json, NULL));
    CHECK(sum_key(json, "calls_started") == N_PICKS + 100 + 1 + 101);
    CHECK(sum_key(json, "calls_failed") == 101 + 50);
    CHECK(sum_key(json, "calls_in_flight") == 0);
    sy_snapshot_json_free(json);
  }

  /* A pick outlives the channel: its address and user data stay valid. */
  {
    sy_pick_result held;
    OK(sy_pick(reader, NULL, 0, NULL, 0, false, &held));
    sy_channel_free(ch);
    CHECK(h.shutdowns == N_ADDRS);
    CHECK(memcmp(held.address, ((const backend *)held.user_data)->name, held.address_len) == 0);
    OK(sy_pick_done(&held, 0, 0, NULL, 0));
  }
  sy_reader_free(reader);
  sy_runtime_free(rt);
  /* Every user data released exactly once, and only now. */
  CHECK(released_count(&released) == N_ADDRS);
  host_destroy(&h);
  printf("round_robin: ok\n");
  return 0;
}
