#include <stdio.h>
#include <switchyard.h>
int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: %s ipv4:HOST:PORT,HOST:PORT,...\n", argv[0]); return 2; }
  const char *config = "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";
  sy_call_options call = {.timeout_ms = 5000, .has_timeout = true}; /* a deadline on each call */
  sy_runtime *rt = NULL; sy_channel *ch = NULL; sy_reader *rd = NULL; /* a reader per RPC thread */
  int ok = sy_runtime_new(&rt) == SY_OK &&
           sy_channel_new_insecure(rt, argv[1], config, &ch) == SY_OK && /* TLS: _new_simple */
           sy_reader_new(ch, &rd) == SY_OK;
  for (int i = 0; ok && i < 10; i++) {
    sy_buffer *resp = NULL;
    ok = sy_call_unary(rd, "/echo.Echo/Unary", 16, (const uint8_t *)"hi", 2, &call, &resp) == SY_OK;
    if (ok) printf("%.*s\n", (int)sy_buffer_len(resp), (const char *)sy_buffer_data(resp));
    sy_buffer_free(resp);
  }
  if (!ok) { char err[256]; sy_last_error(err, sizeof err); fprintf(stderr, "%s\n", err); }
  sy_reader_free(rd); sy_channel_free(ch); sy_runtime_free(rt); /* each takes NULL */
  return ok ? 0 : 1;
}
