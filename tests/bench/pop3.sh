#!/usr/bin/env bash
# POP3 benchmark: postroomd against a private Dovecot (Debian dovecot-pop3d)
# serving the same messages on the same machine. A benchmark, not a test:
# ctest does not run it.
#
# Setup, all on loopback (127.0.0.1) only:
#   - MSGS_PER_BOX distinct messages of MSG_SIZE bytes (headers + body, CRLF
#     lines, one body line starting with "." so dot stuffing is exercised)
#     are generated once (bench_helper.py genmsgs).
#   - postroomd (its defaults, including log_level = info and the
#     verified-credential cache, except limit_exempt_networks = 127.0.0.0/8:
#     every session comes from 127.0.0.1): BOXES users
#     u0..u<BOXES-1>@example.test; every message is delivered to every user
#     over SMTP (pop3load smtp: one transaction per message and recipient, so
#     no message body is shared between mailboxes). postroomd prepends
#     Return-Path and Received.
#   - Dovecot: each Maildir holds exactly what postroomd serves for that
#     mailbox (fetched over POP3 and checked against the generated messages;
#     bench_helper.py maildir), so both send the same octets, written as
#     Dovecot's own delivery would (LF line ends, ",S=,W=" sizes in the
#     names); users in a passwd-file ({PLAIN} passwords unless DOVECOT_SCHEME
#     says otherwise), all mapped to the system user `mail`; Dovecot's stock
#     process model (a login process and a pop3 process per connection) and
#     logging (info), plaintext login allowed, no TLS, its own
#     base_dir/state_dir/log here.
#   - Before the timed rounds each server serves one untimed download round,
#     so both read from the page cache (and Dovecot has built its indexes and
#     set \Seen, which renames the Maildir files once; postroomd's credential
#     cache holds every user).
#
# What it measures (load client: tests/bench/pop3load.c, built here with
# cc -O2, one thread per client, plain sockets):
#   1. Download: for each CLIENTS value, DL_SESSIONS sessions (default each
#      mailbox twice; at least one per client) shared by that many parallel
#      clients; client k starts with mailbox k. A session downloads a whole
#      mailbox: USER, PASS, STAT, LIST, UIDL, RETR of every message, QUIT
#      (never DELE, so rounds repeat). No mailbox is ever in two sessions at
#      once (RFC 1939 allows the server to lock it; postroomd does), so at
#      most BOXES clients are busy. The client checks STAT = MSGS_PER_BOX,
#      LIST/UIDL counts, RETR octets (without stuffing) = LIST size, CRLF
#      lines, CRLF.CRLF at the end, the close after QUIT; any error fails
#      the round. messages/s and MB/s (10^6 bytes of message octets) over
#      the client's wall time; server CPU per message.
#   2. Logins: for each LOGIN_CLIENTS value, connect, USER, PASS, QUIT, wait
#      for the close, in a loop for LOGIN_SECONDS, client k as user k mod
#      BOXES (full mailboxes, as Outlook's checks are; the same one-session-
#      per-mailbox rule); logins/s and server CPU per login.
#   Server CPU: utime+stime of the process tree from /proc, before and after
#   the round (live processes' utime+stime+cutime+cstime, so processes that
#   exited during the round count through their parent's cutime+cstime:
#   Dovecot's per-connection processes are covered). Each round also reports
#   the client's own CPU and how many cores anything else on the machine kept
#   busy meanwhile ("other"): the numbers are only as good as the machine is
#   quiet.
#
# Usage (as root, on Debian/Ubuntu):  tests/bench/pop3.sh
#   CLIENTS="1 10 50"        parallel clients per download round
#   LOGIN_CLIENTS="1 10 50"  parallel clients per login round (default CLIENTS;
#                            empty: no login rounds)
#   BOXES=50                 mailboxes (users)
#   MSGS_PER_BOX=1000        messages per mailbox
#   MSG_SIZE=5120            bytes per generated message
#   DL_SESSIONS=2*BOXES      download sessions per round (each mailbox twice)
#   LOGIN_SECONDS=10         length of a login round
#   LOGINS=0                 cap on the logins of a round (0 = none)
#   DOVECOT_SCHEME=PLAIN     Dovecot's password scheme (e.g. SHA512-CRYPT)
#   DOVECOT_CRLF=0           1: Maildir files with CRLF line ends (as with
#                            mail_save_crlf = yes) instead of Dovecot's default LF
#   BENCH_TMPDIR=/var/tmp    where the temp directory goes
#   KEEP_TMP=1               keep the temp directory (logs, data) afterwards
#   ROUND_TIMEOUT=1800       seconds, per client run
#   BUILD_DIR=build/release  the CMake build directory it (re)builds and uses
#                            (relative to the repository root)
# Everything started here is stopped by PID, and the temp directory removed,
# on every exit (trap). Exit status 1 if any problem was seen (a failed
# round, a server warning or error in its log), 130/143 on SIGINT/SIGTERM.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CLIENTS=${CLIENTS:-"1 10 50"}
LOGIN_CLIENTS=${LOGIN_CLIENTS-$CLIENTS}
BOXES=${BOXES:-50}
MSGS_PER_BOX=${MSGS_PER_BOX:-1000}
MSG_SIZE=${MSG_SIZE:-5120}
DL_SESSIONS=${DL_SESSIONS:-$((2 * BOXES))}
LOGIN_SECONDS=${LOGIN_SECONDS:-10}
LOGINS=${LOGINS:-0}
DOVECOT_SCHEME=${DOVECOT_SCHEME:-PLAIN}
DOVECOT_CRLF=${DOVECOT_CRLF:-0}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-1800}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
LOAD_THREADS=10                     # SMTP connections loading postroomd
WARMUP_CLIENTS=10
HOST=127.0.0.1                      # the only address used, ever
USERFMT='u%d@example.test'
PASSFMT='bench-pass-%d'
PY=/usr/bin/python3; [ -x $PY ] || PY=python3   # not a pyenv shim: it costs CPU per call
HELPER="$HERE/bench_helper.py"
h() { "$PY" "$HELPER" "$@"; }

