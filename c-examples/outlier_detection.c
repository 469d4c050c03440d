/* outlier_detection_experimental over round_robin, selected by name and
 * config through sy_channel_new_simple, against five real gRPC servers
 * (interop/server.py).
 *
 *   1. warms up with blocking calls until every server has answered;
 *   2. picks through the header (sy_pick, and every other round kept picks
 *      through sy_reader_next) and reports every pick that lands on server 2
 *      as failed (14, UNAVAILABLE), the others as OK: outcomes reported
 *      through the header feed the policy, and within a few 100 ms sweeps
 *      server 2 is ejected (picks skip it);
 *   3. the library's own calls (sy_call_unary) then go to the other
 *      four only, and the channel stays READY. */
#include "echo_server.h"

#define N_SERVERS 5
#define BAD 2

/* Sweeps every 100 ms; at least 10 calls in a sweep, more than half failed:
 * out for 30 s (longer than this program runs). */
#define OUTLIER_CONFIG                                                                  \
  "{\"loadBalancingConfig\":[{\"outlier_detection_experimental\":{"                   \
  "\"interval\":\"0.1s\",\"baseEjectionTime\":\"30s\",\"maxEjectionPercent\":20,"      \
  "\"failurePercentageEjection\":{\"threshold\":50,\"minimumHosts\":5,\"requestVolume\":10}," \
  "\"childPolicy\":[{\"round_robin\":{}}]}}]}"

static echo_server servers;

/* Which server an address or an answer names ("...|port=<port>" or
 * "127.0.0.1:<port>"), by the number after its last ':' or '='. */
static int server_of(const char *text, size_t len) {
  char buf[128];
  const char *p;
  int i;
  CHECK(len < sizeof buf);
  memcpy(buf, text, len);
  buf[len] = '\0';
  p = strrchr(buf, '=');
  if (p == NULL) p = strrchr(buf, ':');
  CHECK(p != NULL);
  for (i = 0; i < N_SERVERS; i++)
    if (servers.ports[i] == atoi(p + 1)) return i;
  CHECK(!"an unknown port");
  return -1;
}

static int call_echo(sy_reader *reader) {
  sy_buffer *resp = NULL;
  int who;
  OK(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), (const uint8_t *)"hi", 2,
                   &(sy_call_options){.timeout_ms = 5000, .has_timeout = true}, &resp));
  who = server_of((const char *)sy_buffer_data(resp), sy_buffer_len(resp));
  sy_buffer_free(resp);
  return who;
}

int main(void) {
  sy_runtime *rt = NULL;
  sy_channel_options *opts = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL;
  char target[256];
  int seen[N_SERVERS] = {0};
  int served[N_SERVERS] = {0};
  int streak = 0, bad_picks = 0, round, i, n;
  uint32_t state = 0;

  echo_server_start(&servers, N_SERVERS);
  n = snprintf(target, sizeof target, "ipv4:");
  for (i = 0; i < N_SERVERS; i++)
    n += snprintf(target + n, sizeof target - n, "%s127.0.0.1:%d", i ? "," : "", servers.ports[i]);

  OK(sy_runtime_new(&rt));
  OK(sy_channel_options_new_insecure(&opts));
  OK(sy_channel_new_simple(rt, target, OUTLIER_CONFIG, opts, &ch));
  sy_channel_options_free(opts);
  OK(sy_reader_new(ch, &reader));

  /* 1. Every server answers (bounded). */
  for (round = 0; round < 200; round++) {
    int all = 1;
    seen[call_echo(reader)] = 1;
    for (i = 0; i < N_SERVERS; i++) all &= seen[i];
    if (all) break;
  }
  for (i = 0; i < N_SERVERS; i++) CHECK(seen[i]);

  /* 2. Picks through the header; server 2's fail. Ejected once 500 picks
   *    in a row miss it (within 10 s). */
  for (round = 0; round < 1000 && streak < 500; round++) {
    if (round % 2) {
      /* Every other round, kept picks: each sy_reader_next reports the
       * outcome of the pick before it and picks the next. */
      sy_pick_request req = {0};
      sy_borrowed_pick p;
      sy_outcome outcome = {0};
      req.method = "/echo.Echo/Unary";
      req.method_len = 16;
      req.timeout_ms = 1000;
      req.wait_for_ready = true;
      for (i = 0; i < 100; i++) {
        int who;
        OK(sy_reader_next(reader, i == 0 ? NULL : &outcome, &req, &p));
        who = server_of(p.address, p.address_len);
        streak = who == BAD ? 0 : streak + 1;
        bad_picks += who == BAD;
        outcome.grpc_code = who == BAD ? 14 : 0;
        outcome.latency_ns = 1000000;
      }
      OK(sy_reader_done(reader, outcome.grpc_code, outcome.latency_ns, NULL, 0));
    } else {
      for (i = 0; i < 100; i++) {
        sy_pick_result r;
        int who;
        OK(sy_pick(reader, "/echo.Echo/Unary", 16, NULL, 1000, true, &r));
        who = server_of(r.address, r.address_len);
        streak = who == BAD ? 0 : streak + 1;
        bad_picks += who == BAD;
        OK(sy_pick_done(&r, who == BAD ? 14 : 0, 1000000, NULL, 0));
      }
    }
    sleep_ms(10);
  }
  printf("outlier_detection: server %d failed %d picks, then was ejected\n", BAD, bad_picks);
  CHECK(bad_picks > 0);
  CHECK(streak >= 500);

  /* 3. The library's own calls skip it too. */
  for (i = 0; i < 200; i++) served[call_echo(reader)]++;
  for (i = 0; i < N_SERVERS; i++) printf("server %d: %d calls\n", i, served[i]);
  CHECK(served[BAD] == 0);
  for (i = 0; i < N_SERVERS; i++)
    if (i != BAD) CHECK(served[i] == 50); /* round_robin over the four */
  OK(sy_channel_state(ch, &state));
  CHECK(state == SY_STATE_READY);

  sy_reader_free(reader);
  sy_channel_free(ch);
  sy_runtime_free(rt);
  echo_server_stop(&servers);
  printf("outlier_detection: ok\n");
  return 0;
}
