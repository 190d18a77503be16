"""Postroom's SMTP client (service/smtp/smtp_client.c, driven by the
pr_smtpsend tool) against a real postroomd as the peer: delivery to local
users byte-exact with dot-stuffing and 8-bit content, one transaction for
several recipients, a 550 next to an accepted recipient, connection reuse,
SIZE refused before sending, STARTTLS under policies may and encrypt
(verified against the peer's certificate, and refused for a wrong name),
implicit TLS, AUTH PLAIN on the submission port, no credentials in clear,
DSN parameters. Two small standard-library peers cover what postroomd will
not do on demand: drop the connection mid-transaction and stall."""
import os
import socket
import subprocess
import threading
import unittest

import prtest
from prtest import HOST, Server, split_stored

SMTPSEND = os.environ.get("PR_SMTPSEND", "build/tests/pr_smtpsend")
PW = {"alice@example.test": "alice-secret-1", "bob@example.test": "bob-secret-2"}


def smtpsend(port, rcpts, message, *args, host=HOST, timeout=120):
    """Run pr_smtpsend; returns (exit code, {key: value} of its output, text)."""
    cmd = [SMTPSEND, "--helo", "client.example.net", "--from", "sender@example.net"]
    for r in rcpts:
        cmd += ["--to", r]
    cmd += list(args) + [host, str(port)]
    p = subprocess.run(cmd, input=message, capture_output=True, timeout=timeout)
    out = p.stdout.decode(errors="replace")
    res = {}
    for line in out.splitlines():
        k, _, v = line.partition(": ")
        res.setdefault(k, v)
    return p.returncode, res, out + p.stderr.decode(errors="replace")


class SmtpClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("smtpclient", extra={"smtp.max_message_size": "1m"})
        for addr, pw in PW.items():
            cls.srv.add_user(addr, pw)
        cls.srv.start()
        cls.cert = os.path.join(cls.srv.data_dir, "tls", "cert.pem")
        cls.pwfile = os.path.join(cls.srv.dir, "alice.pw")
        with open(cls.pwfile, "w") as f:
            f.write(PW["alice@example.test"] + "\n")

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text())
        cls.srv.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc

    def count(self, addr):
        return self.srv.mailbox_count(addr)

    def last(self, addr):
        return split_stored(self.srv.message(addr, self.count(addr)))[1]

    def test_plain_delivery_two_recipients(self):
        a, b = "alice@example.test", "bob@example.test"
        before = (self.count(a), self.count(b))
        msg = (b"From: sender@example.net\r\nSubject: client\r\n\r\n"
               b".starts with a dot\r\n..two dots\r\n.\r\nend\r\n")
        rc, res, out = smtpsend(self.srv.smtp_port, [a, b], msg)
        self.assertEqual(rc, 0, out)
        self.assertEqual(res["tls"], "none")
        self.assertIn("PIPELINING", res["caps"])
        self.assertTrue(res["rcpt " + a].startswith("250 2.0.0"), out)
        self.assertTrue(res["rcpt " + b].startswith("250 2.0.0"), out)
        self.assertEqual(res["usable"], "1")
        self.assertEqual((self.count(a), self.count(b)), (before[0] + 1, before[1] + 1))
        self.assertEqual(self.last(a), msg)
        self.assertEqual(self.last(b), msg)

    def test_lf_message_and_8bit(self):
        a = "bob@example.test"
        before = self.count(a)
        msg = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\n\nGrüße aus der Schule\n".encode()
        rc, res, out = smtpsend(self.srv.smtp_port, [a], msg)
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.count(a), before + 1)
        self.assertEqual(self.last(a), msg.replace(b"\n", b"\r\n"))

    def test_unknown_recipient_next_to_accepted(self):
        a = "alice@example.test"
        before = self.count(a)
        rc, res, out = smtpsend(self.srv.smtp_port, ["nobody@example.test", a],
                                b"Subject: mixed\r\n\r\nx\r\n")
        self.assertEqual(rc, 1, out)
        self.assertTrue(res["rcpt nobody@example.test"].startswith("550 5.1.1"), out)
        self.assertTrue(res["rcpt " + a].startswith("250 2.0.0"), out)
        self.assertEqual(res["usable"], "1")
        self.assertEqual(self.count(a), before + 1)

    def test_connection_reuse(self):
        a = "alice@example.test"
        before = self.count(a)
        rc, res, out = smtpsend(self.srv.smtp_port, [a], b"Subject: again\r\n\r\nx\r\n",
                                "--count", "3")
        self.assertEqual(rc, 0, out)
        self.assertEqual(out.count("rcpt %s: 250" % a), 3, out)
        self.assertEqual(self.count(a), before + 3)
        # one session: a single connection in the server's log for this EHLO
        self.assertNotIn("reset: failed", out)

    def test_size_refused_before_sending(self):
        a = "alice@example.test"
        before = self.count(a)
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1100
        rc, res, out = smtpsend(self.srv.smtp_port, [a], big)
        self.assertEqual(rc, 1, out)
        self.assertTrue(res["rcpt " + a].startswith("552 5.3.4"), out)
        self.assertEqual(res["usable"], "1")
        self.assertEqual(self.count(a), before)

    def test_starttls_may(self):
        a = "alice@example.test"
        before = self.count(a)
        rc, res, out = smtpsend(self.srv.smtp_port, [a], b"Subject: tls\r\n\r\nx\r\n",
                                "--tls", "may")
        self.assertEqual(rc, 0, out)
        self.assertTrue(res["tls"].startswith("TLSv1."), out)
        self.assertNotIn("STARTTLS", res["caps"])  # asked again after TLS
        self.assertEqual(self.count(a), before + 1)

    def test_starttls_encrypt_verified(self):
        a = "alice@example.test"
        before = self.count(a)
        rc, res, out = smtpsend(self.srv.smtp_port, [a], b"Subject: tls\r\n\r\nx\r\n",
                                "--tls", "encrypt", "--ca", self.cert,
                                "--name", "mail.example.test")
        self.assertEqual(rc, 0, out)
        self.assertTrue(res["tls"].startswith("TLSv1."), out)
        self.assertEqual(self.count(a), before + 1)
        # the same certificate does not name another host
        rc, res, out = smtpsend(self.srv.smtp_port, [a], b"Subject: tls\r\n\r\nx\r\n",
                                "--tls", "encrypt", "--ca", self.cert,
                                "--name", "other.example.test")
        self.assertEqual(rc, 2, out)
        self.assertTrue(res["open"].startswith("451 4.7.5 TLS handshake with other.example.test"
                                               " failed: certificate verify failed"), out)
        # and without the CA it is not trusted
        rc, res, out = smtpsend(self.srv.smtp_port, [a], b"Subject: tls\r\n\r\nx\r\n",
                                "--tls", "encrypt", "--verify", "--name", "mail.example.test")
        self.assertEqual(rc, 2, out)
        self.assertIn("certificate verify failed", res["open"])
        self.assertEqual(self.count(a), before + 1)

    def test_auth_plain_submission(self):
        a, b = "alice@example.test", "bob@example.test"
        before = self.count(b)
        rc, res, out = smtpsend(self.srv.submission_port, [b], b"Subject: auth\r\n\r\nx\r\n",
                                "--from", a, "--tls", "encrypt", "--user", a,
                                "--password-file", self.pwfile)
        self.assertEqual(rc, 0, out)
        self.assertIn("AUTH", res["caps"])
        self.assertEqual(self.count(b), before + 1)
        self.assertIn(b"Return-Path: <alice@example.test>", self.srv.message(b, self.count(b)))

    def test_auth_implicit_tls(self):
        a, b = "alice@example.test", "bob@example.test"
        before = self.count(b)
        rc, res, out = smtpsend(self.srv.smtps_port, [b], b"Subject: smtps\r\n\r\nx\r\n",
                                "--from", a, "--tls", "implicit", "--user", a,
                                "--password-file", self.pwfile)
        self.assertEqual(rc, 0, out)
        self.assertTrue(res["tls"].startswith("TLSv1."), out)
        self.assertEqual(self.count(b), before + 1)

    def test_auth_refused(self):
        bad = os.path.join(self.srv.dir, "bad.pw")
        with open(bad, "w") as f:
            f.write("wrong-password\n")
        rc, res, out = smtpsend(self.srv.submission_port, ["bob@example.test"], b"x\r\n",
                                "--from", "alice@example.test", "--tls", "encrypt",
                                "--user", "alice@example.test", "--password-file", bad)
        self.assertEqual(rc, 2, out)
        self.assertTrue(res["open"].startswith("535 5.7.8"), out)

    def test_no_credentials_in_clear(self):
        # policy none: the server offers no AUTH without TLS, nothing is sent
        rc, res, out = smtpsend(self.srv.submission_port, ["bob@example.test"], b"x\r\n",
                                "--user", "alice@example.test", "--password-file", self.pwfile)
        self.assertEqual(rc, 2, out)
        self.assertTrue(res["open"].startswith("451 4.7.4"), out)
        self.assertNotIn("alice-secret", self.srv.log_text())

    def test_dsn_parameters(self):
        # sent only when the server offers DSN; either way the mail arrives
        a = "alice@example.test"
        before = self.count(a)
        rc, res, out = smtpsend(self.srv.smtp_port, [a], b"Subject: dsn\r\n\r\nx\r\n",
                                "--notify", "success,failure", "--orcpt", "rfc822;" + a,
                                "--ret", "hdrs", "--envid", "Q1+x")
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.count(a), before + 1)

    def test_connection_refused(self):
        port = prtest.free_port()
        rc, res, out = smtpsend(port, ["alice@example.test"], b"x\r\n")
        self.assertEqual(rc, 2, out)
        self.assertTrue(res["open"].startswith("451 4.4.1 Cannot connect to 127.0.0.1"), out)


