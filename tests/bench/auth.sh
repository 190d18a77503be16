#!/usr/bin/env bash
# POP3 login benchmark with the LDAP directory backend (issue 4): postroomd
# (cold: [directory] auth_cache_ttl = 0; cache: its default 10m) against a
# private Dovecot (Debian dovecot-pop3d + dovecot-ldap, passdb ldap with
# auth_bind = yes) on the same private slapd, in one run. A benchmark, not a
# test: ctest does not run it.
#
# Setup, all on loopback (127.0.0.1) only:
#   - slapd: tests/integration/ldaptest.py's Slapd (preset openldap, its own
#     cn=config, mdb database and port; fixtures plus USERS users
#     uid=u<i>,ou=people,dc=example,dc=test, mail u<i>@example.test,
#     userPassword {SSHA} of bench-pass-<i>), started and stopped by
#     tests/bench/auth_helper.py slapd. Plain LDAP unless LDAP_TLS=1
#     (then STARTTLS with a throwaway CA, for both servers). slapd's
#     debug level SLAPD_LOGLEVEL (default stats: every operation is
#     logged, so the table can show LDAP operations per login).
#   - Two postroomd instances (built here in BUILD_DIR), each with its own
#     data_dir and POP3 port, [directory] backend = ldap and [ldap] uri,
#     base, the service account (bind_dn/bind_password_file), starttls as
#     LDAP_TLS says; everything else their defaults (log_level = info,
#     pool_size 4, ...) except limit_exempt_networks = 127.0.0.0/8 (every
#     session comes from 127.0.0.1) and [pop3] allow_plaintext_auth = yes:
#       "postroomd cold":  auth_cache_ttl = 0, every login asks LDAP;
#       "postroomd cache": auth_cache_ttl left at its default (10m), the
#                          verified-credential cache.
#   - Dovecot: passdb ldap, auth_bind = yes; DOVECOT_BIND=search (default):
#     a search as the service account with the filter postroomd uses for an
#     address login ((&(objectClass=inetOrgPerson)(|(mail=%u)(mailLocalAddress=%u)
#     (mailAlternateAddress=%u)(uid=%u)))), then a bind as the DN found;
#     DOVECOT_BIND=userdn: auth_bind_userdn = uid=%n,ou=people,... (a bind,
#     no search). userdb static (the system user `mail`, Maildir in the temp
#     directory); its stock process model (a login process and a pop3 process
#     per connection), logging (info) and auth cache (off); plaintext login
#     allowed, no TLS on POP3, its own base_dir/state_dir/log here.
#   - Mailboxes are empty (nothing is delivered): a login round measures the
#     authentication and the session, not the mailbox.
#   - Before the timed rounds each server serves an untimed login round of
#     WARMUP_SECONDS with one client per user (USERS clients), so every user
#     is known everywhere (postroomd cache: in the credential cache; Dovecot:
#     its Maildirs exist).
#
# What it measures (load client: tests/bench/pop3load.c login mode, built
# here with cc -O2, one thread per client): for each CLIENTS value, one round
# per server of ROUND seconds: connect, greeting, USER u<k>@example.test,
# PASS, QUIT, wait for the close, in a loop; client k as user k mod USERS.
# logins/s over the client's wall time; server CPU per login (utime+stime of
# the server's process tree from /proc before and after: live processes'
# utime+stime+cutime+cstime, so Dovecot's exited login/pop3 processes count
# through their parent), slapd's CPU per login apart (both servers make slapd
# work: that is part of a login's cost), the client's CPU, and how many cores
# anything else kept busy meanwhile ("other": the numbers are only as good as
# the machine is quiet). With SLAPD_LOGLEVEL containing stats: LDAP binds and
# searches per login and LDAP results with an error other than
# invalidCredentials, from slapd's log.
# Then a password check on every server: u1 logs in with the right password,
# then a wrong one (right after a successful, i.e. cached, login: it must
# fail); u2 logs in, then tries the password it is about to get (refused);
# both passwords are changed in LDAP (ldappasswd as the rootdn); then u1's
# old password (must fail) and new one (must work) and u2's new one (must
# work: it failed only because it was not set yet). postroomd cold and
# Dovecot (no cache) must see the change at once; postroomd cache not seeing
# it (old password accepted, or the new one still refused) is reported as a
# NOTE, not counted as a failure: how long a cached credential outlives a
# change in LDAP is the backend's auth_tag's business ([ldap] cache_ttl).
#
# Usage (as root, on Debian/Ubuntu):  tests/bench/auth.sh
#   CLIENTS="10"            parallel clients per round (a list: "1 10 50")
#   SECONDS=10              length of a timed round (LOGIN_SECONDS too)
#   USERS=50                LDAP users
#   LOGINS=0                cap on the logins of a round (0 = none)
#   WARMUP_SECONDS=2        length of the untimed warm-up round (USERS clients)
#   DOVECOT_BIND=search     or userdn (see above)
#   LDAP_TLS=0              1: STARTTLS to slapd for both servers
#   SLAPD_LOGLEVEL=stats    slapd -d level; 0: no log (no LDAP operation counts)
#   BENCH_TMPDIR=/var/tmp   where the temp directory goes
#   KEEP_TMP=1              keep the temp directory (logs, data) afterwards
#   ROUND_TIMEOUT=600       seconds, per client run
#   BUILD_DIR=build/authbench  the CMake build directory it (re)builds and
#                           uses (relative to the repository root)
# Everything started here is stopped by PID, and the temp directory removed,
# on every exit (trap). Exit status 1 if any problem was seen (a failed
# round, a wrong password accepted, the old password accepted by postroomd
# cold or Dovecot, an LDAP error result, a server warning or error in its
# log), 130/143 on SIGINT/SIGTERM. A goal not met is reported, not a failure.
set -uo pipefail

