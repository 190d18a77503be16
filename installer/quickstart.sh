#!/usr/bin/env bash
# Quick start on a fresh Debian/Ubuntu machine: install what is missing,
# build, write run/postroom.conf for example.test on loopback ports
# (SMTP 2525, submission 2587, SMTPS 2465, POP3 2110, POP3S 2995), create demo@example.test with a
# random password, and run postroomd in the foreground (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PKGS="build-essential cmake ninja-build pkg-config openssl swaks
      libapr1-dev libaprutil1-dev libsqlite3-dev libssl-dev libinih-dev libldap-dev libcmocka-dev
      libc-ares-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "Installing:$missing"
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

cmake -S "$ROOT" -B build/release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release
POSTROOMD=$ROOT/build/release/service/postroomd
POSTROOM=$ROOT/build/release/admin/postroom

mkdir -p run/data
CONF=$ROOT/run/postroom.conf
cat > "$CONF" <<CONF
; Written by installer/quickstart.sh: a local trial on loopback ports.
[server]
hostname = mail.example.test
domains = example.test
data_dir = $ROOT/run/data
log = stderr

[smtp]
listen = 127.0.0.1:2525
submission = 127.0.0.1:2587
smtps = 127.0.0.1:2465
relay_networks =

[pop3]
listen = 127.0.0.1:2110
pop3s = 127.0.0.1:2995
CONF
"$POSTROOMD" -c "$CONF" --check

PASSWORD=$(openssl rand -base64 12 | tr -d '/+=' | cut -c1-12)
if "$POSTROOM" -c "$CONF" user list | grep -qx 'demo@example.test'; then
  printf '%s\n' "$PASSWORD" | "$POSTROOM" -c "$CONF" user passwd demo@example.test --password-stdin
else
  printf '%s\n' "$PASSWORD" | "$POSTROOM" -c "$CONF" user add demo@example.test --password-stdin
fi

cat <<MSG

Postroom is starting on 127.0.0.1 for the domain example.test.
  user:      demo@example.test
  password:  $PASSWORD

Send a test message (in another terminal):
  swaks --server 127.0.0.1:2525 --from friend@example.net --to demo@example.test
Or submit as demo over STARTTLS with authentication:
  swaks --server 127.0.0.1:2587 -tls --auth PLAIN --auth-user demo@example.test \\
        --auth-password '$PASSWORD' --from demo@example.test --to demo@example.test
Then look at the mailbox:
  $POSTROOM -c $CONF mailbox show demo@example.test
or read it over POP3 with TLS (any mail program: server 127.0.0.1, port 2995, SSL):
  curl -k --user 'demo@example.test:$PASSWORD' pop3s://127.0.0.1:2995/1

Press Ctrl-C to stop.
MSG
exec "$POSTROOMD" -c "$CONF" -f
