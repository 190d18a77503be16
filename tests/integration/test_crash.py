"""Durability under crashes: 20 concurrent senders while postroomd is killed
with SIGKILL several times mid-stream and restarted. Every message that got
250 after DATA must be in its recipient's mailbox exactly as sent, and
nothing half-written may appear."""
import hashlib
import random
import smtplib
import socket
import threading
import time
import unittest

import prtest
from prtest import HOST, Server, split_stored

SENDERS = 20
USERS = ["u%d@example.test" % i for i in range(5)]
KILLS = 4


class CrashTest(unittest.TestCase):
    def test_kill9_loses_nothing_acknowledged(self):
        srv = Server("crash")
        for u in USERS:
            srv.add_user(u, "pw-" + u)
        srv.start()
        acked = []  # (user, body)
        lock = threading.Lock()
        stop = threading.Event()

        def sender(n):
            rnd = random.Random(n)
            seq = 0
            while not stop.is_set():
                seq += 1
                user = rnd.choice(USERS)
                size = rnd.choice([200, 3000, 40000, 300000])
                token = "sender%d-msg%d" % (n, seq)
                body = ("Subject: %s\r\n\r\n" % token).encode() + \
                    (hashlib.sha256(token.encode()).hexdigest() + "\r\n").encode() * (size // 66 + 1)
                try:
                    s = smtplib.SMTP(HOST, srv.smtp_port, timeout=20)
                    s.ehlo("crash")
                    s.mail("s%d@example.net" % n)
                    s.rcpt(user)
                    code, _ = s.data(body)
                    if code == 250:
                        with lock:
                            acked.append((user, body))
                    s.close()
                    time.sleep(0.3)  # keeps the later byte-exact check short
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.05)  # server down: try again

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
        for t in threads:
            t.start()
        try:
            for _ in range(KILLS):
                time.sleep(random.uniform(1.0, 2.5))
                srv.kill9()
                time.sleep(0.3)
                srv.start()
            time.sleep(1.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        self.assertTrue(srv.stop() == 0)

        self.assertGreater(len(acked), 50, "too few messages got through to prove anything")
        stored = {}
        for u in USERS:
            n = srv.mailbox_count(u)
            bodies = []
            for uid in range(1, n + 1):
                raw = srv.message(u, uid)
                prefix, rest = split_stored(raw)
                self.assertTrue(prefix.startswith(b"Return-Path: <"), prefix[:80])
                bodies.append(rest)
            stored[u] = bodies
        for u, body in acked:
            self.assertIn(body, stored[u], "an acknowledged message is missing")
        # Everything stored is whole: each body is one of the messages sent.
        for u, bodies in stored.items():
            for b in bodies:
                token = b.split(b"\r\n", 1)[0][len(b"Subject: "):].decode()
                line = (hashlib.sha256(token.encode()).hexdigest() + "\r\n").encode()
                self.assertTrue(b.endswith(line), "a stored message is truncated")
        print("acknowledged %d messages across %d kills; all present" % (len(acked), KILLS))
        srv.cleanup()


if __name__ == "__main__":
    prtest.main()
