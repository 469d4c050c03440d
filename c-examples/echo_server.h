/* Starts real gRPC servers for the examples that call one: the project's
 * grpcio echo server (interop/server.py, gRPC C-core underneath), in a child
 * process. Its stdin is a pipe we hold: closing it stops the server.
 *
 * Where to find it (the Makefile sets both):
 *   SY_INTEROP_PYTHON  the interop virtualenv's python (bash interop/setup.sh
 *                      creates it); default ../target/interop-venv/bin/python
 *   SY_INTEROP_SERVER  interop/server.py; default ../interop/server.py */
#ifndef SY_EXAMPLES_ECHO_SERVER_H
#define SY_EXAMPLES_ECHO_SERVER_H

#include "common.h" /* first: it sets _POSIX_C_SOURCE */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define ECHO_MAX 8

/* A socket of `type` (SOCK_STREAM, SOCK_DGRAM) bound to 127.0.0.1 on a
 * port the kernel picks, written to *port. */
static inline int loopback_socket(int type, int *port) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, type, 0);
  CHECK(fd >= 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
  *port = ntohs(a.sin_port);
  return fd;
}

/* A TCP port on 127.0.0.1 nobody listens on (it was free a moment ago):
 * connections to it are refused. */
static inline int dead_port(void) {
  int port;
  close(loopback_socket(SOCK_STREAM, &port));
  return port;
}

typedef struct echo_server {
  pid_t pid;
  int stdin_fd; /* ours to close: the server exits */
  int count;
  int ports[ECHO_MAX];
} echo_server;

static inline const char *env_or(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return v != NULL && v[0] != '\0' ? v : fallback;
}

/* Starts `count` servers, passing server.py `extra` arguments too (NULL or
 * a NULL-terminated list of at most 4); returns once all of them listen. */
static inline void echo_server_start_with(echo_server *s, int count, const char *const *extra) {
  const char *python = env_or("SY_INTEROP_PYTHON", "../target/interop-venv/bin/python");
  const char *script = env_or("SY_INTEROP_SERVER", "../interop/server.py");
  char count_arg[16];
  char *argv[9];
  int in[2], out[2];
  posix_spawn_file_actions_t fa;
  FILE *f;
  char line[256];
  char *p;

  CHECK(count > 0 && count <= ECHO_MAX);
  if (access(python, X_OK) != 0) {
    fprintf(stderr, "%s not found: run `bash interop/setup.sh` first (or set SY_INTEROP_PYTHON)\n",
            python);
    exit(1);
  }
  snprintf(count_arg, sizeof count_arg, "%d", count);
  argv[0] = (char *)python;
  argv[1] = (char *)script;
  argv[2] = (char *)"--count";
  argv[3] = count_arg;
  argv[4] = NULL;
  for (int a = 0; extra != NULL && extra[a] != NULL; a++) {
    CHECK(a < 4);
    argv[4 + a] = (char *)extra[a];
    argv[5 + a] = NULL;
  }
  CHECK(pipe(in) == 0 && pipe(out) == 0);
  /* Our ends must not leak into the child (it would never see EOF). */
  CHECK(fcntl(in[1], F_SETFD, FD_CLOEXEC) == 0 && fcntl(out[0], F_SETFD, FD_CLOEXEC) == 0);
  CHECK(posix_spawn_file_actions_init(&fa) == 0);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  if (getenv("SY_VERBOSE") == NULL)
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclose(&fa, in[0]);
  posix_spawn_file_actions_addclose(&fa, out[1]);
  CHECK(posix_spawn(&s->pid, python, &fa, NULL, argv, environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  s->stdin_fd = in[1];

  /* "READY <port> <port> ..." once every listener is bound. */
  f = fdopen(out[0], "r");
  CHECK(f != NULL);
  CHECK(fgets(line, sizeof line, f) != NULL);
  fclose(f);
  CHECK(strncmp(line, "READY ", 6) == 0);
  s->count = 0;
  p = line + 6;
  while (s->count < count) {
    char *end;
    long port = strtol(p, &end, 10);
    CHECK(end != p && port > 0 && port < 65536);
    s->ports[s->count++] = (int)port;
    p = end;
  }
}

/* Starts `count` plain echo servers; returns once all of them listen. */
static inline void echo_server_start(echo_server *s, int count) {
  echo_server_start_with(s, count, NULL);
}

/* Closes its stdin (it stops its servers and exits) and reaps it. */
static inline void echo_server_stop(echo_server *s) {
  int status = 0;
  int i;
  close(s->stdin_fd);
  for (i = 0; i < 500; i++) {
    pid_t r = waitpid(s->pid, &status, WNOHANG);
    if (r == s->pid) return;
    sleep_ms(10);
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, &status, 0);
}

#endif
