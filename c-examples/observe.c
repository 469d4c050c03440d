/* What an operator sees from C: the library's log records through
 * sy_log_set_callback, and a channel's snapshot as JSON
 * (sy_channel_snapshot_json), against two real gRPC servers (grpcio, see
 * echo_server.h). Checks that the callback hears the subchannels become
 * READY, that the snapshot counts the calls each backend served, and that
 * once the servers are gone the snapshot shows the subchannels' errors and
 * the log says why the channel left READY. */
#include "echo_server.h"

#define N_SERVERS 2
#define N_CALLS 10
#define LOG_MAX 256
#define RR_CONFIG "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}"

/* The log lines the callback saw. */
typedef struct log_lines {
  pthread_mutex_t mu;
  int count;
  char lines[LOG_MAX][320];
} log_lines;

static log_lines seen = {PTHREAD_MUTEX_INITIALIZER, 0, {{0}}};

/* Runs on whichever thread logs (mostly the event loop's): copies, never
 * blocks. */
static void on_log(void *ctx, uint32_t level, const char *target, size_t target_len,
                   const char *message, size_t message_len) {
  log_lines *l = ctx;
  pthread_mutex_lock(&l->mu);
  if (l->count < LOG_MAX) {
    snprintf(l->lines[l->count++], sizeof l->lines[0], "%u %.*s: %.*s", (unsigned)level,
             (int)target_len, target, (int)message_len, message);
  }
  pthread_mutex_unlock(&l->mu);
  if (getenv("SY_VERBOSE") != NULL) printf("log: %s %s\n", target, message);
}

/* How many log lines contain both `a` and `b`. */
static int log_count(const char *a, const char *b) {
  int i, n = 0;
  pthread_mutex_lock(&seen.mu);
  for (i = 0; i < seen.count; i++)
    if (strstr(seen.lines[i], a) != NULL && strstr(seen.lines[i], b) != NULL) n++;
  pthread_mutex_unlock(&seen.mu);
  return n;
}

/* The number after `"key":` in the snapshot's entry for `address`. */
static long field_for(const char *json, const char *address, const char *key) {
  char needle[96];
  const char *entry, *p;
  snprintf(needle, sizeof needle, "\"address\":\"%s\"", address);
  entry = strstr(json, needle);
  CHECK(entry != NULL);
  snprintf(needle, sizeof needle, "\"%s\":", key);
  p = strstr(entry, needle);
  CHECK(p != NULL);
  return strtol(p + strlen(needle), NULL, 10);
}

static char *snapshot(sy_channel *ch) {
  char *json = NULL;
  size_t len = 0;
  OK(sy_channel_snapshot_json(ch, &json, &len));
  CHECK(json != NULL && strlen(json) == len);
  return json;
}

int main(void) {
  echo_server servers;
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL;
  sy_channel_options *opts = NULL;
  sy_reader *reader = NULL;
  char target[128], addr[N_SERVERS][32];
  char *json;
  long total = 0;
  int i, tries;
  uint32_t state = SY_STATE_READY;

  OK(sy_log_set_callback(on_log, &seen, SY_LOG_INFO));
  CHECK_STATUS(sy_log_set_callback(on_log, &seen, 42), SY_INVALID_ARGUMENT);

  echo_server_start(&servers, N_SERVERS);
  for (i = 0; i < N_SERVERS; i++) snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", servers.ports[i]);
  snprintf(target, sizeof target, "ipv4:%s,%s", addr[0], addr[1]);

  OK(sy_runtime_new(&rt));
  OK(sy_channel_options_new(&opts));
  OK(sy_channel_options_set_insecure(opts, true)); /* the servers speak h2c */
  OK(sy_channel_options_set_backoff(opts, 100, 1000, 0));
  OK(sy_channel_new_with_options(rt, target, RR_CONFIG, opts, NULL, NULL, NULL, NULL, &ch));
  sy_channel_options_free(opts);
  OK(sy_reader_new(ch, &reader));

  /* Both backends connected first, so that round_robin spreads the calls
   * over both however slowly the second connects (ASan, valgrind, a busy
   * machine). Bounded: 30 s. gRPC's GetState: reading the state connects
   * nothing; with try_to_connect an IDLE channel connects. */
  OK(sy_channel_get_state(ch, false, &state));
  CHECK(state == SY_STATE_IDLE);
  OK(sy_channel_get_state(ch, true, &state));
  CHECK(state == SY_STATE_IDLE);
  for (tries = 0; tries < 3000; tries++) {
    const char *at;
    int ready = 0;
    json = snapshot(ch);
    for (at = json; (at = strstr(at, "\"state\":\"READY\"")) != NULL; at++) ready++;
    sy_snapshot_json_free(json);
    if (ready == N_SERVERS + 1) break; /* the channel and each subchannel */
    sleep_ms(10);
  }
  CHECK(tries < 3000);
  state = SY_STATE_READY;

  for (i = 0; i < N_CALLS; i++) {
    sy_buffer *resp = NULL;
    OK(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), (const uint8_t *)"hi",
                     2,
                     &(sy_call_options){.timeout_ms = 5000, .has_timeout = true,
                                        .wait_for_ready = true},
                     &resp));
    sy_buffer_free(resp);
  }

  /* Both subchannels became READY, and the log said so. */
  for (i = 0; i < N_SERVERS; i++) CHECK(log_count(addr[i], "CONNECTING -> READY") >= 1);
  CHECK(log_count("switchyard::channel", "-> READY") >= 1);

  json = snapshot(ch);
  printf("snapshot: %s\n", json);
  CHECK(strstr(json, "\"policy\":\"round_robin\"") != NULL);
  CHECK(strstr(json, "\"state\":\"READY\"") != NULL);
  for (i = 0; i < N_SERVERS; i++) {
    long ok = field_for(json, addr[i], "calls_succeeded");
    CHECK(ok >= 1); /* round_robin: both served some */
    CHECK(field_for(json, addr[i], "calls_started") == ok);
    CHECK(field_for(json, addr[i], "calls_in_flight") == 0);
    total += ok;
  }
  CHECK(total == N_CALLS);
  sy_snapshot_json_free(json);

  /* The servers go: the channel leaves READY, and the snapshot and the log
   * say why. */
  echo_server_stop(&servers);
  for (tries = 0; state == SY_STATE_READY || state == SY_STATE_IDLE; tries++) {
    CHECK(tries < 100);
    sy_status st;
    OK(sy_channel_connect(ch));
    st = sy_channel_wait_for_state_change(ch, state, 100, &state);
    CHECK(st == SY_OK || st == SY_TIMEOUT);
    OK(sy_channel_state(ch, &state));
  }
  json = snapshot(ch);
  printf("after stop: %s\n", json);
  CHECK(strstr(json, "\"last_error\":\"") != NULL);
  sy_snapshot_json_free(json);
  CHECK(log_count("switchyard::transport", "connection") >= 1);

  sy_reader_free(reader);
  sy_channel_free(ch);
  sy_runtime_free(rt);
  OK(sy_log_set_callback(NULL, NULL, SY_LOG_OFF));
  CHECK(log_count("switchyard::channel", "-> SHUTDOWN") >= 1);
  printf("observe: %d log lines, snapshot counts match; ok\n", seen.count);
  return 0;
}
