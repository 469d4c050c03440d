/* Unary RPCs to real gRPC servers over library-managed HTTP/2 connections.
 *
 * Starts three grpcio echo servers (interop/server.py), makes a round_robin
 * channel over them (plaintext), and:
 *   1. warms up until every server has answered;
 *   2. makes 300 blocking sy_call_unary calls from 4 threads at once, each
 *      with its own reader, and checks the exact 1/3 split (read from the
 *      response body and from the "x-backend-port" trailer);
 *   3. starts calls with sy_call_unary_start and waits for their completion
 *      callbacks;
 *   4. shows how failures map: an unknown method (UNIMPLEMENTED, 12), a
 *      server's rich error (its google.rpc.Status details and metadata
 *      through sy_last_call_message / _details / sy_last_call_trailer[_at]), a
 *      deadline shorter than the server's delay (DEADLINE_EXCEEDED, 4), a
 *      server nobody listens on (UNAVAILABLE, 14), metadata HTTP/2 cannot
 *      carry (SY_INVALID_ARGUMENT, nothing sent);
 *   5. started calls cost no thread while they wait: a 200 ms call ends on
 *      time while a 30 s one is in flight, and while 100 calls wait on a
 *      server that never answers (the thread count stays put); sy_call_cancel
 *      ends a call with CANCELLED; closing that channel completes each of
 *      its calls exactly once with SY_CLOSED;
 *   6. closes with calls in flight (every callback has run when
 *      sy_channel_close returns). */
#include "echo_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define N_SERVERS 3
#define N_THREADS 4
#define CALLS_PER_THREAD 75 /* a multiple of N_SERVERS: each reader rotates */
#define N_ASYNC 30
#define N_INFLIGHT 3

static echo_server servers;

/* Which server answered: the index of the port in the "x-backend-port"
 * trailer, after checking the body is the echo "<request>|port=<port>". */
static int backend_of(const sy_buffer *resp, const char *request) {
  const uint8_t *v = NULL;
  size_t vlen = 0;
  char port[16];
  char want[128];
  int i;
  OK(sy_buffer_trailer(resp, "x-backend-port", 0, &v, &vlen));
  CHECK(vlen > 0 && vlen < sizeof port);
  memcpy(port, v, vlen);
  port[vlen] = '\0';
  OK(sy_buffer_header(resp, "X-Backend-Port", 0, &v, &vlen)); /* case-insensitive */
  CHECK(vlen == strlen(port) && memcmp(v, port, vlen) == 0);
  CHECK_STATUS(sy_buffer_trailer(resp, "x-backend-port", 1, &v, &vlen), SY_NOT_FOUND);
  /* The status is the call's outcome, not metadata (as in gRPC-Go). */
  CHECK_STATUS(sy_buffer_trailer(resp, "grpc-status", 0, &v, &vlen), SY_NOT_FOUND);
  /* Every trailer, in order: x-backend-port among them, nothing of the
   * transport's. */
  {
    const uint8_t *k = NULL;
    size_t klen = 0, j, found = 0;
    for (j = 0; sy_buffer_trailer_at(resp, j, &k, &klen, &v, &vlen) == SY_OK; j++) {
      CHECK(klen < 5 || memcmp(k, "grpc-", 5) != 0);
      if (klen == strlen("x-backend-port") && memcmp(k, "x-backend-port", klen) == 0) {
        CHECK(vlen == strlen(port) && memcmp(v, port, vlen) == 0);
        found++;
      }
    }
    CHECK(found == 1);
    found = 0;
    for (j = 0; sy_buffer_header_at(resp, j, &k, &klen, &v, &vlen) == SY_OK; j++)
      if (klen == strlen("x-backend-port") && memcmp(k, "x-backend-port", klen) == 0) found++;
    CHECK(found == 1);
    CHECK_STATUS(sy_buffer_header_at(resp, 0, NULL, &klen, &v, &vlen), SY_NULL_PARAMETER);
  }
  snprintf(want, sizeof want, "%s|port=%s", request, port);
  CHECK(sy_buffer_len(resp) == strlen(want));
  CHECK(memcmp(sy_buffer_data(resp), want, strlen(want)) == 0);
  for (i = 0; i < N_SERVERS; i++)
    if (servers.ports[i] == atoi(port)) return i;
  CHECK(!"answer from an unknown port");
  return -1;
}

