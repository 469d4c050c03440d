/* A round_robin channel to three plaintext gRPC backends, ten calls. Usage:
 *   quickstart ipv4:127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053 */
#include <stdio.h>
#include <string.h>
#include <switchyard.h>

int main(int argc, char **argv) {
  sy_runtime *rt = NULL;
  sy_channel_options *opts = NULL;
  sy_channel *ch = NULL;
  sy_reader *reader = NULL; /* one per RPC thread */
  sy_call_options call = {0}; /* = {0}: gRPC's defaults (no deadline, fail fast) */
  const char *method = "/echo.Echo/Unary";
  char err[256];
  int ok = argc == 2 && sy_runtime_new(&rt) == SY_OK &&
           sy_channel_options_new_insecure(&opts) == SY_OK && /* TLS: sy_channel_options_new_tls */
           sy_channel_new_simple(rt, argv[1], "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}",
                                 opts, &ch) == SY_OK &&
           sy_reader_new(ch, &reader) == SY_OK;
  sy_channel_options_free(opts); /* the channel copied them */
  call.timeout_ms = 5000;
  call.has_timeout = true;
  for (int i = 0; ok && i < 10; i++) {
    sy_buffer *resp = NULL;
    ok = sy_call_unary(reader, method, strlen(method), (const uint8_t *)"hi", 2, &call, &resp) ==
         SY_OK;
    if (ok) printf("%.*s\n", (int)sy_buffer_len(resp), (const char *)sy_buffer_data(resp));
    sy_buffer_free(resp);
  }
  if (!ok && sy_last_error(err, sizeof err) > 0) fprintf(stderr, "%s\n", err);
  sy_reader_free(reader); /* every _free accepts NULL */
  sy_channel_free(ch);
  sy_runtime_free(rt);
  return ok ? 0 : 1;
}
