/* A resolver written in C, registered by URI scheme, driving a channel over
 * three real gRPC servers (interop/server.py):
 *   1. sy_resolver_register("exres", ...): a channel on "exres:///backends"
 *      builds one once used (a channel starts IDLE); its build callback gets
 *      the parsed target and a sy_resolver_cc to push through;
 *   2. it pushes server 0 alone (pick_first), then servers 1 and 2 with a
 *      service config that switches the channel to round_robin (pushed from
 *      a thread of its own: any thread may push), and both serve;
 *   3. an invalid service config is ignored (the last good one is kept) and
 *      a resolver error leaves the channel serving on its last addresses;
 *   4. an address nobody listens on makes the channel ask the resolver to
 *      resolve again (its resolve_now callback);
 *   5. freeing the channel closes the resolver; its cc then says SY_CLOSED;
 *   6. an error before any address fails RPCs UNAVAILABLE with its text; so
 *      does a build that refuses the target;
 *   7. a host that supplies addresses itself (target "") hears resolve-now
 *      through sy_channel_options_set_resolve_now;
 *   8. bad input to sy_resolver_register is refused. */
#include "echo_server.h"

#include <stdatomic.h>

#define N_SERVERS 3

static echo_server servers;

typedef struct resolver_state {
  sy_resolver_cc *cc;
  char endpoint[64];
  atomic_int builds;
  atomic_int resolve_now;
  atomic_int closed;
} resolver_state;

static bool build(void *user_data, const sy_target *target, sy_resolver_cc *cc,
                  void **out_resolver) {
  resolver_state *st = (resolver_state *)user_data;
  CHECK(strcmp(target->scheme, "exres") == 0 && target->authority[0] == '\0');
  if (strcmp(target->endpoint, "refuse") == 0) return false;
  snprintf(st->endpoint, sizeof st->endpoint, "%s", target->endpoint);
  st->cc = cc;
  atomic_fetch_add(&st->builds, 1);
  *out_resolver = st;
  return true;
}

static void resolve_now(void *resolver) {
  atomic_fetch_add(&((resolver_state *)resolver)->resolve_now, 1);
}

static void close_resolver(void *resolver) {
  atomic_store(&((resolver_state *)resolver)->closed, 1);
}

/* Pushes the listed servers (indices into `servers`; -1 is a port nobody
 * listens on) and a service config (NULL for none). */
static sy_status push(sy_resolver_cc *cc, const int *which, size_t n, const char *config) {
  char text[N_SERVERS + 1][32];
  sy_address addrs[N_SERVERS + 1];
  size_t i;
  CHECK(n <= N_SERVERS + 1);
  for (i = 0; i < n; i++) {
    snprintf(text[i], sizeof text[i], "127.0.0.1:%d", which[i] < 0 ? 1 : servers.ports[which[i]]);
    addrs[i].address = text[i];
    addrs[i].weight = 0;
    addrs[i].user_data = NULL;
  }
  return sy_resolver_cc_update(cc, addrs, n, config);
}

/* One wait-for-ready call; the index of the server that answered. */
static int call_echo(sy_reader *reader) {
  sy_buffer *resp = NULL;
  const uint8_t *v = NULL;
  size_t vlen = 0;
  char port[16];
  int i, who = -1;
  OK(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), (const uint8_t *)"r", 1,
                   &(sy_call_options){.timeout_ms = 10000, .has_timeout = true,
                                      .wait_for_ready = true},
                   &resp));
  OK(sy_buffer_trailer(resp, "x-backend-port", 0, &v, &vlen));
  CHECK(vlen > 0 && vlen < sizeof port);
  memcpy(port, v, vlen);
  port[vlen] = '\0';
  for (i = 0; i < N_SERVERS; i++)
    if (servers.ports[i] == atoi(port)) who = i;
  sy_buffer_free(resp);
  CHECK(who >= 0);
  return who;
}

static bool policy_is(const sy_channel *ch, const char *policy) {
  char *json = NULL;
  size_t len = 0;
  char want[64];
  bool found;
  OK(sy_channel_snapshot_json(ch, &json, &len));
  snprintf(want, sizeof want, "\"policy\":\"%s\"", policy);
  found = strstr(json, want) != NULL;
  sy_snapshot_json_free(json);
  return found;
}

static void wait_for(atomic_int *counter, const char *what) {
  int i;
  for (i = 0; i < 1000 && atomic_load(counter) == 0; i++) sleep_ms(10);
  if (atomic_load(counter) == 0) {
    fprintf(stderr, "never happened: %s\n", what);
    exit(1);
  }
}

typedef struct push_args {
  sy_resolver_cc *cc;
  sy_status status;
} push_args;

static void *push_from_a_thread(void *arg) {
  push_args *a = (push_args *)arg;
  static const int both[] = {1, 2};
  a->status = push(a->cc, both, 2, "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}");
  return NULL;
}

static void host_resolve_now(void *ctx) { atomic_fetch_add((atomic_int *)ctx, 1); }

