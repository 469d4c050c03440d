/* weighted_round_robin (gRFC A58) selected by name and config through the
 * header, against real gRPC servers that report their load.
 *
 * Starts three grpcio echo servers (interop/server.py --orca) that attach an
 * ORCA load report (the endpoint-load-metrics-bin trailer) to every
 * response: 100 qps at application utilization 0.1, 0.2 and 0.4. Each
 * server's weight is qps / utilization, so 1000 : 500 : 250. Then:
 *   1. a config with a negative errorUtilizationPenalty is refused, the
 *      error naming the field;
 *   2. a weighted_round_robin channel (blackout 0.2 s, weights recomputed
 *      every 0.1 s) makes blocking calls; once the weights count, 700 calls
 *      split 4 : 2 : 1 (within 3 points each), the least loaded server
 *      getting the most. */
#include "echo_server.h"

#define N_SERVERS 3
#define WINDOW 70
#define MEASURED 700

static echo_server servers;

/* Which server answered, from the "x-backend-port" trailer. */
static int backend_of(const sy_buffer *resp) {
  const uint8_t *v = NULL;
  size_t vlen = 0;
  char port[16];
  int i;
  OK(sy_buffer_trailer(resp, "x-backend-port", 0, &v, &vlen));
  CHECK(vlen > 0 && vlen < sizeof port);
  memcpy(port, v, vlen);
  port[vlen] = '\0';
  for (i = 0; i < N_SERVERS; i++)
    if (servers.ports[i] == atoi(port)) return i;
  CHECK(!"answer from an unknown port");
  return -1;
}

/* `n` calls; how many each server answered. */
static void calls(sy_reader *reader, int n, int hits[N_SERVERS]) {
  int i;
  memset(hits, 0, N_SERVERS * sizeof hits[0]);
  for (i = 0; i < n; i++) {
    sy_buffer *resp = NULL;
    OK(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), (const uint8_t *)"w",
                     1,
                     &(sy_call_options){.timeout_ms = 5000, .has_timeout = true,
                                        .wait_for_ready = true},
                     &resp));
    hits[backend_of(resp)]++;
    sy_buffer_free(resp);
  }
}

int main(void) {
  static const char *const orca[] = {"--orca", "0.1,0.2,0.4", NULL};
  const char *config =
      "{\"loadBalancingConfig\":[{\"weighted_round_robin\":"
      "{\"blackoutPeriod\":\"0.2s\",\"weightUpdatePeriod\":\"0.1s\"}}]}";
  const char *bad = "{\"loadBalancingConfig\":[{\"weighted_round_robin\":"
                    "{\"errorUtilizationPenalty\":-1}}]}";
  const double want[N_SERVERS] = {4.0 / 7, 2.0 / 7, 1.0 / 7};
  sy_runtime *rt = NULL;
  sy_channel_options *opts = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL;
  char target[256];
  char err[512];
  int hits[N_SERVERS];
  int round, i;

  echo_server_start_with(&servers, N_SERVERS, orca);
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", servers.ports[0],
           servers.ports[1], servers.ports[2]);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_options_new_insecure(&opts));

  /* 1. Invalid known fields are refused, by name (an update is refused;
   *    a channel created with it would be TRANSIENT_FAILURE with this error). */
  OK(sy_channel_new_simple(rt, target, config, opts, &ch));
  CHECK_STATUS(sy_channel_update_service_config(ch, bad), SY_INVALID_SERVICE_CONFIG);
  CHECK(sy_last_error(err, sizeof err) > 0 && strstr(err, "errorUtilizationPenalty") != NULL);
  printf("refused: %s\n", err);

  /* 2. Traffic follows the reported load. */
  OK(sy_reader_new(ch, &reader));
  /* Until the weights count (reports come with every call; the blackout
   * is 0.2 s): bounded, about 10 s at most. */
  for (round = 0; round < 150; round++) {
    calls(reader, WINDOW, hits);
    if (hits[0] * 2 > WINDOW) break;
    sleep_ms(50);
  }
  CHECK(round < 150);
  calls(reader, MEASURED, hits);
  for (i = 0; i < N_SERVERS; i++) {
    double share = (double)hits[i] / MEASURED;
    printf("server %d (utilization %.1f): %d of %d calls (%.3f, want %.3f)\n", i,
           0.1 * (1 << i), hits[i], MEASURED, share, want[i]);
    CHECK(share > want[i] - 0.03 && share < want[i] + 0.03);
  }

  sy_reader_free(reader);
  sy_channel_free(ch);
  sy_channel_options_free(opts);
  sy_runtime_free(rt);
  echo_server_stop(&servers);
  printf("weighted_round_robin: ok\n");
  return 0;
}
