#!/usr/bin/env bash
# Postroom's test command: installs what is missing (Debian/Ubuntu, as root),
# builds a normal and an ASan+UBSan build, runs ctest on both, then the same
# with sessions on threads (the path Windows and the BSDs take; ASan+UBSan),
# then runs each libFuzzer harness briefly when clang is available.
#   FUZZ_SECONDS=30 (per harness; 0 skips fuzzing)   JOBS=2
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

PKGS="build-essential cmake ninja-build pkg-config python3 openssl sqlite3 curl swaks fetchmail
      libapr1-dev libaprutil1-dev libsqlite3-dev libssl-dev libinih-dev libldap-dev libcmocka-dev
      libc-ares-dev clang libclang-rt-14-dev slapd ldap-utils dnsmasq-base"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "== installing:$missing"
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

build() { # dir, cmake args...
  local dir=$1; shift
  cmake -S "$ROOT" -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

echo "== normal build"
build build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "== sanitizer build (ASan + UBSan)"
build build/asan -DCMAKE_BUILD_TYPE=Debug -DPOSTROOM_SANITIZE=ON

echo "== tests: normal build"
(cd build/release && ctest -j "$JOBS" --output-on-failure)
echo "== tests: ASan + UBSan build"
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd build/asan && ctest -j "$JOBS" --output-on-failure)
echo "== tests: sessions on threads, not event loops (ASan + UBSan)"
build build/asan-threads -DCMAKE_BUILD_TYPE=Debug -DPOSTROOM_SANITIZE=ON -DPOSTROOM_THREADS=ON
(cd build/asan-threads && ctest -j "$JOBS" --output-on-failure)

if [ "$FUZZ_SECONDS" != 0 ] && command -v clang >/dev/null; then
  echo "== fuzzing ${FUZZ_SECONDS}s per harness"
  CC=clang build build/fuzz -DCMAKE_BUILD_TYPE=Debug -DPOSTROOM_FUZZ=ON
  for f in build/fuzz/tests/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f"); corpus=tests/fuzz/corpus/${name#fuzz_}
    work=build/fuzz/corpus-$name; mkdir -p "$work"
    echo "-- $name"
    # a crash's input goes to the build tree, not the checkout
    "$f" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -artifact_prefix="$work/" \
      "$work" $( [ -d "$corpus" ] && echo "$corpus" ) 2>&1 | tail -3
  done
fi
echo "== all tests passed"
