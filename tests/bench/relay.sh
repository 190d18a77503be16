#!/usr/bin/env bash
# Relay benchmark (issue 5): postroomd against a private, default-durability
# Postfix on the same machine, both relaying every message to smtp-sink. A
# benchmark, not a test: ctest does not run it.
#
# What it measures, all on loopback (127.0.0.1) only:
#   smtp-source (from the postfix package) submits MSGS messages of 5 KiB
#   (-l 5120, as tests/bench/smtp.sh) from sender@example.net to
#   rcpt@sink.test over SESSIONS parallel sessions into the server's MX
#   port, the client being in the server's relay network (postroomd's
#   [smtp] relay_networks, Postfix's mynetworks). Each server relays
#   everything to one smtp-sink on 127.0.0.1 (postroomd: [outbound]
#   smarthost with smarthost_tls = none; Postfix: relayhost, TLS off), with
#   the same outbound concurrency, OUT_CONNECTIONS (postroomd:
#   max_connections and max_connections_per_destination; Postfix:
#   default_ and smtp_destination_concurrency_limit).
#   1. End-to-end rate = messages the sink received / (the time the first
#      submission started -> the time the sink's count reached all of them),
#      the count read from smtp-sink -c's running "mesg=N" every 10 ms.
#   2. Server CPU per relayed message: as in smtp.sh, utime+stime of the
#      process tree (postroomd; Postfix's master and all its children, the
#      exited ones through the master's cutime+cstime), from just before
#      the submission until the server's queue is empty again.
#   Every message must reach the sink exactly once (a bounce to the sender
#   would reach it too, as an extra message) and each queue must end empty
#   with nothing failed; anything else is reported as a problem.
#
# Both servers get the same setup otherwise: no DNS (postroomd's resolver
# points at a closed loopback port; Postfix has DNS off and a bracketed
# relayhost), no TLS, no client restrictions or rate limits, their default
# durability (queue files fsync'ed), data on BENCH_TMPDIR. They run one
# after the other, postroomd first; the other one is stopped meanwhile.
#
# Each round also reports the CPU of the client and of the sink, and how
# many cores everything else on the machine kept busy meanwhile ("other"):
# the numbers are only as good as the machine is quiet.
#
# Usage (as root, on Debian/Ubuntu):  tests/bench/relay.sh
#   MSGS=10000            messages per server
#   SESSIONS=10           parallel submission sessions
#   OUT_CONNECTIONS=10    outbound connections to the sink, both servers
#   POSTROOM_BUILD=build/release   where postroomd is (relative to the
#                         source root, or absolute); built there with
#                         cmake -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
#                         if service/postroomd is missing, else used as is
#   BENCH_TMPDIR=/var/tmp where the temp directory goes (use a real disk,
#                         not tmpfs, or fsync costs nothing)
#   KEEP_TMP=1            keep the temp directory (logs, queues) afterwards
#   ROUND_TIMEOUT=1800    seconds, for the submission and for the relaying
# Everything started here is stopped by PID, and the temp directory removed,
# on every exit (trap).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MSGS=${MSGS:-10000}
SESSIONS=${SESSIONS:-10}
OUT_CONNECTIONS=${OUT_CONNECTIONS:-10}
MSG_LEN=5120
SENDER=sender@example.net
RCPT=rcpt@sink.test                 # outside both servers' domains: relayed
ROUND_TIMEOUT=${ROUND_TIMEOUT:-1800}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
HOST=127.0.0.1                      # the only address used, ever
PY=/usr/bin/python3; [ -x $PY ] || PY=python3   # not a pyenv shim: it costs CPU per call
HELPER="$HERE/bench_helper.py"
h() { "$PY" "$HELPER" "$@"; }
H=("$PY" "$HELPER")   # for background runs: $! must be the helper itself, not a subshell
. "$HERE/lib.sh"   # say warn die stop_pid wait_port install_missing postfix_start postfix_stop
PROBLEMS=()

