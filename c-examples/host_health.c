/* Client-side health checking (gRFC A17) with a host transport: the library
 * asks the host to check a connected transport's health (the `health`
 * callback, with the service config's healthCheckConfig.serviceName) and
 * the host reports verdicts apart from connectivity
 * (sy_channel_report_subconn_health). The first verdict gates READY; not
 * serving is TRANSIENT_FAILURE with the transport kept; turning health
 * checking off stops the check. */
#include "common.h"

#define ADDR "127.0.6.1:443"
#define RR_HEALTH                                  \
  "{\"loadBalancingConfig\":[{\"round_robin\":{}}]," \
  "\"healthCheckConfig\":{\"serviceName\":\"echo.Echo\"}}"

typedef struct health_host {
  host h; /* first: host_connect and host_shutdown take the ctx as a host */
  int starts; /* guarded by h.mu, as the rest */
  int stops;
  char service[64]; /* the last service asked for, NUL-terminated */
  size_t service_len;
} health_host;

/* Loop thread: start (service non-NULL) or stop checking a transport. A real
 * host would open grpc.health.v1.Health/Watch on it here. */
static void on_health(void *ctx, uint64_t id, const char *address, size_t address_len,
                      void *user_data, const char *service, size_t service_len) {
  health_host *hh = (health_host *)ctx;
  (void)id;
  (void)user_data;
  CHECK(strlen(address) == address_len && strcmp(address, ADDR) == 0);
  pthread_mutex_lock(&hh->h.mu);
  if (service != NULL) {
    /* service_len bytes, then a NUL (a name may hold a NUL itself). */
    CHECK(service[service_len] == '\0' && service_len < sizeof hh->service);
    memcpy(hh->service, service, service_len + 1);
    hh->service_len = service_len;
    hh->starts++;
  } else {
    hh->stops++;
  }
  pthread_mutex_unlock(&hh->h.mu);
}

/* A health host with no transports yet, and the transport table that
 * reaches it. */
static sy_host_transport health_host_init(health_host *hh) {
  sy_host_transport t;
  memset(hh, 0, sizeof *hh);
  host_init(&hh->h);
  t = host_transport(&hh->h);
  t.ctx = hh;
  t.health = on_health;
  return t;
}

static uint32_t state_of(const sy_channel *ch) {
  uint32_t state = 99;
  OK(sy_channel_sync(ch));
  OK(sy_channel_state(ch, &state));
  return state;
}

static int counter(health_host *hh, const int *which) {
  int n;
  pthread_mutex_lock(&hh->h.mu);
  n = *which;
  pthread_mutex_unlock(&hh->h.mu);
  return n;
}

