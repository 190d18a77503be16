# shellcheck shell=bash
# Shell helpers shared by tests/bench/smtp.sh and relay.sh: sourced, not run.
# They use the caller's globals: HOST (127.0.0.1, the only address the
# benchmarks use), PROBLEMS (an array, for warn), and for the Postfix ones
# T (the temp directory), PF (= $T/postfix: the private instance's
# directory, where control.log goes), PF_CONF (its config directory), PF_Q
# (its queue directory), PF_PORT (its listener) and PF_MASTER (its master's
# PID: set by postfix_start, cleared by postfix_stop).

say() { printf '== %s\n' "$*"; }
warn() { printf '!! %s\n' "$*" >&2; PROBLEMS+=("$*"); }
die() { printf '!! FATAL: %s\n' "$*" >&2; exit 1; }

stop_pid() { # pid [seconds]: SIGTERM, wait (bounded), then SIGKILL
  local pid=$1 secs=${2:-30} i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < secs * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then warn "pid $pid ignored SIGTERM for ${secs}s; SIGKILL"; kill -KILL "$pid" 2>/dev/null; fi
  wait "$pid" 2>/dev/null || true
}

wait_port() { # port seconds: wait until something accepts on HOST:port
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Installs the Debian packages not installed yet; the package scripts
# may not start services (the system's own Postfix stays down).
install_missing() {
  local missing="" p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  say "installing:$missing"
  # Keep the package scripts from starting the system's own Postfix.
  local prc=/usr/sbin/policy-rc.d made_prc=0
  if [ ! -e $prc ]; then printf '#!/bin/sh\nexit 101\n' >$prc; chmod 755 $prc; made_prc=1; fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  local rc=$?
  [ $made_prc = 1 ] && rm -f $prc
  return $rc
}

# A private Postfix instance (postfix -c PF_CONF), watched by its master's PID.
postfix_start() {
  postfix -c "$PF_CONF" start >>"$PF/control.log" 2>&1 || return 1
  local i
  for ((i = 0; i < 100; i++)); do
    PF_MASTER=$(tr -dc 0-9 <"$PF_Q/pid/master.pid" 2>/dev/null)
    [ -n "$PF_MASTER" ] && kill -0 "$PF_MASTER" 2>/dev/null && break
    sleep 0.1
  done
  [ -n "$PF_MASTER" ] && wait_port "$PF_PORT" 30
}
postfix_stop() {
  [ -n "$PF_CONF" ] || return 0
  if [ -n "$PF_MASTER" ] && kill -0 "$PF_MASTER" 2>/dev/null; then
    postfix -c "$PF_CONF" stop >>"$T/postfix/control.log" 2>&1 || true
    local i
    for ((i = 0; i < 300; i++)); do kill -0 "$PF_MASTER" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PF_MASTER" 2>/dev/null; then stop_pid "$PF_MASTER" 10; fi
  fi
  PF_MASTER=""
}
