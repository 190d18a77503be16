#!/usr/bin/env python3
"""Idle SMTP sessions against a real postroomd: 200 connections that have
read the greeting and the EHLO reply, then say nothing. Each may cost at
most 64 KiB of the server's memory (PSS of the process, after minus before,
per session; not measured on sanitizer builds, whose allocator is not the
product's). While they wait, another client's mail goes through, and
afterwards every one of them still answers."""
import os
import smtplib
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prtest  # noqa: E402
from prtest import HOST, Server  # noqa: E402

IDLE = 200
MAX_KIB = 64
SANITIZED = os.environ.get("PR_SANITIZE", "OFF").upper() in ("1", "ON", "YES", "TRUE")


def pss_kib(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise AssertionError("no Pss line for pid %d" % pid)


def read_reply(sock):
    """One whole SMTP reply (all its lines); its code."""
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("closed; got %r" % buf)
        buf += chunk
        lines = buf.split(b"\r\n")
        # complete when the last full line is "ddd " (not "ddd-")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                return int(line[:3])


class IdleSessionsTest(unittest.TestCase):
    def setUp(self):
        # All sessions come from 127.0.0.1: past the per-address limit (50).
        self.srv = Server("idle", extra={"server.limit_exempt_networks": "127.0.0.0/8",
                                         "server.log_level": "warning"})
        self.srv.start()
        self.srv.add_user("alice@example.test", "alice-secret-1")
        self.idle = []

    def tearDown(self):
        for s in self.idle:
            s.close()
        self.assertEqual(self.srv.stop(), 0)
        self.srv.cleanup()

    def open_idle(self, n):
        for _ in range(n):
            s = socket.create_connection((HOST, self.srv.smtp_port), timeout=30)
            self.assertEqual(read_reply(s), 220)
            s.sendall(b"EHLO idle.example.net\r\n")
            self.assertEqual(read_reply(s), 250)
            self.idle.append(s)

    def test_idle_sessions_cost_little_and_hold_up_nobody(self):
        # One delivery first: the store and directory connections a session
        # opens on first use are the server's, not the idle sessions'.
        self.srv.deliver(["alice@example.test"], b"Subject: warm up\r\n\r\nwarm up\r\n")
        pid = self.srv.proc.pid
        time.sleep(0.5)
        before = pss_kib(pid)
        self.open_idle(IDLE)
        time.sleep(0.5)
        after = pss_kib(pid)
        per_session = (after - before) / IDLE
        print("PSS %d KiB -> %d KiB with %d idle sessions: %.1f KiB each"
              % (before, after, IDLE, per_session))

        # With all of them open, mail goes through at once.
        t0 = time.monotonic()
        with smtplib.SMTP(HOST, self.srv.smtp_port, timeout=30) as c:
            c.ehlo("busy.example.net")
            c.sendmail("sender@example.net", ["alice@example.test"],
                       b"Subject: past the idle ones\r\n\r\nhello\r\n")
        self.assertLess(time.monotonic() - t0, 10)
        prtest.wait_for("both messages stored",
                        lambda: self.srv.mailbox_count("alice@example.test") == 2)

        # None of them was dropped: each answers.
        for s in self.idle:
            s.sendall(b"NOOP\r\n")
        for s in self.idle:
            self.assertEqual(read_reply(s), 250)

        if SANITIZED:
            print("sanitizer build: the %d KiB limit is not checked" % MAX_KIB)
        else:
            self.assertLessEqual(per_session, MAX_KIB)


if __name__ == "__main__":
    prtest.main()
