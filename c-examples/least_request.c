/* least_request_experimental (gRFC A48) over three real gRPC servers
 * (grpcio, interop/server.py), selected by name and config through
 * sy_channel_new_simple:
 *   1. a choiceCount below 2 is refused, naming the field;
 *   2. picks held in flight on backends 1 and 2 (sy_pick without
 *      sy_pick_done yet) send most calls to backend 0: each call draws
 *      three backends and takes the one with fewest requests in flight, so
 *      backend 0 wins whenever it is drawn, 1 - (2/3)^3 = 70 % of calls;
 *   3. once those picks are done, calls spread evenly again. */
#include "echo_server.h"

#define N_SERVERS 3
#define N_CALLS 300
#define N_HELD 10 /* per loaded backend */

static echo_server servers;

/* Which server a "127.0.0.1:<port>" address (or trailer port) names. */
static int server_of_port(int port) {
  int i;
  for (i = 0; i < N_SERVERS; i++)
    if (servers.ports[i] == port) return i;
  CHECK(!"an unknown port");
  return -1;
}

static int server_of_address(const char *address, size_t len) {
  char buf[64];
  const char *colon;
  CHECK(len < sizeof buf);
  memcpy(buf, address, len);
  buf[len] = '\0';
  colon = strrchr(buf, ':');
  CHECK(colon != NULL);
  return server_of_port(atoi(colon + 1));
}

/* One call; the index of the server that answered. */
static int call(sy_reader *reader, bool wait_for_ready) {
  sy_buffer *resp = NULL;
  const uint8_t *v = NULL;
  size_t vlen = 0;
  char port[16];
  int who;
  OK(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), (const uint8_t *)"lr", 2,
                   &(sy_call_options){.timeout_ms = 5000, .has_timeout = true,
                                      .wait_for_ready = wait_for_ready},
                   &resp));
  OK(sy_buffer_trailer(resp, "x-backend-port", 0, &v, &vlen));
  CHECK(vlen > 0 && vlen < sizeof port);
  memcpy(port, v, vlen);
  port[vlen] = '\0';
  who = server_of_port(atoi(port));
  sy_buffer_free(resp);
  return who;
}

static void spread(sy_reader *reader, int counts[N_SERVERS]) {
  int i;
  for (i = 0; i < N_SERVERS; i++) counts[i] = 0;
  for (i = 0; i < N_CALLS; i++) counts[call(reader, false)]++;
}

int main(void) {
  sy_runtime *rt = NULL;
  sy_channel_options *opts = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL, *holder = NULL;
  sy_pick_result held[2 * N_HELD];
  int n_held = 0, on[N_SERVERS] = {0, 0, 0}, counts[N_SERVERS];
  int seen[N_SERVERS] = {0, 0, 0};
  char target[256], err[256];
  int i;

  echo_server_start(&servers, N_SERVERS);
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
           servers.ports[0], servers.ports[1], servers.ports[2]);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_options_new_insecure(&opts));

  OK(sy_channel_new_simple(
      rt, target,
      "{\"loadBalancingConfig\":[{\"least_request_experimental\":{\"choiceCount\":3}}]}", opts,
      &ch));
  /* 1. choiceCount must be at least 2 (and is capped at 10): an update
   *    with 1 is refused, naming the field. */
  CHECK_STATUS(sy_channel_update_service_config(
                   ch, "{\"loadBalancingConfig\":[{\"least_request_experimental\":{\"choiceCount\":1}}]}"),
               SY_INVALID_SERVICE_CONFIG);
  CHECK(sy_last_error(err, sizeof err) > 0 && strstr(err, "choiceCount") != NULL);
  printf("refused: %s\n", err);
  sy_channel_options_free(opts);
  OK(sy_reader_new(ch, &reader));
  OK(sy_reader_new(ch, &holder));

  /* Every backend answers once (all READY). Bounded. */
  for (i = 0; i < 500 && !(seen[0] && seen[1] && seen[2]); i++) seen[call(reader, true)] = 1;
  CHECK(seen[0] && seen[1] && seen[2]);

  /* 2. Hold N_HELD picks on each of backends 1 and 2; picks that land on
   * backend 0 are done at once. Bounded: 0 wins only while it has fewest. */
  for (i = 0; i < 10000 && (on[1] < N_HELD || on[2] < N_HELD); i++) {
    sy_pick_result r;
    int who;
    OK(sy_pick(holder, "/echo.Echo/Unary", 16, NULL, SY_NO_WAIT, false, &r));
    who = server_of_address(r.address, r.address_len);
    if (who == 0 || on[who] >= N_HELD) {
      OK(sy_pick_done(&r, 0, 0, NULL, 0));
    } else {
      on[who]++;
      held[n_held++] = r;
    }
  }
  CHECK(on[1] == N_HELD && on[2] == N_HELD);
  spread(reader, counts);
  printf("with %d calls in flight on backends 1 and 2: %d %d %d\n", 2 * N_HELD, counts[0],
         counts[1], counts[2]);
  CHECK(counts[0] > 170); /* about 210; uniform would be 100 */

  /* 3. The held calls end (one failed, as a real call might): even again. */
  for (i = 0; i < n_held; i++) OK(sy_pick_done(&held[i], i == 0 ? 14 : 0, 1000000, NULL, 0));
  spread(reader, counts);
  printf("none in flight: %d %d %d\n", counts[0], counts[1], counts[2]);
  for (i = 0; i < N_SERVERS; i++) CHECK(counts[i] >= 60 && counts[i] <= 140);

  sy_reader_free(holder);
  sy_reader_free(reader);
  sy_channel_free(ch);
  sy_runtime_free(rt);
  echo_server_stop(&servers);
  return 0;
}