BUILD=${BUILD_DIR:-build/release}
[[ $BUILD = /* ]] || BUILD=$ROOT/$BUILD
POSTROOMD=$BUILD/service/postroomd
POSTROOM=$BUILD/admin/postroom

say() { printf '== %s\n' "$*"; }
warn() { printf '!! %s\n' "$*" >&2; PROBLEMS+=("$*"); }
die() { printf '!! FATAL: %s\n' "$*" >&2; exit 1; }
PROBLEMS=()

# ---------------------------------------------------------------- cleanup
T=""; PR_PID=""; DC_PID=""; CLIENT_PID=""
stop_pid() { # pid [seconds]: SIGTERM, wait (bounded), then SIGKILL; returns its exit status
  local pid=$1 secs=${2:-30} i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < secs * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then warn "pid $pid ignored SIGTERM for ${secs}s; SIGKILL"; kill -KILL "$pid" 2>/dev/null; fi
  wait "$pid" 2>/dev/null
}
stop_dovecot() { # the master stops its children on SIGTERM; wait for them too
  [ -n "$DC_PID" ] || return 0
  local kids; kids=$(h tree "$DC_PID" 2>/dev/null | cut -d' ' -f2-)
  stop_pid "$DC_PID" 30
  local p; for p in $kids; do [ "$p" != "$DC_PID" ] && stop_pid "$p" 5; done
  DC_PID=""
}
cleanup() { # a problem seen while stopping makes the exit status 1 too
  local rc=$? n=${#PROBLEMS[@]}
  trap - EXIT INT TERM
  stop_pid "$CLIENT_PID" 10
  # postroomd's default shutdown_grace is 60s; it exits 0 on SIGTERM
  stop_pid "$PR_PID" 70 || warn "postroomd exited with status $? on SIGTERM (log: $T/postroom)"
  stop_dovecot
  if [ -n "$T" ] && [ -d "$T" ]; then
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
  fi
  [ "$rc" = 0 ] && [ ${#PROBLEMS[@]} -gt "$n" ] && rc=1
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Long steps run in the background while the script waits, so a signal's
# trap runs at once; CLIENT_PID is the program itself, which cleanup stops.
bg() { "$@" & CLIENT_PID=$!; wait "$CLIENT_PID"; local rc=$?; CLIENT_PID=""; return "$rc"; }

[ "$(id -u)" = 0 ] || die "run as root (Dovecot needs it)"
for v in BOXES MSGS_PER_BOX MSG_SIZE DL_SESSIONS LOGIN_SECONDS LOGINS ROUND_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number"
done
for c in $CLIENTS $LOGIN_CLIENTS; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "client counts must be positive numbers"; done
[ "$BOXES" -ge 1 ] && [ "$MSGS_PER_BOX" -ge 1 ] && [ "$MSG_SIZE" -ge 1024 ] || die "BOXES, MSGS_PER_BOX >= 1, MSG_SIZE >= 1024"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg); NCPU=$(nproc)

# ---------------------------------------------------------------- packages
install_missing() {
  local missing="" p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  say "installing:$missing"
  # Keep the package scripts from starting the system's own Dovecot.
  local prc=/usr/sbin/policy-rc.d made_prc=0
  if [ ! -e $prc ]; then printf '#!/bin/sh\nexit 101\n' >$prc; chmod 755 $prc; made_prc=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  local rc=$?
  [ $made_prc = 1 ] && rm -f $prc
  return $rc
}
install_missing dovecot-pop3d python3 build-essential cmake ninja-build pkg-config \
  libapr1-dev libaprutil1-dev libsqlite3-dev libssl-dev libinih-dev libldap-dev libcmocka-dev ||
  die "package installation failed"

T=$(mktemp -d "$BENCH_TMPDIR/postroom-pop3bench.XXXXXX") || die "mktemp failed"
T=$(cd "$T" && pwd)
chmod 755 "$T"   # Dovecot's unprivileged processes and the mail user traverse it
say "temp directory $T ($(df -T "$T" | awk 'NR==2 {print $2}'))"

wait_port() { # port seconds: wait until something accepts on HOST:port
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
freeport() { # a free port other than those already given
  local p; p=$(h freeport)
  while [[ " $* " = *" $p "* ]]; do p=$(h freeport); done
  echo "$p"
}

say "building Postroom (${BUILD#"$ROOT"/}: postroomd, postroom)"
{ cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
  cmake --build "$BUILD" --target postroomd postroom; } >"$T/build.log" 2>&1 ||
  { tail -15 "$T/build.log" | sed 's/^/   | /' >&2; die "Postroom does not build"; }

say "building the load client (cc -O2)"
LOAD=$T/pop3load
cc -O2 -pthread -Wall -Wextra -o "$LOAD" "$HERE/pop3load.c" 2>"$T/pop3load-build.log" ||
  { sed 's/^/   | /' "$T/pop3load-build.log" >&2; die "tests/bench/pop3load.c does not build"; }

say "generating $MSGS_PER_BOX messages of $MSG_SIZE bytes"
MSGDIR=$T/msgs
h genmsgs "$MSGDIR" "$MSGS_PER_BOX" "$MSG_SIZE" || die "message generation failed"

probe() { # name port: USER/PASS/STAT as u0 must see MSGS_PER_BOX messages
  local out
  out=$("$LOAD" probe "$HOST" "$2" "$(printf "$USERFMT" 0)" "$(printf "$PASSFMT" 0)" 2>&1)
  case $out in
    "ok $MSGS_PER_BOX "*) return 0 ;;
    ok*) die "$1: POP3 STAT says ${out#ok } (count octets), expected $MSGS_PER_BOX messages" ;;
    *) die "$1: POP3 probe: ${out#FAILED: }" ;;
  esac
}

# ---------------------------------------------------------------- postroomd
PR=$T/postroom; PR_CONF=$PR/postroom.conf
setup_postroom() {
  mkdir -p "$PR"
  PR_SMTP_PORT=$(freeport); PR_PORT=$(freeport "$PR_SMTP_PORT")
  cat >"$PR_CONF" <<EOF
[server]
hostname = bench.example.test
domains = example.test
data_dir = $PR/data
log = $PR/log
; every session comes from 127.0.0.1: no per-address limit
limit_exempt_networks = 127.0.0.0/8
[smtp]
listen = $HOST:$PR_SMTP_PORT
submission =
smtps =
relay_networks =
[pop3]
listen = $HOST:$PR_PORT
pop3s =
allow_plaintext_auth = yes
EOF
  say "adding $BOXES users to postroomd"
  local i
  for ((i = 0; i < BOXES; i++)); do
    printf "$PASSFMT\n" "$i" | "$POSTROOM" -c "$PR_CONF" user add "$(printf "$USERFMT" "$i")" --password-stdin \
      >>"$PR/admin.log" 2>&1 || die "postroom user add $(printf "$USERFMT" "$i") failed: $(tail -2 "$PR/admin.log" | tr '\n' ' ')"
  done
  say "starting postroomd: SMTP $HOST:$PR_SMTP_PORT, POP3 $HOST:$PR_PORT"
  "$POSTROOMD" -c "$PR_CONF" -f >>"$PR/stderr" 2>&1 &
  PR_PID=$!
  wait_port "$PR_SMTP_PORT" 30 && wait_port "$PR_PORT" 5 && kill -0 "$PR_PID" 2>/dev/null ||
    die "postroomd did not start: $(tail -3 "$PR/stderr" "$PR/log" 2>/dev/null | grep -v '^==>' | tr '\n' ' ')"
  say "delivering $MSGS_PER_BOX messages to each of the $BOXES mailboxes over SMTP ($LOAD_THREADS connections)"
  local sent errs secs
  bg "$LOAD" smtp "$HOST" "$PR_SMTP_PORT" "$LOAD_THREADS" "$MSGDIR" "$MSGS_PER_BOX" "$BOXES" "$USERFMT" >"$PR/load.out" 2>"$PR/load.err"
  read -r sent errs secs <"$PR/load.out"
  [ "${errs:-1}" = 0 ] && [ "${sent:-0}" = $((BOXES * MSGS_PER_BOX)) ] ||
    die "SMTP loading delivered ${sent:-0} of $((BOXES * MSGS_PER_BOX)) messages, ${errs:-?} errors: $(head -3 "$PR/load.err" | tr '\n' ' ')"
  printf '   %s messages in %ss = %s msg/s\n' "$sent" "$secs" "$(awk -v n="$sent" -v s="$secs" 'BEGIN {printf "%.0f", (s > 0) ? n / s : 0}')"
  probe postroomd "$PR_PORT"
}

# ---------------------------------------------------------------- Dovecot
DC=$T/dovecot; DC_CONF=$DC/dovecot.conf; VMAIL=$T/vmail
MAIL_UID=$(id -u mail); MAIL_GID=$(id -g mail)
setup_dovecot() {
  DC_PORT=$(freeport "$PR_SMTP_PORT" "$PR_PORT")
  mkdir -p "$DC/run" "$DC/state" "$VMAIL"
  say "writing $BOXES Maildirs for Dovecot from what postroomd serves"
  bg "$PY" "$HELPER" maildir "$PR_PORT" "$USERFMT" "$PASSFMT" "$MSGDIR" "$VMAIL" "$BOXES" "$MSGS_PER_BOX" \
    "$MAIL_UID" "$MAIL_GID" "$([ "$DOVECOT_CRLF" = 1 ] && echo crlf)" || die "writing the Maildirs failed"
  local i pw
  for ((i = 0; i < BOXES; i++)); do
    if [ "$DOVECOT_SCHEME" = PLAIN ]; then pw="{PLAIN}$(printf "$PASSFMT" "$i")"
    else pw=$(doveadm pw -s "$DOVECOT_SCHEME" -p "$(printf "$PASSFMT" "$i")") || die "doveadm pw -s $DOVECOT_SCHEME failed"; fi
    echo "$(printf "$USERFMT" "$i"):$pw::::::"
  done >"$DC/users"
  chmod 644 "$DC/users"
  cat >"$DC_CONF" <<EOF
# Private Dovecot instance for tests/bench/pop3.sh: POP3 only, loopback,
# plaintext login allowed, no TLS, stock process model and limits except
# mail_max_userip_connections (all clients come from 127.0.0.1).
protocols = pop3
listen = $HOST
instance_name = postroom-pop3bench
base_dir = $DC/run
state_dir = $DC/state
log_path = $DC/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:$VMAIL/%n/Maildir
mail_save_crlf = $([ "$DOVECOT_CRLF" = 1 ] && echo yes || echo no)
mail_uid = $MAIL_UID
mail_gid = $MAIL_GID
first_valid_uid = $MAIL_UID
first_valid_gid = $MAIL_GID
passdb {
  driver = passwd-file
  args = $DC/users
}
userdb {
  driver = static
  args = uid=$MAIL_UID gid=$MAIL_GID home=$VMAIL/%n
}
service pop3-login {
  inet_listener pop3 {
    address = $HOST
    port = $DC_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
protocol pop3 {
  mail_max_userip_connections = 10000
}
EOF
  say "starting Dovecot $(dovecot --version | cut -d' ' -f1) on $HOST:$DC_PORT"
  dovecot -c "$DC_CONF" -F >>"$DC/stderr" 2>&1 &
  DC_PID=$!
  if ! wait_port "$DC_PORT" 30 || ! kill -0 "$DC_PID" 2>/dev/null; then
    tail -15 "$DC/stderr" "$DC/dovecot.log" 2>/dev/null | sed 's/^/   | /' >&2
    die "Dovecot did not start"
  fi
  probe Dovecot "$DC_PORT"
}

# ---------------------------------------------------------------- rounds
# R_*[kind,name,clients]; kind dl (download), login, or warmup (an untimed
# download round whose numbers are not kept)
declare -A R_N R_WALL R_RATE R_MBS R_AVG R_CPU R_CPUPER R_CLIENT R_OTHER R_ERR R_FAILED
run_round() { # kind name port rootpid clients
  local kind=$1 name=$2 port=$3 pid=$4 c=$5
  local key="$kind,$name,$c" out=$T/round-$kind-$name-$c.out err=$T/round-$kind-$name-$c.err
  local args what sessions=0
  if [ "$kind" = login ]; then
    args=(login "$HOST" "$port" "$c" "$LOGIN_SECONDS" "$LOGINS" "$BOXES" "$USERFMT" "$PASSFMT")
    what="$c-client login round"
  else
    sessions=$DL_SESSIONS; [ "$c" -gt "$sessions" ] && sessions=$c
    args=(download "$HOST" "$port" "$c" "$sessions" "$BOXES" "$MSGS_PER_BOX" "$USERFMT" "$PASSFMT")
    what="$c-client $([ "$kind" = warmup ] && echo warm-up || echo download) round"
  fi
  sleep 1
  local c0 c1 b0 b1 w0 w1 rc client sess msgs octets errs cwall
  b0=$(h busy); c0=$(h cpu "$pid"); w0=$(date +%s.%N)
  rm -f "$T/timing"
  bg "$PY" "$HELPER" run "$T/timing" "$ROUND_TIMEOUT" "$LOAD" "${args[@]}" >"$out" 2>"$err"
  sleep 0.5  # let the server finish closing before the second reading
  c1=$(h cpu "$pid"); b1=$(h busy); w1=$(date +%s.%N)
  read -r rc _ client <"$T/timing" || { rc=1; client=0; }
  read -r sess msgs octets _ errs cwall <"$out" || { sess=0; msgs=0; octets=0; errs=1; cwall=0; }
  local failed=0
  if [ "$rc" != 0 ]; then
    warn "$name, $what: the load client exited $rc: $(head -c 300 "$err" | tr '\n' ' ')"; failed=1
  fi
  if [ "${errs:-1}" != 0 ]; then
    warn "$name, $what: $errs errors: $(head -3 "$err" | tr '\n' ' ')"; failed=1
  fi
  if [ "$kind" != login ] && [ "$msgs" != $((sessions * MSGS_PER_BOX)) ]; then
    warn "$name, $what: $msgs of $((sessions * MSGS_PER_BOX)) messages downloaded"; failed=1
  fi
  if [ "$kind" = login ] && [ "${sess:-0}" = 0 ]; then warn "$name, $what: no login succeeded"; failed=1; fi
  if ! kill -0 "$pid" 2>/dev/null; then warn "$name died during the $what"; failed=1; fi
  [ "$kind" = warmup ] && return "$failed"
  local n=$msgs; [ "$kind" = login ] && n=$sess
  R_FAILED[$key]=$failed
  R_ERR[$key]=$errs
  R_N[$key]=$n
  R_WALL[$key]=$(awk -v w="$cwall" 'BEGIN {printf "%.2f", w}')
  R_RATE[$key]=$(awk -v n="$n" -v w="$cwall" 'BEGIN {printf "%.0f", (w > 0) ? n / w : 0}')
  R_MBS[$key]=$(awk -v b="$octets" -v w="$cwall" 'BEGIN {printf "%.1f", (w > 0) ? b / w / 1e6 : 0}')
  R_AVG[$key]=$(awk -v b="$octets" -v n="$msgs" 'BEGIN {printf "%.0f", n ? b / n : 0}')
  R_CPU[$key]=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", b - a}')
  # CPU per message in microseconds, per login in milliseconds
  R_CPUPER[$key]=$(awk -v n="$n" -v a="$c0" -v b="$c1" -v k="$kind" \
    'BEGIN {if (!n) print "n/a"; else if (k == "dl") printf "%.1f", (b - a) * 1e6 / n; else printf "%.2f", (b - a) * 1e3 / n}')
  R_CLIENT[$key]=$client
  R_OTHER[$key]=$(awk -v a="$b0" -v b="$b1" -v c="${R_CPU[$key]}" -v d="$client" -v s="$w0" -v e="$w1" \
    'BEGIN {o = (b - a) - c - d; if (o < 0) o = 0; printf "%.2f", (e > s) ? o / (e - s) : 0}')
  if [ "$kind" = dl ]; then
    printf '   %-9s %3s clients: %6s msgs in %6ss = %6s msg/s, %6s MB/s, server CPU %6ss = %6s us/msg, client CPU %ss, other %s cores%s\n' \
      "$name" "$c" "$n" "${R_WALL[$key]}" "${R_RATE[$key]}" "${R_MBS[$key]}" "${R_CPU[$key]}" "${R_CPUPER[$key]}" \
      "$client" "${R_OTHER[$key]}" "$([ $failed = 1 ] && echo "  ROUND FAILED")"
  else
    printf '   %-9s %3s clients: %6s logins in %6ss = %6s logins/s, server CPU %6ss = %6s ms/login, client CPU %ss, other %s cores%s\n' \
      "$name" "$c" "$n" "${R_WALL[$key]}" "${R_RATE[$key]}" "${R_CPU[$key]}" "${R_CPUPER[$key]}" \
      "$client" "${R_OTHER[$key]}" "$([ $failed = 1 ] && echo "  ROUND FAILED")"
  fi
  return "$failed"
}

# ---------------------------------------------------------------- main
setup_postroom
setup_dovecot

say "warm-up: one untimed download round ($DL_SESSIONS sessions, $WARMUP_CLIENTS clients) per server"
run_round warmup postroomd "$PR_PORT" "$PR_PID" "$WARMUP_CLIENTS" || die "postroomd's warm-up round failed"
run_round warmup dovecot "$DC_PORT" "$DC_PID" "$WARMUP_CLIENTS" || die "Dovecot's warm-up round failed"

say "download: $DL_SESSIONS sessions per round (mailbox = session mod $BOXES), $MSGS_PER_BOX messages each"
for c in $CLIENTS; do
  run_round dl postroomd "$PR_PORT" "$PR_PID" "$c" || kill -0 "$PR_PID" 2>/dev/null || die "postroomd is gone"
  run_round dl dovecot "$DC_PORT" "$DC_PID" "$c" || kill -0 "$DC_PID" 2>/dev/null || die "Dovecot is gone"
done

[ -n "$LOGIN_CLIENTS" ] && say "logins: connect, USER, PASS, QUIT for ${LOGIN_SECONDS}s per round$([ "$LOGINS" != 0 ] && echo " (at most $LOGINS)")"
for c in $LOGIN_CLIENTS; do
  run_round login postroomd "$PR_PORT" "$PR_PID" "$c" || kill -0 "$PR_PID" 2>/dev/null || die "postroomd is gone"
  run_round login dovecot "$DC_PORT" "$DC_PID" "$c" || kill -0 "$DC_PID" 2>/dev/null || die "Dovecot is gone"
done

# ---------------------------------------------------------------- summary
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN {if (a != "n/a" && b != "n/a" && b > 0) printf "%.*f", d, a / b; else print "n/a"}'; }
# A goal is judged on the unrounded ratio (6 decimals), shown to 2.
r2() { [ -n "$1" ] && [ "$1" != n/a ] && printf '%.2f' "$1" || printf '%s' "$1"; }
ok() { [ -n "${R_N[$1]:-}" ] && [ "${R_FAILED[$1]}" = 0 ]; }
echo
echo "==================== POP3 benchmark summary ===================="
echo "machine: $NCPU cores, $(uname -r); Dovecot $(dovecot --version | cut -d' ' -f1); postroomd $POSTROOMD"
echo "data: $BOXES mailboxes x $MSGS_PER_BOX messages of $MSG_SIZE bytes + postroomd's trace headers, the same octets"
echo "      in both servers; download rounds of $DL_SESSIONS sessions (USER, PASS, STAT, LIST, UIDL, RETR all, QUIT)"
echo "msg/s and MB/s (10^6 bytes of message octets as LIST counts them) over the client's wall time;"
echo "avg B = octets per message served"
echo "CPU = server process tree utime+stime (incl. reaped children: Dovecot's login and pop3 processes)"
echo "client s = the load client's CPU; other = cores busy with anything else (machine busy - server - client)"
echo "        during the round, averaged: other jobs on this shared ${NCPU}-core machine; noisy when large"
echo "Dovecot: stock process model (a process per login and per session), passwords $DOVECOT_SCHEME, logs logins (info),"
echo "         Maildir files with $([ "$DOVECOT_CRLF" = 1 ] && echo "CRLF (mail_save_crlf = yes)" || echo "LF line ends (its default mail_save_crlf = no)");"
echo "postroomd: its defaults (log_level = info, its own password hashes with the verified-credential cache)"
echo "load average at start: $LOAD0; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-7s | %-9s | %8s | %7s | %7s | %7s | %6s | %7s | %9s | %8s | %5s | %6s\n' clients server messages "wall s" "msg/s" "MB/s" "avg B" "CPU s" "CPU us/msg" "client s" other errors
printf -- '--------+-----------+----------+---------+---------+---------+--------+---------+-----------+----------+-------+-------\n'
for c in $CLIENTS; do
  for name in postroomd dovecot; do
    k="dl,$name,$c"
    [ -n "${R_N[$k]:-}" ] || continue
    printf '%-7s | %-9s | %8s | %7s | %7s | %7s | %6s | %7s | %9s | %8s | %5s | %6s%s\n' "$c" "$name" "${R_N[$k]}" "${R_WALL[$k]}" \
      "${R_RATE[$k]}" "${R_MBS[$k]}" "${R_AVG[$k]}" "${R_CPU[$k]}" "${R_CPUPER[$k]}" "${R_CLIENT[$k]}" "${R_OTHER[$k]}" \
      "${R_ERR[$k]}" "$([ "${R_FAILED[$k]}" = 1 ] && echo "  FAILED")"
  done
done
if [ -n "$LOGIN_CLIENTS" ]; then
  echo
  printf '%-7s | %-9s | %8s | %7s | %8s | %7s | %11s | %8s | %5s | %6s\n' clients server logins "wall s" "logins/s" "CPU s" "CPU ms/login" "client s" other errors
  printf -- '--------+-----------+----------+---------+----------+---------+-------------+----------+-------+-------\n'
fi
for c in $LOGIN_CLIENTS; do
  for name in postroomd dovecot; do
    k="login,$name,$c"
    [ -n "${R_N[$k]:-}" ] || continue
    printf '%-7s | %-9s | %8s | %7s | %8s | %7s | %11s | %8s | %5s | %6s%s\n' "$c" "$name" "${R_N[$k]}" "${R_WALL[$k]}" \
      "${R_RATE[$k]}" "${R_CPU[$k]}" "${R_CPUPER[$k]}" "${R_CLIENT[$k]}" "${R_OTHER[$k]}" "${R_ERR[$k]}" \
      "$([ "${R_FAILED[$k]}" = 1 ] && echo "  FAILED")"
  done
done
echo
echo "ratios postroomd/Dovecot (rates: higher is better for postroomd; CPU: lower is better):"
for c in $CLIENTS; do
  a="dl,postroomd,$c"; b="dl,dovecot,$c"
  ok "$a" && ok "$b" || { echo "  download $c clients: n/a (a round failed)"; continue; }
  printf '  download %3s clients: msg/s %sx   MB/s %sx   CPU per message %sx\n' "$c" \
    "$(ratio "${R_RATE[$a]}" "${R_RATE[$b]}")" "$(ratio "${R_MBS[$a]}" "${R_MBS[$b]}")" "$(ratio "${R_CPUPER[$a]}" "${R_CPUPER[$b]}")"
done
for c in $LOGIN_CLIENTS; do
  a="login,postroomd,$c"; b="login,dovecot,$c"
  ok "$a" && ok "$b" || { echo "  logins   $c clients: n/a (a round failed)"; continue; }
  printf '  logins   %3s clients: logins/s %sx   CPU per login %sx\n' "$c" \
    "$(ratio "${R_RATE[$a]}" "${R_RATE[$b]}")" "$(ratio "${R_CPUPER[$a]}" "${R_CPUPER[$b]}")"
done
echo
echo "goals (postroomd; measured at 10 clients, n/a without such a round):"
goal() { printf '  %-52s %-10s %s\n' "$1" "$([ -n "$2" ] && echo "${2}x" || echo n/a)" "$3"; }
verdict() { [ -z "$1" ] || [ "$1" = n/a ] && echo n/a || { awk "BEGIN {exit !($1 $2)}" && echo met || echo "NOT met"; }; }
r=""; c=""; l=""
if ok dl,postroomd,10 && ok dl,dovecot,10; then
  r=$(ratio "${R_RATE[dl,postroomd,10]}" "${R_RATE[dl,dovecot,10]}" 6)
  c=$(ratio "${R_CPUPER[dl,postroomd,10]}" "${R_CPUPER[dl,dovecot,10]}" 6)
fi
if ok login,postroomd,10 && ok login,dovecot,10; then
  l=$(ratio "${R_RATE[login,postroomd,10]}" "${R_RATE[login,dovecot,10]}" 6)
fi
goal ">= 1.5x Dovecot's messages/s at 10 clients" "$(r2 "$r")" "$(verdict "$r" ">= 1.5")"
goal "<= 0.5x Dovecot's CPU per message at 10 clients" "$(r2 "$c")" "$(verdict "$c" "<= 0.5")"
goal ">= 10x Dovecot's logins/s at 10 clients" "$(r2 "$l")" "$(verdict "$l" ">= 10")"
# What the servers logged at warning level or worse (e.g. Dovecot's
# process_limit reached: then its numbers are limited by its configuration)
# is a problem: the round it happened in may not measure what it says.
log_notes() { # name file pattern
  local n; n=$(grep -cE "$3" "$2" 2>/dev/null)
  [ "${n:-0}" -gt 0 ] || return 0
  warn "$1 logged $n warnings or errors ($2)"
  grep -E "$3" "$2" | head -3 | cut -c1-200 | sed 's/^/   | /'
}
echo
log_notes Dovecot "$DC/dovecot.log" ': (Warning|Error|Fatal|Panic):'
log_notes postroomd "$PR/log" '^[^ ]+ postroomd\[[0-9]+\] (WARNING|ERROR) '
if [ ${#PROBLEMS[@]} -gt 0 ]; then
  echo
  echo "problems seen:"
  printf '  - %s\n' "${PROBLEMS[@]}"
  exit 1
fi
exit 0