/* One blocking call on `reader`; returns the index of the server. */
static int call_echo(sy_reader *reader, const char *request) {
  sy_buffer *resp = NULL;
  sy_metadata md[2];
  int who;
  md[0].key = "x-example";
  md[0].value = "unary_call";
  md[1].key = "X-Request-Kind"; /* folded to lower case */
  md[1].value = "echo";
  OK(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), (const uint8_t *)request,
                   strlen(request),
                   &(sy_call_options){.timeout_ms = 5000, .has_timeout = true,
                                      .wait_for_ready = true, .metadata = md, .metadata_len = 2},
                   &resp));
  who = backend_of(resp, request);
  sy_buffer_free(resp);
  return who;
}

/* ---- 2. blocking calls from several threads ------------------------------ */

typedef struct worker {
  const sy_channel *ch;
  int id;
  int hits[N_SERVERS]; /* this thread's own tally: nothing shared */
} worker;

static void *blocking_calls(void *arg) {
  worker *w = (worker *)arg;
  sy_reader *reader = NULL;
  char request[64];
  int i;
  OK(sy_reader_new(w->ch, &reader));
  for (i = 0; i < CALLS_PER_THREAD; i++) {
    snprintf(request, sizeof request, "thread %d call %d", w->id, i);
    w->hits[call_echo(reader, request)]++;
  }
  sy_reader_free(reader);
  return NULL;
}

/* ---- 3. calls with a completion callback --------------------------------- */

typedef struct completions {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  int ok;
  int closed;
  int hits[N_SERVERS];
  sy_status last_status;
  uint32_t last_code;
  char last_message[256];
} completions;

/* A completion thread: record the outcome, free the response. */
static void on_done(void *ctx, sy_status status, uint32_t grpc_code, const char *message,
                    sy_buffer *response) {
  completions *c = (completions *)ctx;
  int who = -1;
  if (status == SY_OK) {
    char request[64];
    CHECK(response != NULL && grpc_code == 0 && message[0] == '\0');
    /* The request was "async <n>": recover it from the echoed body. */
    snprintf(request, sizeof request, "%.*s",
             (int)(strstr((const char *)sy_buffer_data(response), "|port=") -
                   (const char *)sy_buffer_data(response)),
             (const char *)sy_buffer_data(response));
    who = backend_of(response, request);
    sy_buffer_free(response);
  } else {
    CHECK(response == NULL);
  }
  pthread_mutex_lock(&c->mu);
  c->done++;
  if (status == SY_OK) {
    c->ok++;
    c->hits[who]++;
  }
  if (status == SY_CLOSED) c->closed++;
  c->last_status = status;
  c->last_code = grpc_code;
  snprintf(c->last_message, sizeof c->last_message, "%s", message);
  pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static void completions_init(completions *c) {
  memset(c, 0, sizeof *c);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
}

static void completions_destroy(completions *c) {
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
}

/* Waits (bounded) until `n` callbacks ran. */
static void wait_done(completions *c, int n) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 30;
  pthread_mutex_lock(&c->mu);
  while (c->done < n) CHECK(pthread_cond_timedwait(&c->cv, &c->mu, &until) == 0);
  pthread_mutex_unlock(&c->mu);
}

/* ---- 5. started calls: deadlines, threads, cancellation --------------------- */

#define N_SILENT 100

