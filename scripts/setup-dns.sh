#!/usr/bin/env bash
# Installs dnsmasq, the real DNS server the dns resolver's tests
# (tests/managed/dns.rs) start on 127.0.0.1. Only the binary (dnsmasq-base):
# no system service is enabled or started. Idempotent.
set -euo pipefail
for d in /usr/sbin /usr/bin /sbin; do
    if [ -x "$d/dnsmasq" ]; then
        echo "dnsmasq present: $d/dnsmasq"
        exit 0
    fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null
else
    echo "scripts/setup-dns.sh: dnsmasq not found; install it as root: apt-get install -y dnsmasq-base" >&2
    exit 1
fi
