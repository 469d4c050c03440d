/* ring_hash_experimental from C: consistent hashing over three grpcio echo
 * servers (interop/server.py), selected by name and config.
 *
 *   1. a config with requestHashHeader "x-user-id" (gRFC A76): the library's
 *      own calls hash that metadata value, so every call of one user lands
 *      on the same backend, call after call and from a second channel;
 *   2. a call with no such header gets a random hash: still served;
 *   3. a request hash passed as `request_hash` (what a host that picks with
 *      sy_pick, which carries no metadata, passes): one backend per hash;
 *   4. a config the policy rejects ("-bin" header) is refused with
 *      SY_INVALID_SERVICE_CONFIG and the channel keeps its own. */
#include "echo_server.h"

#define N_SERVERS 3
#define N_USERS 20
#define ROUNDS 4

static const char *CONFIG =
    "{\"loadBalancingConfig\":[{\"ring_hash_experimental\":"
    "{\"requestHashHeader\":\"x-user-id\",\"minRingSize\":1024}}]}";

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

/* One call as `user` (NULL: no header) or with `hash` (NULL: none). */
static int call(sy_reader *reader, const char *user, const uint64_t *hash) {
  sy_buffer *resp = NULL;
  sy_metadata md[1];
  sy_call_options opts = {0}; /* = {0}: the defaults; set what applies */
  int who;
  md[0].key = "x-user-id";
  md[0].value = user;
  opts.timeout_ms = 5000;
  opts.has_timeout = true;
  opts.wait_for_ready = true;
  opts.metadata = md;
  opts.metadata_len = user ? 1 : 0;
  if (hash) {
    opts.request_hash = *hash;
    opts.has_request_hash = true;
  }
  OK(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), (const uint8_t *)"hi", 2,
                   &opts, &resp));
  who = backend_of(resp);
  sy_buffer_free(resp);
  return who;
}

static sy_channel *ring_channel(sy_runtime *rt, const char *target, const char *config) {
  sy_channel_options *opts = NULL;
  sy_channel *ch = NULL;
  sy_status st;
  OK(sy_channel_options_new_insecure(&opts));
  st = sy_channel_new_simple(rt, target, config, opts, &ch);
  sy_channel_options_free(opts);
  return st == SY_OK ? ch : NULL;
}

int main(void) {
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL, *other = NULL;
  sy_reader *reader = NULL, *other_reader = NULL;
  char target[256];
  char user[32];
  int home[N_USERS];
  int used[N_SERVERS] = {0};
  int distinct = 0;
  int i, round;

  echo_server_start(&servers, N_SERVERS);
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", servers.ports[0],
           servers.ports[1], servers.ports[2]);
  OK(sy_runtime_new(&rt));
  ch = ring_channel(rt, target, CONFIG);
  CHECK(ch != NULL);
  OK(sy_reader_new(ch, &reader));

  /* 1. Each user keeps its backend. */
  for (round = 0; round < ROUNDS; round++) {
    for (i = 0; i < N_USERS; i++) {
      int who;
      snprintf(user, sizeof user, "user-%d", i);
      who = call(reader, user, NULL);
      if (round == 0) {
        home[i] = who;
        if (used[who]++ == 0) distinct++;
      } else {
        CHECK(who == home[i]);
      }
    }
  }
  CHECK(distinct >= 2); /* 20 users on one of 3 backends: (1/3)^19 */
  printf("%d users over %d backends, each on its own every time\n", N_USERS, distinct);
  other = ring_channel(rt, target, CONFIG);
  CHECK(other != NULL);
  OK(sy_reader_new(other, &other_reader));
  for (i = 0; i < N_USERS; i++) {
    snprintf(user, sizeof user, "user-%d", i);
    CHECK(call(other_reader, user, NULL) == home[i]);
  }
  printf("a second channel agrees on every user\n");

  /* 2. No header: a random hash per call, still served. */
  for (i = 0; i < 10; i++) (void)call(reader, NULL, NULL);

  /* 3. An explicit request hash: one backend per hash. */
  for (i = 0; i < 10; i++) {
    uint64_t hash = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1);
    int first = call(reader, NULL, &hash);
    CHECK(call(reader, NULL, &hash) == first);
    CHECK(call(other_reader, NULL, &hash) == first);
  }
  printf("explicit request hashes stay put\n");

  /* 4. The policy's own config check: a rejected update leaves the
     channel on its config. */
  CHECK_STATUS(sy_channel_update_service_config(ch, "{\"loadBalancingConfig\":[{"
                                                    "\"ring_hash_experimental\":"
                                                    "{\"requestHashHeader\":\"x-key-bin\"}}]}"),
               SY_INVALID_SERVICE_CONFIG);
  {
    char why[256];
    sy_last_error(why, sizeof why);
    CHECK(strstr(why, "requestHashHeader") != NULL);
    printf("rejected: %s\n", why);
  }
  snprintf(user, sizeof user, "user-%d", 0);
  CHECK(call(reader, user, NULL) == home[0]);

  sy_reader_free(other_reader);
  sy_reader_free(reader);
  sy_channel_free(other);
  sy_channel_free(ch);
  sy_runtime_free(rt);
  echo_server_stop(&servers);
  printf("ring_hash OK\n");
  return 0;
}
