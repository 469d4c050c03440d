#!/usr/bin/env bash
# Miri and ThreadSanitizer over the tests that exercise picks, publication and
# the loop / RPC-thread protocols. Nightly only and minutes long, so not part
# of scripts/test.sh.
#
#   scripts/sanitizers.sh miri|tsan|all [extra args for the test binaries]
#
# miri: the core's unit tests, the engine tests (channels through the external
#   connector: picks, publication, readers, the mio loop on Miri's epoll and
#   eventfd) and the C ABI crate's Rust tests (picks through the token, a
#   result copied byte for byte as C does), under Stacked Borrows, with
#   strict provenance for the core. Tests that need what Miri cannot do
#   (real sockets, DNS, ring's C and assembly) carry
#   `#[cfg_attr(miri, ignore = "why")]`. The engine tests take most of the
#   time (the random walk over 360 children is kept shorter under Miri).
# tsan: the same tests plus the C ABI crate's, built with
#   -Zsanitizer=thread and a sanitized std (-Zbuild-std), so that std's
#   own synchronization is seen too. No suppressions: a report fails the run.
#
# Both keep their builds apart from the normal ones (Miri under
# <target>/miri by itself, TSan under <target>/tsan): neither evicts the
# regular debug build.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
case "$mode" in
miri | tsan | all) shift ;;
*)
  echo "usage: $0 miri|tsan|all [test binary args]" >&2
  exit 2
  ;;
esac

target="${CARGO_TARGET_DIR:-target}"
host=$(rustc +nightly -vV | sed -n 's/^host: //p')

step() { printf '\n==> %s\n' "$*"; }

# Seconds since the step began, for the report.
timed() {
  local start=$SECONDS
  "$@"
  printf '    (%ss)\n' $((SECONDS - start))
}

run_miri() {
  step "miri: toolchain"
  rustup component add --toolchain nightly miri rust-src
  cargo +nightly miri setup
  # -Zmiri-disable-isolation: a runtime seeds its random source from the
  # wall clock (clock::Rng::from_entropy), which isolation refuses.
  # -Zmiri-strict-provenance for the core: no pointer there is ever made
  # from an integer (the pick token is pointers end to end). Not for the C
  # ABI crate: it hands each address's user data back to C as the integer
  # tag it was stored as (callback.rs `user_data_of`), which is fine with
  # exposed provenance and is what Miri's default (a warning) checks.
  # A MIRIFLAGS of your own replaces both.
  local core="${MIRIFLAGS:--Zmiri-disable-isolation -Zmiri-strict-provenance}"
  local ffi="${MIRIFLAGS:--Zmiri-disable-isolation}"
  step "miri: core unit tests (MIRIFLAGS=$core)"
  timed env MIRIFLAGS="$core" cargo +nightly miri test -p switchyard --lib -- "$@"
  step "miri: engine tests (MIRIFLAGS=$core)"
  timed env MIRIFLAGS="$core" cargo +nightly miri test -p switchyard --test engine -- "$@"
  step "miri: C ABI crate, Rust side (MIRIFLAGS=$ffi)"
  timed env MIRIFLAGS="$ffi" cargo +nightly miri test -p switchyard-ffi --lib -- "$@"
}

run_tsan() {
  step "tsan: toolchain"
  rustup component add --toolchain nightly rust-src
  local flags=(+nightly test -Zbuild-std --target "$host")
  # The sanitizer must be the same for every crate, std included:
  # -Zbuild-std builds std with these flags too.
  export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Zsanitizer=thread"
  export RUSTDOCFLAGS="${RUSTDOCFLAGS:+$RUSTDOCFLAGS }-Zsanitizer=thread"
  export CARGO_TARGET_DIR="$target/tsan"
  # Fail on the first report; halt_on_error keeps the log to the report.
  export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1}"
  step "tsan: core unit tests and engine tests"
  timed cargo "${flags[@]}" -p switchyard --lib --test engine -- "$@"
  step "tsan: C ABI crate"
  timed cargo "${flags[@]}" -p switchyard-ffi --lib -- "$@"
}

case "$mode" in
miri) run_miri "$@" ;;
tsan) run_tsan "$@" ;;
all)
  run_miri "$@"
  run_tsan "$@"
  ;;
esac
