"""Shared harness for integration tests: start a real postroomd on loopback
with a temporary data dir and free ports, manage users with the real
`postroom` CLI, and stop it by its PID. Standard library only."""
import os
import shutil
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

POSTROOMD = os.environ.get("POSTROOMD", "build/service/postroomd")
POSTROOM = os.environ.get("POSTROOM", "build/admin/postroom")
TMP_ROOT = os.environ.get("PR_TEST_TMP", tempfile.gettempdir())
HOST = "127.0.0.1"


_given_ports = set()


def free_port():
    """A port nobody listens on now (the daemon binds it right after), and
    never one handed out before in this process: the kernel may offer the
    same free port twice in a row, and one config must not get it twice."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port


def wait_port(port, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


def closed_port():
    """A loopback UDP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_port_on(*hosts):
    """A TCP port free on every one of hosts (loopback addresses), for
    servers that share a port at different addresses (remote MX hosts)."""
    for _ in range(100):
        port = free_port()
        ok = True
        for h in hosts:
            with socket.socket() as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no common free port")


def wait_for(what, cond, timeout=30.0):
    """Poll cond until it returns something true (returned); fail after
    timeout seconds naming what was awaited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def store_count(srv, sql):
    """One number from srv's store (read-only, beside the daemon)."""
    db = sqlite3.connect(os.path.join(srv.data_dir, "store.db"), timeout=10)
    try:
        return db.execute(sql).fetchone()[0]
    finally:
        db.close()


def queue_rows(srv):
    """Recipients still in srv's outbound queue (any state)."""
    return store_count(srv, "SELECT count(*) FROM queue_rcpts")


def stored_messages(srv):
    """Messages in srv's mailboxes."""
    return store_count(srv, "SELECT count(*) FROM messages")


class Server:
    """One postroomd with its own data dir, config and ports."""

    def __init__(self, name="t", extra=None, domains="example.test, staff.example.test",
                 mx_listen=()):
        """mx_listen: more "addr:port" endpoints for the MX service, e.g. a
        remote MX at 127.0.0.2:PORT for outbound tests."""
        os.makedirs(TMP_ROOT, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="postroom-%s-" % name, dir=TMP_ROOT)
        self.data_dir = os.path.join(self.dir, "data")
        self.smtp_port = free_port()
        self.submission_port = free_port()
        self.smtps_port = free_port()
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        self.pop2_port = free_port()  # only used when a test turns POP2 on
        self.conf = os.path.join(self.dir, "postroom.conf")
        self.log = os.path.join(self.dir, "postroomd.log")
        self.proc = None
        sections = {
            "server": {
                "hostname": "mail.example.test",
                "domains": domains,
                "data_dir": self.data_dir,
                "log": self.log,
                "log_level": "debug",
            },
            "smtp": {
                "listen": ", ".join(["%s:%d" % (HOST, self.smtp_port)] + list(mx_listen)),
                "submission": "%s:%d" % (HOST, self.submission_port),
                "smtps": "%s:%d" % (HOST, self.smtps_port),
                "relay_networks": "",
            },
            "pop3": {
                "listen": "%s:%d" % (HOST, self.pop3_port),
                "pop3s": "%s:%d" % (HOST, self.pop3s_port),
            },
            # Tests never leave loopback: DNS goes to a closed loopback port
            # (every lookup fails at once, mail stays queued) unless a test
            # starts its own dnsmasq (tests/integration/dnstest.py).
            "outbound": {
                "dns_servers": "127.0.0.1:%d" % closed_port(),
            },
        }
        for key, value in (extra or {}).items():
            sec, k = key.split(".", 1)
            sections.setdefault(sec, {})[k] = value
        with open(self.conf, "w") as f:
            for sec, kv in sections.items():
                f.write("[%s]\n" % sec)
                for k, v in kv.items():
                    f.write("%s = %s\n" % (k, v))

    def cli(self, *args, input=None, check=True):
        r = subprocess.run([POSTROOM, "-c", self.conf] + list(args), input=input,
                           capture_output=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError("postroom %s failed (%d): %s" %
                                 (" ".join(args), r.returncode, r.stderr.decode(errors="replace")))
        return r

    def add_user(self, address, password):
        self.cli("user", "add", address, "--password-stdin", input=(password + "\n").encode())

    def start(self, preexec_fn=None):
        """preexec_fn: run in the child before postroomd (e.g. setrlimit)."""
        with open(self.log + ".stderr", "ab") as err:
            self.proc = subprocess.Popen([POSTROOMD, "-c", self.conf, "-f"],
                                         stdout=subprocess.DEVNULL, stderr=err,
                                         preexec_fn=preexec_fn)
        try:
            wait_port(self.smtp_port)
        except RuntimeError:
            self.proc.kill()
            raise RuntimeError("postroomd did not start:\n" + self.log_text())
        return self

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("postroomd did not stop on %s" % sig)
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def log_text(self):
        out = ""
        for p in (self.log, self.log + ".stderr"):
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    out += f.read()
        return out

    def deliver(self, rcpts, body, sender="sender@example.net", helo="client.example.net"):
        """Deliver body (bytes, CRLF lines) over SMTP on the MX port; asserts
        every recipient was accepted. 8-bit bodies go with BODY=8BITMIME."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        opts = ["BODY=8BITMIME"] if any(b > 127 for b in body) else []
        with smtplib.SMTP(HOST, self.smtp_port, timeout=120) as s:
            s.ehlo(helo)
            refused = s.sendmail(sender, rcpts, body, mail_options=opts)
        if refused:
            raise AssertionError("recipients refused: %r" % refused)

    def mailbox_count(self, address):
        """Messages in the INBOX, per `postroom mailbox show`."""
        out = self.cli("mailbox", "show", address).stdout.decode()
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == "INBOX":
                return int(parts[1])
        return 0

    def message(self, address, uid, folder=None):
        args = ["mailbox", "cat", address, str(uid)] + ([folder] if folder else [])
        return self.cli(*args).stdout

    def cleanup(self):
        if self.proc:
            self.stop()
        if os.environ.get("PR_KEEP_TMP") is None:
            shutil.rmtree(self.dir, ignore_errors=True)


def tls_context():
    """A client TLS context that accepts the server's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def split_stored(raw):
    """Split a stored message into (trace header prefix lines, original)."""
    lines = raw.split(b"\r\n")
    i = 0
    while i < len(lines) and (lines[i].startswith(b"Return-Path:") or lines[i].startswith(b"Received:")
                              or lines[i].startswith(b"\t")):
        i += 1
    return b"\r\n".join(lines[:i]) + b"\r\n", b"\r\n".join(lines[i:])


def main():
    unittest.main(verbosity=2, buffer=False)