class FakePeer(threading.Thread):
    """A one-connection SMTP peer from a script: for each line we expect a
    prefix of, the reply to send; None closes the connection, "" stalls."""

    def __init__(self, script):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.script = script
        self.received = b""
        self.stop = threading.Event()

    def run(self):
        conn, _ = self.sock.accept()
        conn.settimeout(30)
        try:
            conn.sendall(b"220 fake.example.test ESMTP\r\n")
            buf = b""
            for expect, reply in self.script:
                while b"\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                    self.received += chunk
                line, buf = buf.split(b"\r\n", 1)
                assert line.startswith(expect), (line, expect)
                if reply is None:
                    # hang up without a reset: read what is still coming first
                    conn.shutdown(socket.SHUT_WR)
                    conn.settimeout(2)
                    while conn.recv(65536):
                        pass
                    return
                if reply == b"":
                    self.stop.wait(30)
                    return
                conn.sendall(reply)
        except (OSError, AssertionError):
            pass
        finally:
            conn.close()
            self.sock.close()


class SmtpClientPeerTest(unittest.TestCase):
    EHLO = b"250-fake.example.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"

    def test_dropped_mid_transaction(self):
        # pipelined group: the peer answers MAIL and one RCPT, then hangs up
        peer = FakePeer([(b"EHLO", self.EHLO),
                         (b"MAIL FROM:<sender@example.net>", b"250 2.1.0 Ok\r\n"),
                         (b"RCPT TO:<a@", b"250 2.1.5 Ok\r\n"),
                         (b"RCPT TO:<b@", None)])
        peer.start()
        rc, res, out = smtpsend(peer.port, ["a@remote.test", "b@remote.test"], b"x\r\n")
        peer.join(30)
        self.assertEqual(rc, 1, out)
        for r in ("a", "b"):
            self.assertTrue(res["rcpt %s@remote.test" % r].startswith(
                "451 4.4.2 Connection lost with 127.0.0.1"), out)
        self.assertEqual(res["usable"], "0")

    def test_stall_after_data(self):
        peer = FakePeer([(b"EHLO", self.EHLO),
                         (b"MAIL", b"250 2.1.0 Ok\r\n"),
                         (b"RCPT", b"250 2.1.5 Ok\r\n"),
                         (b"DATA", b"354 go\r\n"),
                         (b"x", b""),
                         ])
        peer.start()
        rc, res, out = smtpsend(peer.port, ["a@remote.test"], b"x\r\n", "--timeout", "2")
        peer.stop.set()
        peer.join(30)
        self.assertEqual(rc, 1, out)
        self.assertTrue(res["rcpt a@remote.test"].startswith(
            "451 4.4.2 Timeout talking to 127.0.0.1 after end of data"), out)
        self.assertEqual(res["usable"], "0")
        self.assertIn(b"\r\nx\r\n.\r\n", b"\r\n" + peer.received.split(b"DATA\r\n", 1)[1])


if __name__ == "__main__":
    prtest.main()