/* The threads of this process now. */
static int thread_count(void) {
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  int n = 0;
  CHECK(d != NULL);
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* How often each of the silent calls completed, and how. */
typedef struct silent_tally {
  pthread_mutex_t mu;
  int times[N_SILENT];
  int closed;
} silent_tally;

typedef struct silent_call {
  silent_tally *tally;
  int index;
} silent_call;

static void on_silent_done(void *ctx, sy_status status, uint32_t grpc_code, const char *message,
                           sy_buffer *response) {
  silent_call *call = (silent_call *)ctx;
  (void)message;
  CHECK(response == NULL);
  pthread_mutex_lock(&call->tally->mu);
  call->tally->times[call->index]++;
  if (status == SY_CLOSED && grpc_code == 1) call->tally->closed++;
  pthread_mutex_unlock(&call->tally->mu);
}

/* A listener that never accepts: the TCP handshake completes in the kernel,
 * HTTP/2 never starts, so calls to it wait (wait_for_ready) for good. */
static int silent_listener(int *port) {
  int fd = loopback_socket(SOCK_STREAM, port);
  CHECK(listen(fd, 16) == 0);
  return fd;
}

/* A deadline-less call left in flight on the main channel: its close ends it. */
static completions slow;

static void started_calls(sy_runtime *rt, sy_channel *ch, const sy_channel_options *opts) {
  completions quick, cancelled;
  silent_tally tally;
  silent_call calls[N_SILENT];
  sy_channel *silent = NULL;
  char target[64];
  uint64_t id = 0;
  double t0, took;
  int threads = 0, i, port, fd;

  completions_init(&slow);
  completions_init(&quick);
  completions_init(&cancelled);
  completions_init(&slow);

  /* A 200 ms call ends at its deadline while a 30 s one is in flight. */
  OK(sy_call_unary_start(ch, "/echo.Echo/Delay", strlen("/echo.Echo/Delay"),
                         (const uint8_t *)"30000", 5, &(sy_call_options){.wait_for_ready = true},
                         on_done, &slow, NULL));
  t0 = now_ms();
  OK(sy_call_unary_start(ch, "/echo.Echo/Delay", strlen("/echo.Echo/Delay"),
                         (const uint8_t *)"30000", 5,
                         &(sy_call_options){.timeout_ms = 200, .has_timeout = true,
                                            .wait_for_ready = true},
                         on_done, &quick, NULL));
  wait_done(&quick, 1);
  took = now_ms() - t0;
  CHECK(quick.last_status == SY_RPC_FAILED && quick.last_code == 4 /* DEADLINE_EXCEEDED */);
  CHECK(took >= 150 && took < 5000);
  printf("started: a 200 ms call behind a 30 s one ended after %.0f ms (code %u)\n", took,
         (unsigned)quick.last_code);

  /* Cancel: the 30 s call ends now, with CANCELLED; then it is not found. */
  OK(sy_call_unary_start(ch, "/echo.Echo/Delay", strlen("/echo.Echo/Delay"),
                         (const uint8_t *)"30000", 5, &(sy_call_options){.wait_for_ready = true},
                         on_done, &cancelled, &id));
  sleep_ms(100); /* let it reach the server */
  OK(sy_call_cancel(ch, id));
  wait_done(&cancelled, 1);
  CHECK(cancelled.last_status == SY_RPC_FAILED && cancelled.last_code == 1 /* CANCELLED */);
  CHECK_STATUS(sy_call_cancel(ch, id), SY_NOT_FOUND);
  CHECK_STATUS(sy_call_cancel(NULL, id), SY_NULL_PARAMETER);
  printf("started: cancelled call %llu: status %s, code %u, message \"%s\"\n",
         (unsigned long long)id, sy_status_str(cancelled.last_status),
         (unsigned)cancelled.last_code, cancelled.last_message);
  pthread_mutex_lock(&slow.mu);
  CHECK(slow.done == 0); /* still running: closed with the channel */
  pthread_mutex_unlock(&slow.mu);

  /* 100 calls to a server that never answers: no thread each, and a
   * 200 ms call on the same channel still ends on time. */
  fd = silent_listener(&port);
  /* ipv4: a static list (a DNS target would start a resolver thread). */
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d", port);
  OK(sy_channel_new_with_options(rt, target, NULL, opts, NULL, NULL, NULL, NULL, &silent));
  memset(&tally, 0, sizeof tally);
  pthread_mutex_init(&tally.mu, NULL);
  for (i = 0; i < N_SILENT; i++) {
    calls[i].tally = &tally;
    calls[i].index = i;
    OK(sy_call_unary_start(silent, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                           &(sy_call_options){.wait_for_ready = true}, on_silent_done, &calls[i],
                           NULL));
    if (i == 0) threads = thread_count(); /* with the channel's completion thread */
  }
  CHECK(thread_count() == threads);
  completions_destroy(&quick);
  completions_init(&quick);
  t0 = now_ms();
  OK(sy_call_unary_start(silent, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                         &(sy_call_options){.timeout_ms = 200, .has_timeout = true,
                                            .wait_for_ready = true},
                         on_done, &quick, NULL));
  wait_done(&quick, 1);
  took = now_ms() - t0;
  CHECK(quick.last_status == SY_RPC_FAILED && quick.last_code == 4);
  CHECK(took >= 150 && took < 5000);
  printf("started: %d calls waiting on a silent server, %d threads; a 200 ms call ended after "
         "%.0f ms\n",
         N_SILENT, threads, took);
  /* Close: each of them completes exactly once, with SY_CLOSED, before it
   * returns. */
  OK(sy_channel_close(silent));
  pthread_mutex_lock(&tally.mu);
  for (i = 0; i < N_SILENT; i++) CHECK(tally.times[i] == 1);
  CHECK(tally.closed == N_SILENT);
  pthread_mutex_unlock(&tally.mu);
  sy_channel_free(silent);
  close(fd);
  pthread_mutex_destroy(&tally.mu);
  completions_destroy(&quick);
  completions_destroy(&cancelled);
}

/* ---- 4. failures ---------------------------------------------------------- */

static void expect_rpc_error(sy_status got, uint32_t want_code) {
  char err[256];
  sy_last_error(err, sizeof err);
  CHECK_STATUS(got, SY_RPC_FAILED);
  CHECK(sy_last_grpc_code() == want_code);
  printf("  -> %s (grpc code %u)\n", err, (unsigned)sy_last_grpc_code());
}

int main(void) {
  sy_runtime *rt = NULL;
  sy_channel *ch = NULL;
  sy_channel_options *opts = NULL;
  sy_reader *reader = NULL;
  sy_buffer *resp = NULL;
  char target[256];
  int seen[N_SERVERS] = {0};
  int total[N_SERVERS] = {0};
  pthread_t threads[N_THREADS];
  worker workers[N_THREADS];
  completions c;
  int i, j, calls;

  echo_server_start(&servers, N_SERVERS);
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", servers.ports[0],
           servers.ports[1], servers.ports[2]);
  printf("servers: %s\n", target + 5);

  OK(sy_runtime_new(&rt));
  OK(sy_channel_options_new(&opts));
  OK(sy_channel_options_set_insecure(opts, true)); /* the servers speak h2c */
  OK(sy_channel_options_set_backoff(opts, 100, 1000, 0));
    OK(sy_channel_new_with_options(rt, target, RR_CONFIG, opts, NULL, NULL, NULL, NULL, &ch));

  /* 1. Warm up: every server answers (so all three subchannels are READY). */
  OK(sy_reader_new(ch, &reader));
  for (calls = 0; seen[0] == 0 || seen[1] == 0 || seen[2] == 0; calls++) {
    CHECK(calls < 300);
    seen[call_echo(reader, "warm-up")]++;
  }
  printf("warm-up: all %d servers answered after %d calls\n", N_SERVERS, calls);

  /* 2. Blocking calls from several threads at once. */
  for (i = 0; i < N_THREADS; i++) {
    memset(&workers[i], 0, sizeof workers[i]);
    workers[i].ch = ch;
    workers[i].id = i;
    CHECK(pthread_create(&threads[i], NULL, blocking_calls, &workers[i]) == 0);
  }
  for (i = 0; i < N_THREADS; i++) {
    CHECK(pthread_join(threads[i], NULL) == 0);
    for (j = 0; j < N_SERVERS; j++) total[j] += workers[i].hits[j];
  }
  printf("blocking: %d calls from %d threads:", N_THREADS * CALLS_PER_THREAD, N_THREADS);
  for (j = 0; j < N_SERVERS; j++) printf(" %d=%d", servers.ports[j], total[j]);
  printf("\n");
  for (j = 0; j < N_SERVERS; j++) CHECK(total[j] == N_THREADS * CALLS_PER_THREAD / N_SERVERS);

  /* 3. Calls with a completion callback. */
  completions_init(&c);
  for (i = 0; i < N_ASYNC; i++) {
    char request[32];
    snprintf(request, sizeof request, "async %d", i);
    OK(sy_call_unary_start(ch, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"),
                           (const uint8_t *)request, strlen(request),
                           &(sy_call_options){.timeout_ms = 5000, .has_timeout = true,
                                              .wait_for_ready = true},
                           on_done, &c, NULL));
  }
  wait_done(&c, N_ASYNC);
  CHECK(c.ok == N_ASYNC);
  CHECK(c.hits[0] + c.hits[1] + c.hits[2] == N_ASYNC);
  printf("async: %d completions:", N_ASYNC);
  for (j = 0; j < N_SERVERS; j++) printf(" %d=%d", servers.ports[j], c.hits[j]);
  printf("\n");

  /* 4. Failures and their gRPC codes. */
  printf("unknown method:\n");
  expect_rpc_error(sy_call_unary(reader, "/echo.Echo/NoSuchMethod",
                                 strlen("/echo.Echo/NoSuchMethod"), NULL, 0,
                                 &(sy_call_options){.timeout_ms = 5000, .has_timeout = true,
                                                    .wait_for_ready = true},
                                 &resp),
                   12 /* UNIMPLEMENTED */);
  CHECK(resp == NULL);
  OK(sy_call_unary_start(ch, "/echo.Echo/NoSuchMethod", strlen("/echo.Echo/NoSuchMethod"), NULL, 0,
                         &(sy_call_options){.timeout_ms = 5000, .has_timeout = true,
                                            .wait_for_ready = true},
                         on_done, &c, NULL));
  wait_done(&c, N_ASYNC + 1);
  CHECK(c.last_status == SY_RPC_FAILED && c.last_code == 12);
  printf("  -> async: status %s, code %u, message \"%s\"\n", sy_status_str(c.last_status),
         (unsigned)c.last_code, c.last_message);

  /* What the server sent with a failed call's status (a grpcio server's
   * rich error: google.rpc.Status bytes, and metadata), as gRPC's richer
   * error model carries it. */
  printf("rich error:\n");
  expect_rpc_error(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"),
                                 (const uint8_t *)"rich-error", strlen("rich-error"),
                                 &(sy_call_options){.timeout_ms = 5000, .has_timeout = true,
                                                    .wait_for_ready = true},
                                 &resp),
                   9 /* FAILED_PRECONDITION */);
  {
    static const uint8_t want[] = {8, 9, 0x12, 3, 'w', 'h', 'y'};
    uint8_t details[64];
    size_t size = 0;
    char message[64];
    /* The server's own message (gRPC's details()), no prefix. */
    OK(sy_last_call_message(NULL, 0, &size)); /* sizing */
    CHECK(size == strlen("rich error"));
    OK(sy_last_call_message((uint8_t *)message, sizeof message, &size));
    CHECK(size == strlen("rich error") && memcmp(message, "rich error", size) == 0);
    CHECK_STATUS(sy_last_call_message(NULL, 0, NULL), SY_NULL_PARAMETER);
    OK(sy_last_call_details(NULL, 0, &size)); /* sizing */
    CHECK(size == sizeof want);
    OK(sy_last_call_details(details, sizeof details, &size));
    CHECK(size == sizeof want && memcmp(details, want, size) == 0);
    OK(sy_last_call_trailer("X-Why", 0, details, sizeof details, &size));
    CHECK(size == 7 && memcmp(details, "because", 7) == 0);
    CHECK_STATUS(sy_last_call_trailer("x-why", 1, details, sizeof details, &size), SY_NOT_FOUND);
    /* The details stay in the trailers too (as gRPC-Go's metadata keeps
     * them), as their base64 text; grpc-status and grpc-message never. */
    OK(sy_last_call_trailer("grpc-status-details-bin", 0, details, sizeof details, &size));
    CHECK(size > 0);
    CHECK_STATUS(sy_last_call_trailer("grpc-status", 0, details, sizeof details, &size),
                 SY_NOT_FOUND);
    CHECK_STATUS(sy_last_call_trailer("grpc-message", 0, details, sizeof details, &size),
                 SY_NOT_FOUND);
    CHECK_STATUS(sy_last_call_details(details, sizeof details, NULL), SY_NULL_PARAMETER);
    CHECK_STATUS(sy_last_call_details(NULL, 4, &size), SY_NULL_PARAMETER);
    /* Every entry, in order: x-why among them, no transport field. */
    {
      char key[64];
      size_t key_size = 0, i, found = 0;
      for (i = 0; sy_last_call_trailer_at(i, key, sizeof key, &key_size, details, sizeof details,
                                          &size) == SY_OK;
           i++) {
        CHECK(strcmp(key, "grpc-status") != 0 && strcmp(key, "grpc-message") != 0 &&
              strcmp(key, "grpc-encoding") != 0 && key_size == strlen(key));
        if (strcmp(key, "x-why") == 0) found++;
      }
      CHECK(found == 1);
      CHECK_STATUS(sy_last_call_trailer_at(0, key, sizeof key, NULL, details, sizeof details, &size),
                   SY_NULL_PARAMETER);
    }
    /* The lookups' own errors leave the call's record as it was. */
    OK(sy_last_call_details(details, 2, &size));
    CHECK(size == sizeof want && details[0] == 8 && details[1] == 9);
    printf("  -> details: %zu bytes, x-why: because\n", size);
  }

  printf("deadline (50 ms) shorter than the server's delay (2 s):\n");
  expect_rpc_error(sy_call_unary(reader, "/echo.Echo/Delay", strlen("/echo.Echo/Delay"),
                                 (const uint8_t *)"2000", 4,
                                 &(sy_call_options){.timeout_ms = 50, .has_timeout = true,
                                                    .wait_for_ready = true},
                                 &resp),
                   4 /* DEADLINE_EXCEEDED */);
  /* The connection is fine afterwards. */
  (void)call_echo(reader, "after the deadline");

  /* A timeout of 0 (SY_NO_WAIT) is a deadline already passed, as in gRPC
     and as for sy_pick: the call fails without being sent. */
  printf("timeout SY_NO_WAIT (0):\n");
  expect_rpc_error(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                                 &(sy_call_options){.has_timeout = true}, &resp),
                   4 /* DEADLINE_EXCEEDED */);
  CHECK(resp == NULL);
  OK(sy_call_unary_start(ch, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                         &(sy_call_options){.has_timeout = true, .wait_for_ready = true}, on_done,
                         &c, NULL));
  wait_done(&c, N_ASYNC + 2);
  CHECK(c.last_status == SY_RPC_FAILED && c.last_code == 4);

  {
    sy_channel *dead = NULL;
    sy_reader *dr = NULL;
    char dead_target[64];
    snprintf(dead_target, sizeof dead_target, "127.0.0.1:%d", dead_port());
    OK(sy_channel_new_with_options(rt, dead_target, NULL, opts, NULL, NULL, NULL, NULL, &dead));
    OK(sy_reader_new(dead, &dr));
    printf("nobody listening at %s, fail-fast:\n", dead_target);
    expect_rpc_error(sy_call_unary(dr, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                                   &(sy_call_options){.timeout_ms = 5000, .has_timeout = true},
                                   &resp),
                     14 /* UNAVAILABLE */);
    printf("nobody listening, wait-for-ready with a 200 ms deadline:\n");
    expect_rpc_error(sy_call_unary(dr, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                                   &(sy_call_options){.timeout_ms = 200, .has_timeout = true,
                                                      .wait_for_ready = true},
                                   &resp),
                     4 /* DEADLINE_EXCEEDED */);
    sy_reader_free(dr);
    sy_channel_free(dead);
  }

  printf("metadata HTTP/2 cannot carry is refused before anything is sent:\n");
  {
    sy_metadata bad[2];
    uint64_t id = 7;
    bad[0].key = "x-fine";
    bad[0].value = "yes";
    bad[1].key = "transfer-encoding";
    bad[1].value = "chunked";
    CHECK_STATUS(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                               &(sy_call_options){.timeout_ms = 5000, .has_timeout = true,
                                                  .wait_for_ready = true, .metadata = bad,
                                                  .metadata_len = 2},
                               &resp),
                 SY_INVALID_ARGUMENT);
    CHECK(resp == NULL);
    bad[1].key = "Connection";
    bad[1].value = "close";
    CHECK_STATUS(sy_call_unary_start(ch, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                                     &(sy_call_options){.timeout_ms = 5000, .has_timeout = true,
                                                        .wait_for_ready = true, .metadata = bad,
                                                        .metadata_len = 2},
                                     on_done, &c, &id),
                 SY_INVALID_ARGUMENT);
    CHECK(id == 7); /* written on success only */
    {
      char err[256];
      sy_last_error(err, sizeof err);
      printf("  -> %s\n", err);
    }
  }

  /* 5. Started calls on the event loop. */
  started_calls(rt, ch, opts);

  /* 6. Close with calls in flight (the server holds them for 30 s): they end
   * with SY_CLOSED, and every callback has run when close returns. */
  printf("close with %d calls in flight:\n", N_INFLIGHT);
  c.done = 0;
  for (i = 0; i < N_INFLIGHT; i++)
    OK(sy_call_unary_start(ch, "/echo.Echo/Delay", strlen("/echo.Echo/Delay"),
                           (const uint8_t *)"30000", 5, &(sy_call_options){.wait_for_ready = true},
                           on_done, &c, NULL));
  sleep_ms(200); /* let them reach the servers */
  OK(sy_channel_close(ch));
  pthread_mutex_lock(&c.mu);
  CHECK(c.done == N_INFLIGHT);
  CHECK(c.closed == N_INFLIGHT);
  printf("  -> all %d completed: status %s, code %u, message \"%s\"\n", c.done,
         sy_status_str(c.last_status), (unsigned)c.last_code, c.last_message);
  pthread_mutex_unlock(&c.mu);
  pthread_mutex_lock(&slow.mu);
  CHECK(slow.done == 1 && slow.closed == 1);
  pthread_mutex_unlock(&slow.mu);
  completions_destroy(&slow);
  CHECK_STATUS(sy_call_unary_start(ch, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                                   &(sy_call_options){.wait_for_ready = true}, on_done, &c, NULL),
               SY_CLOSED);
  CHECK_STATUS(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), NULL, 0,
                             &(sy_call_options){.wait_for_ready = true}, &resp),
               SY_CLOSED);

  sy_reader_free(reader);
  sy_channel_free(ch);
  sy_channel_options_free(opts);
  sy_runtime_free(rt);
  completions_destroy(&c);
  echo_server_stop(&servers);
  printf("unary_call: ok\n");
  return 0;
}
