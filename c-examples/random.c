/* random over three real gRPC servers (grpcio, interop/server.py),
 * selected by name through sy_channel_new_simple: every call goes to a
 * READY backend chosen uniformly at random by the calling thread's reader,
 * so 600 calls give each backend about 200 (standard deviation 11.5). */
#include "echo_server.h"

#define N_SERVERS 3
#define N_CALLS 600

static echo_server servers;

/* One call; the index of the server that answered. */
static int call(sy_reader *reader, bool wait_for_ready) {
  sy_buffer *resp = NULL;
  const uint8_t *v = NULL;
  size_t vlen = 0;
  char port[16];
  int i, p;
  OK(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), (const uint8_t *)"rnd",
                   3,
                   &(sy_call_options){.timeout_ms = 30000, .has_timeout = true,
                                      .wait_for_ready = wait_for_ready},
                   &resp));
  OK(sy_buffer_trailer(resp, "x-backend-port", 0, &v, &vlen));
  CHECK(vlen > 0 && vlen < sizeof port);
  memcpy(port, v, vlen);
  port[vlen] = '\0';
  sy_buffer_free(resp);
  p = atoi(port);
  for (i = 0; i < N_SERVERS; i++)
    if (servers.ports[i] == p) return i;
  CHECK(!"an answer from an unknown port");
  return -1;
}

int main(void) {
  sy_runtime *rt = NULL;
  sy_channel_options *opts = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL;
  int counts[N_SERVERS] = {0, 0, 0};
  int seen[N_SERVERS] = {0, 0, 0};
  char target[256];
  int i;

  echo_server_start(&servers, N_SERVERS);
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
           servers.ports[0], servers.ports[1], servers.ports[2]);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_options_new_insecure(&opts));
  OK(sy_channel_new_simple(rt, target, "{\"loadBalancingConfig\":[{\"random\":{}}]}", opts, &ch));
  /* A config that is not an object is refused. */
  CHECK_STATUS(sy_channel_update_service_config(ch, "{\"loadBalancingConfig\":[{\"random\":7}]}"),
               SY_INVALID_SERVICE_CONFIG);
  sy_channel_options_free(opts);
  OK(sy_reader_new(ch, &reader));

  /* Every backend answers once (all READY). Bounded. */
  for (i = 0; i < 500 && !(seen[0] && seen[1] && seen[2]); i++) seen[call(reader, true)] = 1;
  CHECK(seen[0] && seen[1] && seen[2]);

  for (i = 0; i < N_CALLS; i++) counts[call(reader, false)]++;
  printf("random: %d %d %d\n", counts[0], counts[1], counts[2]);
  for (i = 0; i < N_SERVERS; i++) CHECK(counts[i] >= 140 && counts[i] <= 260);

  sy_reader_free(reader);
  sy_channel_free(ch);
  sy_runtime_free(rt);
  echo_server_stop(&servers);
  return 0;
}