BUILD=${POSTROOM_BUILD:-build/release}
[[ $BUILD = /* ]] || BUILD=$ROOT/$BUILD
POSTROOMD=$BUILD/service/postroomd

# ---------------------------------------------------------------- cleanup
T=""; PR_PID=""; PF_MASTER=""; PF_CONF=""; SINK_PID=""; CLIENT_PID=""; WAIT_PID=""
cleanup() {
  trap - EXIT INT TERM
  stop_pid "$CLIENT_PID" 10
  stop_pid "$WAIT_PID" 5
  stop_pid "$PR_PID" 70          # postroomd's default shutdown_grace is 60s
  postfix_stop
  stop_pid "$SINK_PID" 10
  if [ -n "$T" ] && [ -d "$T" ]; then
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "run as root (Postfix needs it)"
for v in MSGS SESSIONS OUT_CONNECTIONS ROUND_TIMEOUT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive number"
done
[ "$OUT_CONNECTIONS" -le 1000 ] || die "OUT_CONNECTIONS must be <= 1000 (postroomd's limit)"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg); NCPU=$(nproc)

# ---------------------------------------------------------------- packages
install_missing postfix python3 || die "package installation failed"
if [ ! -x "$POSTROOMD" ]; then
  install_missing build-essential cmake ninja-build pkg-config libapr1-dev libaprutil1-dev \
    libsqlite3-dev libssl-dev libinih-dev libldap-dev libc-ares-dev libcmocka-dev ||
    die "package installation failed"
fi

T=$(mktemp -d "$BENCH_TMPDIR/postroom-relay.XXXXXX") || die "mktemp failed"
T=$(cd "$T" && pwd)   # absolute: postfix -c fails silently on a relative path
chmod 755 "$T"        # the postfix user must be able to traverse it
say "temp directory $T ($(df -T "$T" | awk 'NR==2 {print $2}'))"

if [ ! -x "$POSTROOMD" ]; then
  say "building postroomd in $BUILD"
  { cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$T/build.log" 2>&1 &&
    cmake --build "$BUILD" --target postroomd >>"$T/build.log" 2>&1; } || {
    tail -15 "$T/build.log" | sed 's/^/   | /' >&2; die "postroomd does not build"; }
fi

PORTS=" "
newport() { # a free port on HOST not handed out before in this run
  local p
  while :; do p=$(h freeport); case $PORTS in *" $p "*) continue ;; esac; PORTS="$PORTS$p "; echo "$p"; return; done
}
# Long steps run in the background while the script waits, so a signal's
# trap runs at once; cleanup stops WAIT_PID. Give it a program, not a shell
# function (a function would run in a subshell, which is all a kill stops).
bgwait() { "$@" & WAIT_PID=$!; wait "$WAIT_PID"; local rc=$?; WAIT_PID=""; return "$rc"; }

# ---------------------------------------------------------------- the sink
SINK_PORT=$(newport); SINK_OUT=$T/sink.out
# -c: running counters (the last "mesg=N" is the number of messages received)
smtp-sink -u nobody -c -h sink.bench.test "$HOST:$SINK_PORT" 256 >"$SINK_OUT" 2>"$T/sink.err" &
SINK_PID=$!
wait_port "$SINK_PORT" 30 && kill -0 "$SINK_PID" 2>/dev/null || { cat "$T/sink.err" >&2; die "smtp-sink did not start"; }
say "smtp-sink $SINK_PID on $HOST:$SINK_PORT"
sink_count() { h sinkcount "$SINK_OUT"; }

# verify NAME PORT: one message submitted must reach the sink within 60s
verify() {
  local base; base=$(sink_count)
  if ! smtp-source -m 1 -l "$MSG_LEN" -f "$SENDER" -t "$RCPT" "$HOST:$2" >"$T/verify-$1.log" 2>&1; then
    warn "$1 did not accept a test message: $(head -c 300 "$T/verify-$1.log")"; return 1
  fi
  if ! bgwait "${H[@]}" waitsink "$SINK_OUT" $((base + 1)) 60 >/dev/null; then
    warn "$1 accepted a test message but did not relay it to the sink in 60s"; return 1
  fi
}

# ---------------------------------------------------------------- postroomd
PR=$T/postroom; PR_CONF=$PR/postroom.conf; PR_DB=$PR/data/store.db
start_postroomd() {
  "$POSTROOMD" -c "$PR_CONF" -f >>"$PR/stderr" 2>&1 &
  PR_PID=$!
  wait_port "$PR_PORT" 30 && kill -0 "$PR_PID" 2>/dev/null
}
setup_postroom() {
  mkdir -p "$PR"
  PR_PORT=$(newport)
  cat >"$PR_CONF" <<EOF
[server]
hostname = relay.bench.example.test
domains = bench.example.test
data_dir = $PR/data
log = $PR/log
log_level = warning
limit_exempt_networks = 127.0.0.0/8
[smtp]
listen = $HOST:$PR_PORT
submission =
smtps =
relay_networks = 127.0.0.0/8
[pop3]
listen =
pop3s =
[outbound]
smarthost = $HOST:$SINK_PORT
smarthost_tls = none
max_connections = $OUT_CONNECTIONS
max_connections_per_destination = $OUT_CONNECTIONS
; nothing is looked up (the smarthost is an address); if anything were, it
; would stay on loopback: nobody answers there
dns_servers = $HOST:$(newport)
EOF
  say "starting postroomd ($POSTROOMD) on $HOST:$PR_PORT"
  if ! start_postroomd; then
    warn "postroomd did not start; its stderr:"; tail -15 "$PR/stderr" | sed 's/^/   | /' >&2
    return 1
  fi
  say "verifying postroomd relays a message to the sink"
  verify postroomd "$PR_PORT"
}

# ---------------------------------------------------------------- Postfix
PF=$T/postfix; PF_CONF=$PF/etc; PF_Q=$PF/spool
setup_postfix() {
  PF_PORT=$(newport)
  mkdir -p "$PF_CONF" "$PF_Q" "$PF/data"
  chown postfix: "$PF/data"
  local mcf=/etc/postfix/master.cf
  [ -f $mcf ] || mcf=/usr/share/postfix/master.cf.dist
  cp "$mcf" "$PF_CONF/master.cf"
  cp /etc/postfix/dynamicmaps.cf "$PF_CONF/" 2>/dev/null || true
  [ -d /etc/postfix/dynamicmaps.cf.d ] && cp -r /etc/postfix/dynamicmaps.cf.d "$PF_CONF/"
  cat >"$PF_CONF/main.cf" <<EOF
# Private Postfix instance for tests/bench/relay.sh: default durability,
# loopback only, no DNS, no client restrictions, no local delivery; relays
# everything from mynetworks to the smtp-sink at $HOST:$SINK_PORT.
compatibility_level = 3.6
queue_directory = $PF_Q
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.example.test
mydomain = bench.example.test
myorigin = \$myhostname
inet_interfaces = $HOST
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
relayhost = [$HOST]:$SINK_PORT
local_recipient_maps =
alias_maps =
alias_database =
# the same outbound concurrency as postroomd's
default_destination_concurrency_limit = $OUT_CONNECTIONS
smtp_destination_concurrency_limit = $OUT_CONNECTIONS
# no DNS anywhere
smtp_host_lookup = native
lmtp_host_lookup = native
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
# nothing that slows acceptance (durability untouched)
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_recipient_restrictions =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_client_connection_rate_limit = 0
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
in_flow_delay = 0
smtpd_tls_security_level = none
smtp_tls_security_level = none
biff = no
append_dot_mydomain = no
readme_directory = no
maillog_file_prefixes = $T
maillog_file = $PF/maillog
EOF
  # Only the loopback listener on our port, no chroot (nothing to copy into one).
  postconf -c "$PF_CONF" -MX smtp/inet
  postconf -c "$PF_CONF" -M "$HOST:$PF_PORT/inet = $HOST:$PF_PORT inet n - n - 200 smtpd"
  postconf -c "$PF_CONF" -F '*/*/chroot = n'
  postfix -c "$PF_CONF" check >>"$PF/control.log" 2>&1 || true
  say "starting Postfix $(postconf -d -h mail_version) on $HOST:$PF_PORT"
  if ! postfix_start; then
    warn "Postfix did not start:"; tail -15 "$PF/control.log" "$PF/maillog" 2>/dev/null | sed 's/^/   | /' >&2
    return 1
  fi
  say "verifying Postfix relays a message to the sink"
  verify postfix "$PF_PORT" || { tail -8 "$PF/maillog" | sed 's/^/   | /' >&2; return 1; }
  bgwait "${H[@]}" waitqueue "$PF_Q" 30 || { warn "Postfix's queue not empty after the test message"; return 1; }
}

# ---------------------------------------------------------------- a round
declare -A R_ACC R_RELAYED R_ACCWALL R_E2E R_RATE R_CPU R_CPUMSG R_SINK R_CLIENT R_OTHER
run_round() { # name port rootpid -> fills R_*[name]
  local name=$1 port=$2 pid=$3
  local out=$T/round-$name.out err=$T/round-$name.err waitout=$T/round-$name.wait
  local base c0 c1 k0 k1 b0 b1 w0 w1 rc wall client acc got t_end final
  base=$(sink_count)
  sleep 1
  b0=$(h busy); c0=$(h cpu "$pid"); k0=$(h cpu "$SINK_PID")
  rm -f "$T/timing"
  w0=$(date +%s.%N)
  "${H[@]}" run "$T/timing" "$ROUND_TIMEOUT" \
    smtp-source -c -l "$MSG_LEN" -m "$MSGS" -s "$SESSIONS" -f "$SENDER" -t "$RCPT" "$HOST:$port" >"$out" 2>"$err" &
  CLIENT_PID=$!
  "${H[@]}" waitsink "$SINK_OUT" $((base + MSGS)) "$ROUND_TIMEOUT" >"$waitout" &
  WAIT_PID=$!
  wait "$CLIENT_PID"; CLIENT_PID=""   # in the background: traps run at once
  read -r rc wall client <"$T/timing" || { rc=1; wall=0; client=0; }
  acc=$(tr '\r' '\n' <"$out" | grep -E '^[0-9]+$' | tail -1); acc=${acc:-0}
  if [ "$rc" != 0 ]; then
    warn "$name: smtp-source exited $rc after $acc accepted messages: $(head -c 300 "$err" | tr '\n' ' ')"
  elif [ "$acc" != "$MSGS" ]; then
    warn "$name: only $acc of $MSGS messages accepted"
  fi
  if [ "$acc" -lt "$MSGS" ]; then   # wait for what was accepted only
    stop_pid "$WAIT_PID" 5; WAIT_PID=""
    "${H[@]}" waitsink "$SINK_OUT" $((base + acc)) 300 >"$waitout" &
    WAIT_PID=$!
  fi
  wait "$WAIT_PID" || warn "$name: the sink did not receive every accepted message in time"
  WAIT_PID=""
  read -r got t_end <"$waitout" || { got=$(sink_count); t_end=$(date +%s.%N); }
  got=$((got - base))
  # The server's queue must be empty before the second CPU reading.
  if [ "$name" = postfix ]; then
    bgwait "${H[@]}" waitqueue "$PF_Q" 120 || warn "postfix: queue not empty 120s after the last message reached the sink"
  else
    bgwait "${H[@]}" waitprqueue "$PR_DB" 120 || warn "postroomd: queue not empty 120s after the last message reached the sink"
  fi
  sleep 0.5   # let stragglers finish before the second reading
  c1=$(h cpu "$pid"); k1=$(h cpu "$SINK_PID"); b1=$(h busy); w1=$(date +%s.%N)
  kill -0 "$pid" 2>/dev/null || warn "$name died during its round"
  # Exactly once: nothing more may arrive (a duplicate, a bounce to the sender).
  sleep 1
  final=$(( $(sink_count) - base ))
  [ "$final" = "$acc" ] || warn "$name: the sink received $final messages for $acc accepted"
  if [ "$name" = postroomd ]; then
    local failed; read -r _ failed < <(h prqueue "$PR_DB")
    [ "${failed:-0}" = 0 ] || warn "postroomd: $failed recipients failed (log: $PR/log)"
  fi
  R_ACC[$name]=$acc; R_RELAYED[$name]=$got
  R_ACCWALL[$name]=$(awk -v w="$wall" 'BEGIN {printf "%.2f", w}')
  R_E2E[$name]=$(awk -v a="$w0" -v b="$t_end" 'BEGIN {printf "%.2f", b - a}')
  R_RATE[$name]=$(awk -v n="$got" -v a="$w0" -v b="$t_end" 'BEGIN {printf "%.0f", (b > a) ? n / (b - a) : 0}')
  R_CPU[$name]=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", b - a}')
  R_CPUMSG[$name]=$(awk -v n="$got" -v c="${R_CPU[$name]}" 'BEGIN {printf "%.3f", n ? c * 1000 / n : 0}')
  R_SINK[$name]=$(awk -v a="$k0" -v b="$k1" 'BEGIN {printf "%.2f", b - a}')
  R_CLIENT[$name]=$client
  # Everything else the machine did meanwhile, as average cores busy.
  R_OTHER[$name]=$(awk -v a="$b0" -v b="$b1" -v c="${R_CPU[$name]}" -v d="$client" -v k="${R_SINK[$name]}" \
    -v s="$w0" -v e="$w1" 'BEGIN {o = (b - a) - c - d - k; if (o < 0) o = 0; printf "%.2f", (e > s) ? o / (e - s) : 0}')
  printf '   %-9s %6s accepted in %6ss, %6s at the sink %6ss after the start = %5s msg/s end to end; server CPU %6ss = %s ms/msg; sink %ss, client %ss, other jobs %s cores\n' \
    "$name" "$acc" "${R_ACCWALL[$name]}" "$got" "${R_E2E[$name]}" "${R_RATE[$name]}" "${R_CPU[$name]}" \
    "${R_CPUMSG[$name]}" "${R_SINK[$name]}" "$client" "${R_OTHER[$name]}"
}

# ---------------------------------------------------------------- main
setup_postroom || die "postroomd does not relay to the sink (temp directory: KEEP_TMP=1 keeps its log)"
setup_postfix || die "the Postfix instance does not relay to the sink; nothing to compare against"
postfix_stop   # one server at a time

say "relaying: $MSGS messages of $MSG_LEN bytes to $RCPT, $SESSIONS submission sessions, $OUT_CONNECTIONS outbound connections"
run_round postroomd "$PR_PORT" "$PR_PID"
stop_pid "$PR_PID" 70; PR_PID=""
postfix_start || die "Postfix did not restart"
run_round postfix "$PF_PORT" "$PF_MASTER"
postfix_stop

# ---------------------------------------------------------------- summary
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
echo
echo "==================== relay benchmark summary ===================="
echo "machine: $NCPU cores, $(uname -r); Postfix $(postconf -d -h mail_version); postroomd $POSTROOMD"
echo "messages: $MSGS per server, $MSG_LEN-byte body, $SENDER -> $RCPT, $SESSIONS submission sessions (smtp-source),"
echo "          relayed to smtp-sink on $HOST over at most $OUT_CONNECTIONS connections; default durability on both"
echo "msg/s = messages at the sink / (start of submission -> the sink has them all): end to end"
echo "accept s = smtp-source's wall time; CPU = server process tree utime+stime (incl. reaped children)"
echo "          until its queue was empty; sink s, client s = CPU of smtp-sink and smtp-source;"
echo "other = cores busy with anything else during the round, averaged: other jobs on this shared"
echo "        ${NCPU}-core machine; the numbers are noisy when it is large"
echo "load average at start: $LOAD0; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-9s | %8s | %8s | %8s | %8s | %7s | %7s | %10s | %6s | %8s | %5s\n' server accepted relayed "accept s" "e2e s" "msg/s" "CPU s" "CPU ms/msg" "sink s" "client s" other
printf -- '----------+----------+----------+----------+----------+---------+---------+------------+--------+----------+------\n'
for name in postroomd postfix; do
  [ -n "${R_ACC[$name]:-}" ] || continue
  printf '%-9s | %8s | %8s | %8s | %8s | %7s | %7s | %10s | %6s | %8s | %5s\n' "$name" "${R_ACC[$name]}" "${R_RELAYED[$name]}" \
    "${R_ACCWALL[$name]}" "${R_E2E[$name]}" "${R_RATE[$name]}" "${R_CPU[$name]}" "${R_CPUMSG[$name]}" \
    "${R_SINK[$name]}" "${R_CLIENT[$name]}" "${R_OTHER[$name]}"
done
echo
echo "end-to-end rate postroomd/Postfix = $(ratio "${R_RATE[postroomd]:-0}" "${R_RATE[postfix]:-0}")x" \
  "(postroomd ${R_RATE[postroomd]:-n/a} msg/s, Postfix ${R_RATE[postfix]:-n/a} msg/s)"
echo "CPU per message postroomd/Postfix = $(ratio "${R_CPUMSG[postroomd]:-0}" "${R_CPUMSG[postfix]:-0}")" \
  "(postroomd ${R_CPUMSG[postroomd]:-n/a} ms, Postfix ${R_CPUMSG[postfix]:-n/a} ms)"
if [ ${#PROBLEMS[@]} -gt 0 ]; then
  echo
  echo "problems seen:"
  printf '  - %s\n' "${PROBLEMS[@]}"
  exit 1
fi
exit 0
