/* A `dns:` target through the C header, against a real DNS server and a
 * real gRPC backend, both on 127.0.0.1: dnsmasq (started here on a free port,
 * answering only from its own hosts file) says svc.test is 127.0.0.1, and
 * the channel "dns://127.0.0.1:<dns port>/svc.test:<backend port>" asks it.
 *   1. the channel starts IDLE: nothing is asked of the DNS server before
 *      its first call;
 *   2. calls are served (the name was looked up with that server);
 *   3. with a short idle timeout, the unused channel goes back to IDLE, and
 *      the next call brings it back (and looks the name up again).
 * Needs dnsmasq (apt-get install -y dnsmasq-base; scripts/setup-dns.sh). */
#include "echo_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static const char *dnsmasq_path(void) {
  static const char *paths[] = {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"};
  size_t i;
  for (i = 0; i < sizeof paths / sizeof paths[0]; i++)
    if (access(paths[i], X_OK) == 0) return paths[i];
  fprintf(stderr, "dns_target: dnsmasq is not installed: apt-get install -y dnsmasq-base "
                  "(scripts/setup-dns.sh does)\n");
  exit(1);
}

/* A port free on 127.0.0.1 now (UDP; dnsmasq takes TCP too). */
static int free_port(void) {
  int port;
  close(loopback_socket(SOCK_DGRAM, &port));
  return port;
}

static int tcp_listening(int port) {
  struct sockaddr_in a;
  int ok, fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

/* How many lines of the query log name `what`. */
static int count_in(const char *path, const char *what) {
  char line[512];
  int n = 0;
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  while (fgets(line, sizeof line, f) != NULL)
    if (strstr(line, what) != NULL) n++;
  fclose(f);
  return n;
}

/* The DNS server and its files go with us, however we exit (a failed CHECK
 * exits too): no dnsmasq is left running. */
static pid_t dns_pid;
static char dns_dir[] = "/tmp/sy-dns-XXXXXX";

static void stop_dns(void) {
  char path[64];
  int status;
  if (dns_pid > 0) {
    kill(dns_pid, SIGTERM);
    waitpid(dns_pid, &status, 0);
    dns_pid = 0;
  }
  snprintf(path, sizeof path, "%s/hosts", dns_dir);
  remove(path);
  snprintf(path, sizeof path, "%s/log", dns_dir);
  remove(path);
  rmdir(dns_dir);
}

static void call_ok(sy_reader *reader) {
  sy_buffer *resp = NULL;
  OK(sy_call_unary(reader, "/echo.Echo/Unary", strlen("/echo.Echo/Unary"), (const uint8_t *)"hi", 2,
                   &(sy_call_options){.timeout_ms = 10000, .has_timeout = true,
                                      .wait_for_ready = true},
                   &resp));
  sy_buffer_free(resp);
}

int main(void) {
  echo_server backend;
  char *dir = dns_dir, hosts[128], log[128], arg_hosts[160], arg_log[160];
  char arg_port[32], target[128];
  char *argv[16];
  pid_t dns = 0;
  int i, port = 0, status, lookups;
  uint32_t state;
  sy_runtime *rt = NULL;
  sy_channel_options *opts = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL;
  FILE *f;

  echo_server_start(&backend, 1);
  CHECK(mkdtemp(dir) != NULL);
  CHECK(atexit(stop_dns) == 0);
  snprintf(hosts, sizeof hosts, "%s/hosts", dir);
  snprintf(log, sizeof log, "%s/log", dir);
  f = fopen(hosts, "w");
  CHECK(f != NULL);
  fprintf(f, "127.0.0.1 svc.test\n");
  fclose(f);
  snprintf(arg_hosts, sizeof arg_hosts, "--addn-hosts=%s", hosts);
  snprintf(arg_log, sizeof arg_log, "--log-facility=%s", log);
  /* A free port can be taken between our probe and its bind: a few tries. */
  for (i = 0; i < 5 && dns == 0; i++) {
    int k, waited;
    port = free_port();
    snprintf(arg_port, sizeof arg_port, "--port=%d", port);
    k = 0;
    argv[k++] = (char *)dnsmasq_path();
    argv[k++] = (char *)"--keep-in-foreground";
    argv[k++] = (char *)"--conf-file=/dev/null";
    argv[k++] = (char *)"--no-resolv";
    argv[k++] = (char *)"--no-hosts";
    argv[k++] = (char *)"--local=/test/";
    argv[k++] = (char *)"--listen-address=127.0.0.1";
    argv[k++] = (char *)"--bind-interfaces";
    argv[k++] = arg_port;
    argv[k++] = arg_hosts;
    argv[k++] = (char *)"--pid-file=";
    argv[k++] = (char *)"--log-queries";
    argv[k++] = arg_log;
    argv[k++] = (char *)"--cache-size=0";
    /* As root it would switch to "nobody", who may not read our files. */
    if (getuid() == 0) argv[k++] = (char *)"--user=root";
    argv[k] = NULL;
    CHECK(posix_spawn(&dns, argv[0], NULL, NULL, argv, environ) == 0);
    dns_pid = dns;
    for (waited = 0; waited < 1000 && !tcp_listening(port); waited++) {
      if (waitpid(dns, &status, WNOHANG) == dns) { /* exited: port taken */
        dns = dns_pid = 0;
        break;
      }
      sleep_ms(10);
    }
    if (dns != 0) CHECK(tcp_listening(port));
  }
  CHECK(dns != 0);

  OK(sy_runtime_new(&rt));
  OK(sy_channel_options_new_insecure(&opts));
  OK(sy_channel_options_set_idle_timeout(opts, 200));
  snprintf(target, sizeof target, "dns://127.0.0.1:%d/svc.test:%d", port, backend.ports[0]);
  OK(sy_channel_new_simple(rt, target, NULL, opts, &ch));
  sy_channel_options_free(opts);
  OK(sy_reader_new(ch, &reader));

  /* 1. IDLE, and nothing asked yet. */
  OK(sy_channel_sync(ch));
  OK(sy_channel_state(ch, &state));
  CHECK(state == SY_STATE_IDLE);
  CHECK(count_in(log, "query[A] svc.test") == 0);

  /* 2. Calls: the name is looked up with that server, and served. */
  for (i = 0; i < 5; i++) call_ok(reader);
  /* Once, unless a very slow machine let it go idle between two calls. */
  lookups = count_in(log, "query[A] svc.test");
  CHECK(lookups >= 1);

  /* 3. Unused, it goes IDLE (one to two timeouts later); a call wakes it. */
  for (i = 0; i < 1000; i++) {
    OK(sy_channel_state(ch, &state));
    if (state == SY_STATE_IDLE) break;
    sleep_ms(10);
  }
  CHECK(state == SY_STATE_IDLE);
  call_ok(reader);
  CHECK(count_in(log, "query[A] svc.test") > lookups);

  sy_reader_free(reader);
  sy_channel_free(ch);
  sy_runtime_free(rt);
  stop_dns();
  echo_server_stop(&backend);
  printf("dns_target: ok\n");
  return 0;
}
