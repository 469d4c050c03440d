/* Runs quickstart.c (the README's C quick start, byte for byte: run.sh checks)
 * against three real gRPC echo backends, and checks that its ten calls were
 * spread over all three (round_robin). */
#include "echo_server.h" /* first: common.h sets _POSIX_C_SOURCE */

#include <switchyard.h>

#define main quickstart_main
#include "quickstart.c"
#undef main

int main(void) {
  echo_server servers;
  char target[128];
  char *argv[3];
  char out[4096];
  int saved, fds[2];
  ssize_t n;
  size_t used = 0;
  int i;

  echo_server_start(&servers, 3);
  snprintf(target, sizeof target, "ipv4:127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", servers.ports[0],
           servers.ports[1], servers.ports[2]);
  argv[0] = (char *)"quickstart";
  argv[1] = target;
  argv[2] = NULL;
  /* Its stdout goes to a pipe (ten short lines fit in the pipe's buffer). */
  fflush(stdout);
  CHECK(pipe(fds) == 0);
  saved = dup(1);
  CHECK(saved >= 0 && dup2(fds[1], 1) == 1);
  CHECK(quickstart_main(2, argv) == 0);
  fflush(stdout);
  CHECK(dup2(saved, 1) == 1);
  close(saved);
  close(fds[1]);
  while (used < sizeof out - 1 && (n = read(fds[0], out + used, sizeof out - 1 - used)) > 0)
    used += (size_t)n;
  close(fds[0]);
  out[used] = '\0';
  echo_server_stop(&servers);
  for (i = 0; i < 3; i++) {
    char want[32];
    snprintf(want, sizeof want, "hi|port=%d\n", servers.ports[i]);
    if (strstr(out, want) == NULL) {
      fprintf(stderr, "no call reached backend %d; quickstart printed:\n%s", servers.ports[i], out);
      return 1;
    }
  }
  printf("quickstart: ten calls over three backends\n");
  return 0;
}