int main(void) {
  static resolver_state st;
  sy_resolver_vtable vt = {build, resolve_now, close_resolver, NULL};
  sy_runtime *rt = NULL;
  sy_channel_options *opts = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL;
  sy_resolver_cc *cc;
  pthread_t t;
  push_args args;
  int i, seen[N_SERVERS] = {0};
  static const int first[] = {0};
  static const int with_dead[] = {1, -1};
  static atomic_int host_asked;
  sy_address dead = {"127.0.0.1:1", 0, NULL};

  echo_server_start(&servers, N_SERVERS);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_options_new_insecure(&opts));

  /* 1. Registered by scheme (any case); built when a channel naming it is
   * first used (here: sy_channel_connect; a pick or call does the same). */
  OK(sy_resolver_register("ExRes", &vt, &st));
  OK(sy_channel_new_simple(rt, "exres:///backends", "{\"loadBalancingConfig\":[{\"pick_first\":{}}]}",
                           opts, &ch));
  OK(sy_channel_sync(ch));
  CHECK(atomic_load(&st.builds) == 0);
  OK(sy_channel_connect(ch));
  OK(sy_channel_sync(ch));
  CHECK(atomic_load(&st.builds) == 1 && strcmp(st.endpoint, "backends") == 0);
  cc = st.cc;
  OK(sy_reader_new(ch, &reader));

  /* 2. Addresses, then a service config that switches the policy. */
  OK(push(cc, first, 1, NULL));
  CHECK(call_echo(reader) == 0);
  CHECK(policy_is(ch, "pick_first"));
  args.cc = cc;
  CHECK(pthread_create(&t, NULL, push_from_a_thread, &args) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  OK(args.status);
  OK(sy_channel_sync(ch));
  CHECK(policy_is(ch, "round_robin"));
  for (i = 0; i < 200 && !(seen[1] && seen[2]); i++) seen[call_echo(reader)]++;
  CHECK(seen[1] && seen[2]);

  /* 3. A bad config is ignored; an error keeps the last addresses serving. */
  OK(push(cc, with_dead, 1, "{not json"));
  OK(sy_channel_sync(ch));
  CHECK(policy_is(ch, "round_robin"));
  OK(sy_resolver_cc_report_error(cc, "the name server is down"));
  CHECK(call_echo(reader) == 1);

  /* 4. A dead address: the channel asks the resolver to look again. The
   *    config comes with the update, as a resolver's does every time (an
   *    update without one means the channel's default: pick_first). */
  OK(push(cc, with_dead, 2, "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}"));
  wait_for(&st.resolve_now, "resolve_now after a failed connection");
  CHECK(call_echo(reader) == 1);

  /* 5. Freeing the channel closes the resolver; its cc is refused after. */
  sy_reader_free(reader);
  reader = NULL;
  CHECK(atomic_load(&st.closed) == 0);
  sy_channel_free(ch);
  ch = NULL;
  CHECK(atomic_load(&st.closed) == 1);
  CHECK_STATUS(push(cc, first, 1, NULL), SY_CLOSED);
  CHECK_STATUS(sy_resolver_cc_report_error(cc, "late"), SY_CLOSED);

  /* 6. An error before any address; a refused target. */
  atomic_store(&st.closed, 0);
  OK(sy_channel_new_simple(rt, "exres:other", NULL, opts, &ch));
  OK(sy_channel_connect(ch));
  OK(sy_channel_sync(ch));
  OK(sy_resolver_cc_report_error(st.cc, "no such service"));
  OK(sy_channel_sync(ch));
  OK(sy_reader_new(ch, &reader));
  {
    sy_buffer *resp = NULL;
    char err[256];
    CHECK_STATUS(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"),
                               (const uint8_t *)"r", 1,
                               &(sy_call_options){.timeout_ms = 2000, .has_timeout = true}, &resp),
                 SY_RPC_FAILED);
    CHECK(sy_last_grpc_code() == 14 && resp == NULL);
    sy_last_error(err, sizeof err);
    CHECK(strstr(err, "no such service") != NULL);
  }
  sy_reader_free(reader);
  reader = NULL;
  sy_channel_free(ch);
  ch = NULL;
  OK(sy_channel_new_simple(rt, "exres:refuse", NULL, opts, &ch));
  OK(sy_reader_new(ch, &reader));
  {
    sy_buffer *resp = NULL;
    char err[256];
    CHECK_STATUS(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"),
                               (const uint8_t *)"r", 1,
                               &(sy_call_options){.timeout_ms = 2000, .has_timeout = true}, &resp),
                 SY_RPC_FAILED);
    CHECK(sy_last_grpc_code() == 14 && resp == NULL);
    sy_last_error(err, sizeof err);
    CHECK(strstr(err, "refused target") != NULL);
  }
  sy_reader_free(reader);
  reader = NULL;
  sy_channel_free(ch);
  ch = NULL;

  /* 7. The host as resolver hears resolve-now too. */
  OK(sy_channel_options_set_resolve_now(opts, host_resolve_now, &host_asked));
  OK(sy_channel_new_simple(rt, "", NULL, opts, &ch));
  OK(sy_channel_update_addresses(ch, &dead, 1));
  OK(sy_channel_connect(ch));
  wait_for(&host_asked, "the host's resolve-now callback");
  sy_channel_free(ch);
  ch = NULL;

  /* 8. Bad input. */
  CHECK_STATUS(sy_resolver_register(NULL, &vt, NULL), SY_NULL_PARAMETER);
  CHECK_STATUS(sy_resolver_register("exres", NULL, NULL), SY_NULL_PARAMETER);
  CHECK_STATUS(sy_resolver_register("1bad", &vt, NULL), SY_INVALID_ARGUMENT);
  CHECK_STATUS(sy_resolver_register("ok:no", &vt, NULL), SY_INVALID_ARGUMENT);
  {
    sy_resolver_vtable no_build = {NULL, NULL, NULL, NULL};
    CHECK_STATUS(sy_resolver_register("nobuild", &no_build, NULL), SY_INVALID_ARGUMENT);
  }
  CHECK_STATUS(sy_resolver_cc_update(NULL, NULL, 0, NULL), SY_NULL_PARAMETER);

  sy_channel_options_free(opts);
  sy_runtime_free(rt);
  echo_server_stop(&servers);
  printf("resolver: ok\n");
  return 0;
}
