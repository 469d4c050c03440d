/* Shared helpers for the C examples: assertions that survive NDEBUG, and a
 * toy host stack for the external connector that records what the library
 * asks of it so the example can report transport states back. */
#ifndef SY_EXAMPLES_COMMON_H
#define SY_EXAMPLES_COMMON_H

#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "switchyard.h"

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      char err_[512];                                                        \
      sy_last_error(err_, sizeof err_);                                      \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, err_);                                        \
      exit(1);                                                               \
    }                                                                        \
  } while (0)

/* Checks a call's status. */
#define OK(call) CHECK_STATUS(call, SY_OK)
#define CHECK_STATUS(call, want)                                              \
  do {                                                                        \
    sy_status got_ = (call);                                                  \
    if (got_ != (sy_status)(want)) {                                          \
      char err_[512];                                                         \
      sy_last_error(err_, sizeof err_);                                       \
      fprintf(stderr, "%s:%d: %s returned %s, want %s (last error: %s)\n",    \
              __FILE__, __LINE__, #call, sy_status_str(got_),                 \
              sy_status_str(want), err_);                                     \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

static inline void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

/* ---- A toy host stack --------------------------------------------------- */

#define HOST_MAX 64

typedef struct host {
  pthread_mutex_t mu;
  int connects;
  int shutdowns;
  uint64_t connect_ids[HOST_MAX];
  char connect_addrs[HOST_MAX][64];
} host;

static inline void host_init(host *h) {
  memset(h, 0, sizeof *h);
  pthread_mutex_init(&h->mu, NULL);
}

static inline void host_destroy(host *h) { pthread_mutex_destroy(&h->mu); }

/* Loop thread: the library wants a connection for this subchannel. */
static inline void host_connect(void *ctx, uint64_t id, const char *address,
                         size_t address_len, void *user_data) {
  host *h = (host *)ctx;
  (void)user_data;
  pthread_mutex_lock(&h->mu);
  if (h->connects < HOST_MAX) {
    h->connect_ids[h->connects] = id;
    snprintf(h->connect_addrs[h->connects], 64, "%.*s", (int)address_len,
             address);
    h->connects++;
  }
  pthread_mutex_unlock(&h->mu);
}

static inline void host_shutdown(void *ctx, uint64_t id, const char *address,
                          size_t address_len, void *user_data) {
  host *h = (host *)ctx;
  (void)id;
  (void)address;
  (void)address_len;
  (void)user_data;
  pthread_mutex_lock(&h->mu);
  h->shutdowns++;
  pthread_mutex_unlock(&h->mu);
}

static inline sy_host_transport host_transport(host *h) {
  sy_host_transport t;
  memset(&t, 0, sizeof t);
  t.ctx = h;
  t.connect = host_connect;
  t.shutdown = host_shutdown;
  return t;
}

/* Waits (bounded) until the library asked for `n` connections. */
static inline void host_wait_connects(host *h, int n) {
  int i;
  for (i = 0; i < 500; i++) {
    int c;
    pthread_mutex_lock(&h->mu);
    c = h->connects;
    pthread_mutex_unlock(&h->mu);
    if (c >= n) return;
    sleep_ms(10);
  }
  fprintf(stderr, "timed out waiting for %d connects\n", n);
  exit(1);
}

/* The subchannel id the library asked to connect for `addr`. */
static inline uint64_t host_id(host *h, const char *addr) {
  int i;
  uint64_t id = 0;
  int found = 0;
  pthread_mutex_lock(&h->mu);
  for (i = 0; i < h->connects; i++) {
    if (strcmp(h->connect_addrs[i], addr) == 0) {
      id = h->connect_ids[i];
      found = 1;
    }
  }
  pthread_mutex_unlock(&h->mu);
  CHECK(found);
  return id;
}

/* ---- Address user data with a release counter ---------------------------- */

typedef struct backend {
  char name[32];
  int *released; /* incremented by the release callback */
} backend;

static pthread_mutex_t release_mu = PTHREAD_MUTEX_INITIALIZER;

/* Any thread: the library is done with this backend. */
static inline void release_backend(void *user_data) {
  backend *b = (backend *)user_data;
  pthread_mutex_lock(&release_mu);
  (*b->released)++;
  pthread_mutex_unlock(&release_mu);
  free(b);
}

static inline backend *new_backend(const char *name, int *released) {
  backend *b = (backend *)calloc(1, sizeof *b);
  CHECK(b != NULL);
  snprintf(b->name, sizeof b->name, "%s", name);
  b->released = released;
  return b;
}

static inline int released_count(const int *released) {
  int n;
  pthread_mutex_lock(&release_mu);
  n = *released;
  pthread_mutex_unlock(&release_mu);
  return n;
}

#define RR_CONFIG "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}"

#endif