# bash's own SECONDS counts up from the value in the environment: take the
# value as given from our environment block, then leave SECONDS alone.
ENV_SECONDS=$(tr '\0' '\n' </proc/$$/environ 2>/dev/null | sed -n 's/^SECONDS=//p' | head -1)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CLIENTS=${CLIENTS:-10}
ROUND=${ENV_SECONDS:-${LOGIN_SECONDS:-10}}
USERS=${USERS:-50}
LOGINS=${LOGINS:-0}
WARMUP_SECONDS=${WARMUP_SECONDS:-2}
DOVECOT_BIND=${DOVECOT_BIND:-search}
LDAP_TLS=${LDAP_TLS:-0}
SLAPD_LOGLEVEL=${SLAPD_LOGLEVEL:-stats}
ROUND_TIMEOUT=${ROUND_TIMEOUT:-600}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
HOST=127.0.0.1                      # the only address used, ever
DOMAIN=example.test
USERFMT="u%d@$DOMAIN"
PASSFMT='bench-pass-%d'
PY=/usr/bin/python3; [ -x $PY ] || PY=python3   # not a pyenv shim: it costs CPU per call
HELPER="$HERE/bench_helper.py"
AHELPER="$HERE/auth_helper.py"
h() { "$PY" "$HELPER" "$@"; }