int main(void) {
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL;
  sy_channel *managed = NULL;
  sy_channel_options *insecure = NULL;
  sy_reader *reader = NULL;
  health_host hh;
  sy_host_transport t;
  sy_address addr;
  sy_pick_result r;
  uint64_t id;
  char err[256];
  const char bad_utf8[] = {(char)0xff, 0};

  t = health_host_init(&hh);
  OK(sy_runtime_new(&rt));
  OK(sy_channel_new(rt, "", RR_HEALTH, &t, NULL, NULL, NULL, &ch));
  OK(sy_reader_new(ch, &reader));
  addr.address = ADDR;
  addr.weight = 0;
  addr.user_data = NULL;
  OK(sy_channel_update_addresses(ch, &addr, 1));
  host_wait_connects(&hh.h, 1);
  id = host_id(&hh.h, ADDR);

  /* A verdict before the transport is up counts for nothing. */
  OK(sy_channel_report_subconn_health(ch, id, true, NULL));
  CHECK(state_of(ch) == SY_STATE_CONNECTING);
  CHECK(counter(&hh, &hh.starts) == 0);

  /* Connected: the host is asked to check "echo.Echo"; until it answers the
   * subchannel is CONNECTING and nothing can be picked. */
  OK(sy_channel_report_subconn_state(ch, id, SY_STATE_READY, NULL));
  CHECK(state_of(ch) == SY_STATE_CONNECTING);
  CHECK(counter(&hh, &hh.starts) == 1);
  CHECK(strcmp(hh.service, "echo.Echo") == 0);
  CHECK_STATUS(sy_pick(reader, NULL, 0, NULL, SY_NO_WAIT, false, &r), SY_NO_SUBCHANNEL);

  /* Serving: READY. */
  OK(sy_channel_report_subconn_health(ch, id, true, NULL));
  CHECK(state_of(ch) == SY_STATE_READY);
  OK(sy_pick(reader, NULL, 0, NULL, SY_NO_WAIT, false, &r));
  CHECK(r.address_len == strlen(ADDR) && memcmp(r.address, ADDR, r.address_len) == 0);
  OK(sy_pick_done(&r, 0, 0, NULL, 0));

  /* Not serving: TRANSIENT_FAILURE with the host's reason; the transport
   * stays (no shutdown, no new connect). */
  OK(sy_channel_report_subconn_health(ch, id, false, "draining for a deploy"));
  CHECK(state_of(ch) == SY_STATE_TRANSIENT_FAILURE);
  CHECK_STATUS(sy_pick(reader, NULL, 0, NULL, SY_NO_WAIT, false, &r), SY_UNAVAILABLE);
  sy_last_error(err, sizeof err);
  CHECK(strstr(err, "draining for a deploy") != NULL);
  CHECK(counter(&hh, &hh.h.shutdowns) == 0 && counter(&hh, &hh.h.connects) == 1);

  /* Serving again: straight back to READY. */
  OK(sy_channel_report_subconn_health(ch, id, true, NULL));
  CHECK(state_of(ch) == SY_STATE_READY);

  /* Health checking turned off: the check is stopped; still READY. */
  OK(sy_channel_update_service_config(ch, RR_CONFIG));
  CHECK(state_of(ch) == SY_STATE_READY);
  CHECK(counter(&hh, &hh.stops) == 1 && counter(&hh, &hh.starts) == 1);

  /* A service name holding a NUL reaches the host whole, with its length
   * (cut at the NUL it would be "", the whole server's health). */
  OK(sy_channel_update_service_config(ch, "{\"loadBalancingConfig\":[{\"round_robin\":{}}],"
                                          "\"healthCheckConfig\":{\"serviceName\":\"a\\u0000b\"}}"));
  OK(sy_channel_sync(ch));
  CHECK(counter(&hh, &hh.starts) == 2);
  pthread_mutex_lock(&hh.h.mu);
  CHECK(hh.service_len == 3 && memcmp(hh.service, "a\0b", 3) == 0);
  pthread_mutex_unlock(&hh.h.mu);
  OK(sy_channel_report_subconn_health(ch, id, true, NULL));
  CHECK(state_of(ch) == SY_STATE_READY);

  /* A channel made with health checking off (gRPC-Go's
   * WithDisableHealthCheck): the same config asks for checks, none is
   * started, and the subchannel is READY once its transport is. */
  {
    health_host off;
    sy_host_transport t2;
    sy_channel_options *opts = NULL;
    sy_channel *unchecked = NULL;
    t2 = health_host_init(&off);
    OK(sy_channel_options_new(&opts));
    OK(sy_channel_options_set_health_checking(opts, 0));
    OK(sy_channel_new_with_options(rt, "", RR_HEALTH, opts, &t2, NULL, NULL, NULL, &unchecked));
    sy_channel_options_free(opts);
    OK(sy_channel_update_addresses(unchecked, &addr, 1));
    host_wait_connects(&off.h, 1);
    OK(sy_channel_report_subconn_state(unchecked, host_id(&off.h, ADDR), SY_STATE_READY, NULL));
    CHECK(state_of(unchecked) == SY_STATE_READY);
    CHECK(counter(&off, &off.starts) == 0);
    sy_channel_free(unchecked);
    host_destroy(&off.h);
  }
  CHECK_STATUS(sy_channel_options_set_health_checking(NULL, 0), SY_NULL_PARAMETER);

  /* Bad input says so. */
  CHECK_STATUS(sy_channel_report_subconn_health(NULL, id, true, NULL), SY_NULL_PARAMETER);
  CHECK_STATUS(sy_channel_report_subconn_health(ch, id, false, bad_utf8), SY_INVALID_UTF8);
  OK(sy_channel_options_new_insecure(&insecure));
  OK(sy_channel_new_with_options(rt, "", NULL, insecure, NULL, NULL, NULL, NULL, &managed));
  sy_channel_options_free(insecure);
  /* The library's own connections report their own health. */
  CHECK_STATUS(sy_channel_report_subconn_health(managed, 1, true, NULL), SY_INVALID_ARGUMENT);
  sy_channel_free(managed);
  OK(sy_channel_close(ch));
  CHECK_STATUS(sy_channel_report_subconn_health(ch, id, true, NULL), SY_CLOSED);

  sy_reader_free(reader);
  sy_channel_free(ch);
  sy_runtime_free(rt);
  host_destroy(&hh.h);
  printf("host_health: ok\n");
  return 0;
}