BUILD=${BUILD_DIR:-build/authbench}
[[ $BUILD = /* ]] || BUILD=$ROOT/$BUILD
POSTROOMD=$BUILD/service/postroomd

say() { printf '== %s\n' "$*"; }
warn() { printf '!! %s\n' "$*" >&2; PROBLEMS+=("$*"); }
die() { printf '!! FATAL: %s\n' "$*" >&2; exit 1; }
PROBLEMS=()

# ---------------------------------------------------------------- cleanup
T=""; SL_HELPER_PID=""; SLAPD_PID=""; DC_PID=""; CLIENT_PID=""
declare -A PR_PID=()
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
  local rc=$? n=${#PROBLEMS[@]} k
  trap - EXIT INT TERM
  stop_pid "$CLIENT_PID" 10
  # postroomd's default shutdown_grace is 60s; it exits 0 on SIGTERM
  for k in "${!PR_PID[@]}"; do
    stop_pid "${PR_PID[$k]}" 70 || warn "postroomd ($k) exited with status $? on SIGTERM (log: $T/$k/log)"
  done
  stop_dovecot
  # the helper stops slapd on SIGTERM (and slapd gets SIGTERM if it dies)
  stop_pid "$SL_HELPER_PID" 30
  [ -n "$SLAPD_PID" ] && kill -0 "$SLAPD_PID" 2>/dev/null &&
    { warn "slapd $SLAPD_PID outlived its helper"; kill -TERM "$SLAPD_PID"; sleep 1; kill -KILL "$SLAPD_PID" 2>/dev/null; }
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
for v in ROUND USERS LOGINS WARMUP_SECONDS ROUND_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (SECONDS/LOGIN_SECONDS for ROUND)"
done
[ "$ROUND" -ge 1 ] && [ "$USERS" -ge 1 ] && [ "$WARMUP_SECONDS" -ge 1 ] || die "SECONDS, USERS, WARMUP_SECONDS >= 1"
for c in $CLIENTS; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "client counts must be positive numbers"; done
[ -n "$CLIENTS" ] || die "CLIENTS is empty"
case $DOVECOT_BIND in search|userdn) ;; *) die "DOVECOT_BIND must be search or userdn" ;; esac
case $LDAP_TLS in 0|1) ;; *) die "LDAP_TLS must be 0 or 1" ;; esac
[[ $SLAPD_LOGLEVEL =~ ^[A-Za-z0-9,]+$ ]] || die "SLAPD_LOGLEVEL: a slapd -d level (e.g. stats, 0)"
COUNT_OPS=0; [[ ,$SLAPD_LOGLEVEL, = *,stats,* || ,$SLAPD_LOGLEVEL, = *,256,* ]] && COUNT_OPS=1
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg); NCPU=$(nproc)

# ---------------------------------------------------------------- packages
install_missing() {
  local missing="" p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  say "installing:$missing"
  # Keep the package scripts from starting the system's own Dovecot or slapd.
  local prc=/usr/sbin/policy-rc.d made_prc=0
  if [ ! -e $prc ]; then printf '#!/bin/sh\nexit 101\n' >$prc; chmod 755 $prc; made_prc=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  local rc=$?
  [ $made_prc = 1 ] && rm -f $prc
  return $rc
}
install_missing dovecot-pop3d dovecot-ldap slapd ldap-utils openssl python3 build-essential cmake \
  ninja-build pkg-config libapr1-dev libaprutil1-dev libsqlite3-dev libssl-dev libinih-dev libldap-dev \
  libcmocka-dev || die "package installation failed"

T=$(mktemp -d "$BENCH_TMPDIR/postroom-authbench.XXXXXX") || die "mktemp failed"
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
USED_PORTS=""
freeport() { # a free port not handed out before in this run
  local p; p=$(h freeport)
  while [[ " $USED_PORTS " = *" $p "* ]]; do p=$(h freeport); done
  USED_PORTS="$USED_PORTS $p"
  echo "$p"
}

say "building Postroom (${BUILD#"$ROOT"/}: postroomd, postroom)"
{ cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
  cmake --build "$BUILD" --target postroomd postroom; } >"$T/build.log" 2>&1 ||
  { tail -15 "$T/build.log" | sed 's/^/   | /' >&2; die "Postroom does not build"; }

# What the cache can do depends on the LDAP backend offering auth_tag
# (directory/directory.h): say what the source built here has.
if grep -qE '\.auth_tag[[:space:]]*=' "$ROOT/directory/dir_ldap.c"; then LDAP_AUTH_TAG=yes; else LDAP_AUTH_TAG=no; fi
say "the ldap backend (directory/dir_ldap.c) as built $([ $LDAP_AUTH_TAG = yes ] && echo "has" || echo "has NO") auth_tag hook"

say "building the load client (cc -O2)"
LOAD=$T/pop3load
cc -O2 -pthread -Wall -Wextra -o "$LOAD" "$HERE/pop3load.c" 2>"$T/pop3load-build.log" ||
  { sed 's/^/   | /' "$T/pop3load-build.log" >&2; die "tests/bench/pop3load.c does not build"; }

# ---------------------------------------------------------------- slapd
setup_slapd() {
  say "starting slapd (tests/integration/ldaptest.py, $USERS users, $([ "$LDAP_TLS" = 1 ] && echo STARTTLS || echo "plain LDAP"), -d $SLAPD_LOGLEVEL)"
  PR_TEST_TMP=$T KEEP_TMP=${KEEP_TMP:-0} "$PY" "$AHELPER" slapd "$T/slapd.env" "$USERS" "$USERFMT" "$PASSFMT" \
    "$LDAP_TLS" "$SLAPD_LOGLEVEL" >"$T/slapd-helper.log" 2>&1 &
  SL_HELPER_PID=$!
  local i
  for ((i = 0; i < 600; i++)); do
    [ -s "$T/slapd.env" ] && break
    kill -0 "$SL_HELPER_PID" 2>/dev/null ||
      { tail -15 "$T/slapd-helper.log" | sed 's/^/   | /' >&2; die "slapd did not start"; }
    sleep 0.1
  done
  [ -s "$T/slapd.env" ] || die "slapd did not start within 60s ($T/slapd-helper.log)"
  # shellcheck disable=SC1091
  . "$T/slapd.env"
  printf '   %s, pid %s, base %s\n' "$SLAPD_URI" "$SLAPD_PID" "$SLAPD_BASE"
}

LDAPENV=(env LDAPRC=/nonexistent-ldaprc)
set_password() { # user-number new-password: ldappasswd as the rootdn
  local tls=(); [ "$LDAP_TLS" = 1 ] && tls=(-ZZ)
  "${LDAPENV[@]}" LDAPTLS_CACERT="${SLAPD_CA_FILE:-/dev/null}" LDAPTLS_REQCERT=demand \
    ldappasswd -x "${tls[@]}" -H "$SLAPD_URI" -D "$SLAPD_ADMIN_DN" -y "$SLAPD_ADMIN_PASSWORD_FILE" \
    -s "$2" "uid=u$1,$SLAPD_PEOPLE" >>"$T/ldappasswd.log" 2>&1
}

# ---------------------------------------------------------------- postroomd
setup_postroom() { # name: cold | cache
  local name=$1 dir=$T/pr-$1 port
  mkdir -p "$dir"
  port=$(freeport)
  PR_PORT[$name]=$port
  {
    cat <<EOF
[server]
hostname = bench.$DOMAIN
domains = $DOMAIN
data_dir = $dir/data
log = $dir/log
; every session comes from 127.0.0.1: no per-address limit
limit_exempt_networks = 127.0.0.0/8
[smtp]
listen =
submission =
smtps =
[pop3]
listen = $HOST:$port
pop3s =
allow_plaintext_auth = yes
[directory]
backend = ldap
EOF
    if [ "$name" = cold ]; then echo "auth_cache_ttl = 0"
    else echo "; auth_cache_ttl: the default (10m)"; fi
    cat <<EOF
[ldap]
uri = $SLAPD_URI
starttls = $([ "$LDAP_TLS" = 1 ] && echo yes || echo no)
$([ "$LDAP_TLS" = 1 ] && echo "ca_file = $SLAPD_CA_FILE")
bind_dn = $SLAPD_BIND_DN
bind_password_file = $SLAPD_BIND_PASSWORD_FILE
base = $SLAPD_BASE
preset = openldap
EOF
  } >"$dir/postroom.conf"
  "$POSTROOMD" -c "$dir/postroom.conf" --check >"$dir/check.out" 2>&1 ||
    die "postroomd --check ($name): $(tr '\n' ' ' <"$dir/check.out")"
  say "starting postroomd $name: POP3 $HOST:$port"
  "$POSTROOMD" -c "$dir/postroom.conf" -f >>"$dir/stderr" 2>&1 &
  PR_PID[$name]=$!
  wait_port "$port" 30 && kill -0 "${PR_PID[$name]}" 2>/dev/null ||
    die "postroomd $name did not start: $(tail -3 "$dir/stderr" "$dir/log" 2>/dev/null | grep -v '^==>' | tr '\n' ' ')"
  probe "postroomd $name" "$port"
}

probe() { # name port [user# password]: USER/PASS/STAT must work (empty maildrop)
  local u=${3:-0} pw=${4:-} out
  [ -n "$pw" ] || pw=$(printf "$PASSFMT" "$u")
  out=$("$LOAD" probe "$HOST" "$2" "$(printf "$USERFMT" "$u")" "$pw" 2>&1)
  case $out in
    ok*) return 0 ;;
    *) die "$1: POP3 login as $(printf "$USERFMT" "$u"): ${out#FAILED: }" ;;
  esac
}

# ---------------------------------------------------------------- Dovecot
DC=$T/dovecot; DC_CONF=$DC/dovecot.conf; VMAIL=$T/vmail
MAIL_UID=$(id -u mail); MAIL_GID=$(id -g mail)
setup_dovecot() {
  DC_PORT=$(freeport)
  mkdir -p "$DC/run" "$DC/state" "$VMAIL"
  chown "$MAIL_UID:$MAIL_GID" "$VMAIL"
  {
    cat <<EOF
# passdb ldap for tests/bench/auth.sh (DOVECOT_BIND=$DOVECOT_BIND)
uris = $SLAPD_URI
ldap_version = 3
dn = $SLAPD_BIND_DN
dnpass = $SLAPD_BIND_PASSWORD
base = $SLAPD_BASE
scope = subtree
deref = never
auth_bind = yes
EOF
    if [ "$DOVECOT_BIND" = userdn ]; then
      echo "auth_bind_userdn = uid=%n,$SLAPD_PEOPLE"
    else
      echo "pass_filter = (&(objectClass=inetOrgPerson)(|(mail=%u)(mailLocalAddress=%u)(mailAlternateAddress=%u)(uid=%u)))"
      echo "pass_attrs = mail=user"
    fi
    if [ "$LDAP_TLS" = 1 ]; then
      printf 'tls = yes\ntls_ca_cert_file = %s\ntls_require_cert = demand\n' "$SLAPD_CA_FILE"
    fi
  } >"$DC/dovecot-ldap.conf.ext"
  chgrp dovecot "$DC/dovecot-ldap.conf.ext" 2>/dev/null; chmod 640 "$DC/dovecot-ldap.conf.ext"
  if [ "$LDAP_TLS" = 1 ]; then chmod 755 "$SLAPD_DIR"; chmod 644 "$SLAPD_CA_FILE"; fi
  cat >"$DC_CONF" <<EOF
# Private Dovecot instance for tests/bench/auth.sh: POP3 only, loopback,
# plaintext login allowed, no TLS on POP3, passdb ldap (auth_bind = yes),
# userdb static; stock process model, limits and auth cache (off) except
# mail_max_userip_connections (all clients come from 127.0.0.1).
protocols = pop3
listen = $HOST
instance_name = postroom-authbench
base_dir = $DC/run
state_dir = $DC/state
log_path = $DC/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:$VMAIL/%n/Maildir
mail_uid = $MAIL_UID
mail_gid = $MAIL_GID
first_valid_uid = $MAIL_UID
first_valid_gid = $MAIL_GID
passdb {
  driver = ldap
  args = $DC/dovecot-ldap.conf.ext
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
  say "starting Dovecot $(dovecot --version | cut -d' ' -f1) on $HOST:$DC_PORT (passdb ldap, auth_bind = yes, $DOVECOT_BIND)"
  dovecot -c "$DC_CONF" -F >>"$DC/stderr" 2>&1 &
  DC_PID=$!
  if ! wait_port "$DC_PORT" 30 || ! kill -0 "$DC_PID" 2>/dev/null; then
    tail -15 "$DC/stderr" "$DC/dovecot.log" 2>/dev/null | sed 's/^/   | /' >&2
    die "Dovecot did not start"
  fi
  probe Dovecot "$DC_PORT"
}

# ---------------------------------------------------------------- rounds
# R_*[name,clients], name: cold, cache or dovecot
declare -A PR_PORT=() R_N R_WALL R_RATE R_CPU R_CPUPER R_SCPU R_SCPUPER R_TOTPER R_CLIENT R_OTHER R_ERR \
  R_FAILED R_BINDS R_SRCH R_CONNS R_LERR
label() { case $1 in cold) echo "postroomd cold" ;; cache) echo "postroomd cache" ;; *) echo Dovecot ;; esac; }
port_of() { [ "$1" = dovecot ] && echo "$DC_PORT" || echo "${PR_PORT[$1]}"; }
pid_of() { [ "$1" = dovecot ] && echo "$DC_PID" || echo "${PR_PID[$1]}"; }
logsize() { [ "$COUNT_OPS" = 1 ] && stat -c %s "$SLAPD_LOG" 2>/dev/null || echo 0; }
per() { # total n scale: total * scale / n, or n/a
  awk -v t="$1" -v n="$2" -v s="$3" 'BEGIN {if (n > 0) printf "%.2f", t * s / n; else print "n/a"}'
}
run_round() { # kind (login | warmup) name clients seconds
  local kind=$1 name=$2 c=$3 secs=$4
  local port pid key="$name,$c" out=$T/round-$kind-$name-$c.out err=$T/round-$kind-$name-$c.err
  port=$(port_of "$name"); pid=$(pid_of "$name")
  local what="$c-client $([ "$kind" = warmup ] && echo "warm-up " || echo "")login round"
  sleep 1
  local c0 c1 s0 s1 b0 b1 w0 w1 l0 l1 rc client sess errs cwall
  l0=$(logsize); b0=$(h busy); c0=$(h cpu "$pid"); s0=$(h cpu "$SLAPD_PID"); w0=$(date +%s.%N)
  rm -f "$T/timing"
  bg "$PY" "$HELPER" run "$T/timing" "$ROUND_TIMEOUT" "$LOAD" login "$HOST" "$port" "$c" "$secs" \
    "$([ "$kind" = warmup ] && echo 0 || echo "$LOGINS")" "$USERS" "$USERFMT" "$PASSFMT" >"$out" 2>"$err"
  sleep 0.5  # let the servers finish closing before the second reading
  c1=$(h cpu "$pid"); s1=$(h cpu "$SLAPD_PID"); b1=$(h busy); w1=$(date +%s.%N); l1=$(logsize)
  read -r rc _ client <"$T/timing" || { rc=1; client=0; }
  read -r sess _ _ _ errs cwall <"$out" || { sess=0; errs=1; cwall=0; }
  local failed=0
  if [ "$rc" != 0 ]; then
    warn "$(label "$name"), $what: the load client exited $rc: $(head -c 300 "$err" | tr '\n' ' ')"; failed=1
  fi
  if [ "${errs:-1}" != 0 ]; then
    warn "$(label "$name"), $what: $errs errors: $(head -3 "$err" | tr '\n' ' ')"; failed=1
  fi
  if [ "${sess:-0}" = 0 ]; then warn "$(label "$name"), $what: no login succeeded"; failed=1; fi
  if ! kill -0 "$pid" 2>/dev/null; then warn "$(label "$name") died during the $what"; failed=1; fi
  if ! kill -0 "$SLAPD_PID" 2>/dev/null; then warn "slapd died during the $what"; failed=1; fi
  if [ "$kind" = warmup ]; then
    [ "${sess:-0}" -ge "$c" ] || { warn "$(label "$name"): only ${sess:-0} logins in the warm-up round, not one per user"; failed=1; }
    return "$failed"
  fi
  local n=${sess:-0}
  R_FAILED[$key]=$failed
  R_ERR[$key]=$errs
  R_N[$key]=$n
  R_WALL[$key]=$(awk -v w="$cwall" 'BEGIN {printf "%.2f", w}')
  R_RATE[$key]=$(awk -v n="$n" -v w="$cwall" 'BEGIN {printf "%.0f", (w > 0) ? n / w : 0}')
  R_CPU[$key]=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", b - a}')
  R_SCPU[$key]=$(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.2f", b - a}')
  # CPU per login in milliseconds
  R_CPUPER[$key]=$(per "${R_CPU[$key]}" "$n" 1000)
  R_SCPUPER[$key]=$(per "${R_SCPU[$key]}" "$n" 1000)
  R_TOTPER[$key]=$(per "$(awk -v a="${R_CPU[$key]}" -v b="${R_SCPU[$key]}" 'BEGIN {print a + b}')" "$n" 1000)
  R_CLIENT[$key]=$client
  R_OTHER[$key]=$(awk -v a="$b0" -v b="$b1" -v c="${R_CPU[$key]}" -v s="${R_SCPU[$key]}" -v d="$client" \
    -v t0="$w0" -v t1="$w1" 'BEGIN {o = (b - a) - c - s - d; if (o < 0) o = 0; printf "%.2f", (t1 > t0) ? o / (t1 - t0) : 0}')
  if [ "$COUNT_OPS" = 1 ]; then
    local conns binds srch unbinds lerr
    read -r conns binds srch unbinds lerr < <("$PY" "$AHELPER" ldapops "$SLAPD_LOG" "$l0" "$l1")
    R_CONNS[$key]=$(per "$conns" "$n" 1); R_BINDS[$key]=$(per "$binds" "$n" 1); R_SRCH[$key]=$(per "$srch" "$n" 1)
    R_LERR[$key]=$lerr
    [ "${lerr:-0}" = 0 ] || warn "$(label "$name"), $what: slapd answered $lerr operations with an error other than invalidCredentials"
  else
    R_CONNS[$key]=-; R_BINDS[$key]=-; R_SRCH[$key]=-; R_LERR[$key]=-
  fi
  printf '   %-15s %3s clients: %6s logins in %6ss = %6s logins/s; CPU ms/login: server %s, slapd %s; LDAP per login: %s binds, %s searches; client CPU %ss, other %s cores%s\n' \
    "$(label "$name")" "$c" "$n" "${R_WALL[$key]}" "${R_RATE[$key]}" "${R_CPUPER[$key]}" "${R_SCPUPER[$key]}" \
    "${R_BINDS[$key]}" "${R_SRCH[$key]}" "$client" "${R_OTHER[$key]}" "$([ $failed = 1 ] && echo "  ROUND FAILED")"
  return "$failed"
}

# The password check: every server must refuse a wrong password right after
# a successful (so, for the cache, remembered) login, and the old password
# once it was changed in LDAP. PW_*[name] = ok | FAILED (what went wrong).
declare -A PW_RIGHT PW_WRONG PW_OLD PW_NEW
try_login() { # name user# password -> prints accepted, refused or the error
  local out
  out=$("$LOAD" probe "$HOST" "$(port_of "$1")" "$(printf "$USERFMT" "$2")" "$3" 2>&1)
  case $out in
    ok*) echo accepted ;;
    "FAILED: PASS: -ERR"*) echo refused ;;
    *) echo "error: ${out#FAILED: }" | head -c 200 ;;
  esac
}
up() { [ "$1" = "$2" ] && echo "$1" || echo "${1^^}"; }   # outcome expected: as is, else in capitals
pw_line() { # name: the outcomes, unexpected ones in capitals
  local n=$1
  printf '%s: right password %s, wrong password %s; after the change in LDAP: old password %s, new password %s' \
    "u$PWUSER" "$(up "${PW_RIGHT[$n]:-not tried}" accepted)" "$(up "${PW_WRONG[$n]:-not tried}" refused)" \
    "$(up "${PW_OLD[$n]:-not tried}" refused)" "$(up "${PW_NEW[$n]:-not tried}" accepted)"
}
pw_line2() { # name: the second user's outcomes
  local n=$1
  printf '%s: the future password %s before the change, %s after it' \
    "u$PWUSER2" "$(up "${PW2_EARLY[$n]:-not tried}" refused)" "$(up "${PW2_NEW[$n]:-not tried}" accepted)"
}
PWUSER=1    # right, wrong, change, old, new
PWUSER2=2   # tries its future password before the admin sets it ("what the user kept typing")
declare -A PW2_EARLY PW2_NEW
STALE_OLD=0; STALE_FAIL=0
password_check() {
  local name old new new2
  old=$(printf "$PASSFMT" "$PWUSER"); new="changed-$old"; new2="changed-$(printf "$PASSFMT" "$PWUSER2")"
  say "password check: $(printf "$USERFMT" "$PWUSER") right password, wrong one, the password changed in LDAP, old, new;"
  say "  $(printf "$USERFMT" "$PWUSER2") its future password before and after the admin sets it in LDAP"
  for name in cold cache dovecot; do
    PW_RIGHT[$name]=$(try_login "$name" "$PWUSER" "$old")
    # right after a successful login: postroomd cache has it in its cache
    PW_WRONG[$name]=$(try_login "$name" "$PWUSER" "wrong-$old")
    try_login "$name" "$PWUSER2" "$(printf "$PASSFMT" "$PWUSER2")" >/dev/null
    PW2_EARLY[$name]=$(try_login "$name" "$PWUSER2" "$new2")
  done
  if set_password "$PWUSER" "$new" && set_password "$PWUSER2" "$new2"; then
    for name in cold cache dovecot; do
      PW_OLD[$name]=$(try_login "$name" "$PWUSER" "$old")
      PW_NEW[$name]=$(try_login "$name" "$PWUSER" "$new")
      PW2_NEW[$name]=$(try_login "$name" "$PWUSER2" "$new2")
    done
  else
    warn "ldappasswd failed: $(tail -2 "$T/ldappasswd.log" | tr '\n' ' ')"
  fi
  for name in cold cache dovecot; do
    printf '   %-15s %s\n   %-15s %s\n' "$(label "$name")" "$(pw_line "$name")" "" "$(pw_line2 "$name")"
    [ "${PW_RIGHT[$name]}" = accepted ] || warn "$(label "$name"): password check: right password ${PW_RIGHT[$name]}"
    [ "${PW_WRONG[$name]}" = refused ] || warn "$(label "$name"): password check: wrong password ${PW_WRONG[$name]}"
    [ "${PW2_EARLY[$name]}" = refused ] || warn "$(label "$name"): password check: a password not yet set ${PW2_EARLY[$name]}"
    [ "${PW_NEW[$name]:-accepted}" = accepted ] || warn "$(label "$name"): password check: new password ${PW_NEW[$name]}"
    # Without a credential cache a change in LDAP must take effect at once;
    # with one, a backend may keep the old credential's tag for a while (the
    # ldap backend's answer cache, [ldap] cache_ttl): reported, not a failure.
    if [ "${PW_OLD[$name]:-refused}" != refused ]; then
      if [ "$name" = cache ] && [ "${PW_OLD[$name]}" = accepted ]; then STALE_OLD=1
      else warn "$(label "$name"): password check: old password ${PW_OLD[$name]} after the change"; fi
    fi
    if [ "${PW2_NEW[$name]:-accepted}" != accepted ]; then
      if [ "$name" = cache ] && [ "${PW2_NEW[$name]}" = refused ]; then STALE_FAIL=1
      else warn "$(label "$name"): password check: a password refused before it was set, ${PW2_NEW[$name]} after"; fi
    fi
  done
}

# ---------------------------------------------------------------- main
setup_slapd
setup_postroom cold
setup_postroom cache
setup_dovecot

say "warm-up: one untimed login round per server ($USERS clients, one per user, ${WARMUP_SECONDS}s)"
for name in cold cache dovecot; do
  run_round warmup "$name" "$USERS" "$WARMUP_SECONDS" || die "$(label "$name")'s warm-up round failed"
done

say "logins: connect, USER, PASS, QUIT for ${ROUND}s per round$([ "$LOGINS" != 0 ] && echo " (at most $LOGINS)")"
for c in $CLIENTS; do
  for name in cold cache dovecot; do
    run_round login "$name" "$c" "$ROUND" || kill -0 "$(pid_of "$name")" 2>/dev/null || die "$(label "$name") is gone"
  done
done

password_check

# ---------------------------------------------------------------- summary
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN {if (a != "n/a" && b != "n/a" && b > 0) printf "%.*f", d, a / b; else print "n/a"}'; }
# A goal is judged on the unrounded ratio (6 decimals), shown to 2.
r2() { [ -n "$1" ] && [ "$1" != n/a ] && printf '%.2f' "$1" || printf '%s' "$1"; }
ok() { [ -n "${R_N[$1]:-}" ] && [ "${R_FAILED[$1]}" = 0 ]; }
echo
echo "==================== POP3 login benchmark, LDAP backend: summary ===================="
echo "machine: $NCPU cores, $(uname -r); Dovecot $(dovecot --version | cut -d' ' -f1); slapd $(dpkg-query -W -f='${Version}' slapd 2>/dev/null)"
echo "postroomd: $POSTROOMD"
echo "LDAP: private slapd on $SLAPD_URI ($([ "$LDAP_TLS" = 1 ] && echo "STARTTLS" || echo "plain LDAP")), $USERS users, {SSHA} passwords, -d $SLAPD_LOGLEVEL"
echo "a login: connect, greeting, USER u<k>@$DOMAIN, PASS, QUIT, wait for the close (empty mailbox);"
echo "         client k as user k mod $USERS; ${ROUND}s per round; logins/s over the client's wall time"
echo "postroomd cold:  [directory] auth_cache_ttl = 0 (every login asks LDAP)"
echo "postroomd cache: [directory] auth_cache_ttl default (10m: the verified-credential cache)"
echo "         both: backend = ldap, pool_size 4 (default), log_level info (default);"
echo "         the ldap backend as built $([ $LDAP_AUTH_TAG = yes ] && echo has || echo "has NO") auth_tag (what the credential cache needs)"
if [ "$DOVECOT_BIND" = userdn ]; then
  echo "Dovecot: passdb ldap, auth_bind = yes, auth_bind_userdn = uid=%n,$SLAPD_PEOPLE (a bind, no search);"
else
  echo "Dovecot: passdb ldap, auth_bind = yes, pass_filter = postroomd's address filter (a search, then a bind);"
fi
echo "         userdb static; stock process model (a login and a pop3 process per connection), auth cache off, logs logins (info)"
echo "CPU s = server process tree utime+stime (incl. reaped children: Dovecot's login and pop3 processes);"
echo "slapd s = slapd's CPU in the same round; total = (server + slapd) per login;"
echo "binds/srch = LDAP binds and searches slapd logged per login; client s = the load client's CPU;"
echo "other = cores busy with anything else (machine busy - server - slapd - client) during the round,"
echo "        averaged: other jobs on this shared ${NCPU}-core machine; noisy when large"
echo "load average at start: $LOAD0; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-7s | %-15s | %7s | %6s | %8s | %6s | %8s | %7s | %8s | %8s | %5s | %5s | %8s | %5s | %6s\n' \
  clients server logins "wall s" "logins/s" "CPU s" "ms/login" "slapd s" "slapd ms" "total ms" binds srch "client s" other errors
printf -- '--------+-----------------+---------+--------+----------+--------+----------+---------+----------+----------+-------+-------+----------+-------+-------\n'
for c in $CLIENTS; do
  for name in cold cache dovecot; do
    k="$name,$c"
    [ -n "${R_N[$k]:-}" ] || continue
    printf '%-7s | %-15s | %7s | %6s | %8s | %6s | %8s | %7s | %8s | %8s | %5s | %5s | %8s | %5s | %6s%s\n' \
      "$c" "$(label "$name")" "${R_N[$k]}" "${R_WALL[$k]}" "${R_RATE[$k]}" "${R_CPU[$k]}" "${R_CPUPER[$k]}" \
      "${R_SCPU[$k]}" "${R_SCPUPER[$k]}" "${R_TOTPER[$k]}" "${R_BINDS[$k]}" "${R_SRCH[$k]}" "${R_CLIENT[$k]}" \
      "${R_OTHER[$k]}" "${R_ERR[$k]}" "$([ "${R_FAILED[$k]}" = 1 ] && echo "  FAILED")"
  done
done
echo
echo "ratios (logins/s: higher is better for postroomd; CPU per login: lower is better):"
for c in $CLIENTS; do
  for pair in "cache dovecot" "cold dovecot" "cache cold"; do
    set -- $pair
    a="$1,$c"; b="$2,$c"
    if ok "$a" && ok "$b"; then
      printf '  %3s clients  %-15s / %-15s logins/s %6sx   server CPU per login %6sx   with slapd %6sx\n' "$c" \
        "$(label "$1")" "$(label "$2")" "$(ratio "${R_RATE[$a]}" "${R_RATE[$b]}")" \
        "$(ratio "${R_CPUPER[$a]}" "${R_CPUPER[$b]}")" "$(ratio "${R_TOTPER[$a]}" "${R_TOTPER[$b]}")"
    else
      printf '  %3s clients  %-15s / %-15s n/a (a round failed)\n' "$c" "$(label "$1")" "$(label "$2")"
    fi
  done
done
echo
echo "password check (the wrong password right after a successful login, so with postroomd cache while"
echo "                that login is in the credential cache):"
for name in cold cache dovecot; do
  printf '  %-15s %s\n  %-15s %s\n' "$(label "$name")" "$(pw_line "$name")" "" "$(pw_line2 "$name")"
done
echo
echo "goal (measured at 10 clients, n/a without such a round):"
verdict() { [ -z "$1" ] || [ "$1" = n/a ] && echo n/a || { awk "BEGIN {exit !($1 $2)}" && echo met || echo "NOT met"; }; }
g=""; gc=""
if ok cache,10 && ok dovecot,10; then g=$(ratio "${R_RATE[cache,10]}" "${R_RATE[dovecot,10]}" 6); fi
if ok cache,10 && ok cold,10; then gc=$(ratio "${R_RATE[cache,10]}" "${R_RATE[cold,10]}"); fi
pw_ok=n/a
[ -n "${PW_WRONG[cache]:-}" ] && { [ "${PW_WRONG[cache]}" = refused ] && pw_ok=met || pw_ok="NOT met"; }
printf '  %-58s %-8s %s\n' ">= 10x Dovecot's logins/s with the cache" "$(r2 "${g:-n/a}")${g:+x}" "$(verdict "$g" ">= 10")"
printf '  %-58s %-8s %s\n' "a cached login still checks the password (wrong one refused)" "" "$pw_ok"
if [ "$STALE_OLD" = 1 ] || [ "$STALE_FAIL" = 1 ]; then
  echo "  NOTE: postroomd cache did not see a password change in LDAP at once (postroomd cold and Dovecot did):"
  [ "$STALE_OLD" = 1 ] &&
    echo "        - $(printf "$USERFMT" "$PWUSER")'s OLD password was still accepted right after the change;"
  [ "$STALE_FAIL" = 1 ] &&
    echo "        - $(printf "$USERFMT" "$PWUSER2")'s NEW password was refused after the change, because it had failed before it."
  echo "        A cached success or failure stays valid until the backend's auth_tag changes; where the ldap"
  echo "        backend answers auth_tag from a cache of its own ([ldap] cache_ttl, default 5m), a password"
  echo "        changed in LDAP is seen only once that entry expires."
fi
if [ -n "$gc" ] && [ "$gc" != n/a ]; then
  printf '  %-58s %-8s\n' "(the cache's own effect: postroomd cache / cold)" "${gc}x"
  if awk -v r="$gc" 'BEGIN {exit !(r < 1.3)}'; then
    echo "  NOTE: the cache does not make LDAP logins faster (cache/cold ${gc}x$(
      [ "$COUNT_OPS" = 1 ] && printf '; LDAP binds per login: cache %s, cold %s' "${R_BINDS[cache,10]}" "${R_BINDS[cold,10]}")):"
    echo "        dir_authenticate only uses the credential cache when the backend has an auth_tag hook"
    echo "        (directory/directory.h); the ldap backend (directory/dir_ldap.c) has none, so every"
    echo "        login searches and binds on the LDAP server whatever auth_cache_ttl says."
  fi
fi
# What the servers logged at warning level or worse is a problem: the round
# it happened in may not measure what it says.
log_notes() { # name file pattern
  local n; n=$(grep -cE "$3" "$2" 2>/dev/null)
  [ "${n:-0}" -gt 0 ] || return 0
  warn "$1 logged $n warnings or errors ($2)"
  grep -E "$3" "$2" | head -3 | cut -c1-200 | sed 's/^/   | /'
}
echo
log_notes Dovecot "$DC/dovecot.log" ': (Warning|Error|Fatal|Panic):'
log_notes "postroomd cold" "$T/pr-cold/log" '^[^ ]+ postroomd\[[0-9]+\] (WARNING|ERROR) '
log_notes "postroomd cache" "$T/pr-cache/log" '^[^ ]+ postroomd\[[0-9]+\] (WARNING|ERROR) '
if [ ${#PROBLEMS[@]} -gt 0 ]; then
  echo
  echo "problems seen:"
  printf '  - %s\n' "${PROBLEMS[@]}"
  exit 1
fi
exit 0
