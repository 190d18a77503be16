"""SMTP server against a real postroomd with real clients (smtplib, raw
sockets, swaks, curl): delivery to users, aliases and lists, relay refusal
including the classic tricks, SIZE, pipelining, STARTTLS, AUTH, BDAT, dot
stuffing, 8-bit and 20 MB byte-exact content, smuggling, STARTTLS injection,
sender ownership on submission, limits and error replies."""
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import unittest

import prtest
from prtest import HOST, Server, split_stored

PW = {"alice@example.test": "alice-secret-1", "bob@example.test": "bob-secret-2",
      "head@example.test": "head-secret-3", "pupil@example.test": "pupil-secret-4",
      "carol@staff.example.test": "carol-secret-5"}


def tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Raw:
    """A line-level SMTP client for what smtplib will not do."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; buffered %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """One (possibly multi-line) reply: (code, last line text, all lines)."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return int(lines[-1][:3]), lines[-1], lines

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def starttls(self):
        self.sock = tls_ctx().wrap_socket(self.sock)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class SmtpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("smtp", extra={"smtp.max_message_size": "30m",
                                        "smtp.max_recipients": "5",
                                        "smtp.max_errors": "20",
                                        "server.max_connections_per_address": "50"})
        for addr, pw in PW.items():
            cls.srv.add_user(addr, pw)
        cls.srv.cli("alias", "add", "office@example.test", "alice@example.test")
        cls.srv.cli("alias", "add", "forward@example.test", "someone@elsewhere.test")
        cls.srv.cli("list", "add", "staff@example.test")
        cls.srv.cli("list", "member", "add", "staff@example.test", "alice@example.test")
        cls.srv.cli("list", "member", "add", "staff@example.test", "bob@example.test")
        cls.srv.cli("list", "member", "add", "staff@example.test", "carol@staff.example.test")
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text())
        cls.srv.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc

    def count(self, addr):
        return self.srv.mailbox_count(addr)

    def mx(self):
        return smtplib.SMTP(HOST, self.srv.smtp_port, timeout=30)

    def submission(self, user):
        s = smtplib.SMTP(HOST, self.srv.submission_port, timeout=30)
        s.starttls(context=tls_ctx())
        s.login(user, PW[user])
        return s

    def last_message(self, addr):
        n = self.count(addr)
        # UIDs are 1..n when nothing was expunged.
        return self.srv.message(addr, n)

    # ---- delivery

    def test_one_recipient_round_trip(self):
        before = self.count("alice@example.test")
        body = (b"From: Friend <friend@example.net>\r\nTo: alice@example.test\r\n"
                b"Subject: hello\r\n\r\nHello Alice.\r\n")
        with self.mx() as s:
            s.ehlo("client.example.net")
            s.sendmail("friend@example.net", ["alice@example.test"], body)
        self.assertEqual(self.count("alice@example.test"), before + 1)
        raw = self.last_message("alice@example.test")
        prefix, rest = split_stored(raw)
        self.assertEqual(rest, body)
        self.assertTrue(prefix.startswith(b"Return-Path: <friend@example.net>\r\nReceived: from "
                                          b"client.example.net ([127.0.0.1])\r\n\tby mail.example.test"))
        self.assertIn(b"for <alice@example.test>;", prefix)

    def test_many_recipients_one_copy_each(self):
        addrs = ["alice@example.test", "bob@example.test", "carol@staff.example.test"]
        before = {a: self.count(a) for a in addrs}
        with self.mx() as s:
            refused = s.sendmail("x@example.net", addrs + ["ALICE@Example.Test"],
                                 b"Subject: many\r\n\r\nto many\r\n")
        self.assertEqual(refused, {})
        for a in addrs:
            self.assertEqual(self.count(a), before[a] + 1, a)
            self.assertIn(("for <%s>;" % a).encode(), self.last_message(a))

    def test_alias(self):
        before = self.count("alice@example.test")
        with self.mx() as s:
            s.sendmail("x@example.net", ["office@example.test"], b"Subject: alias\r\n\r\nx\r\n")
        self.assertEqual(self.count("alice@example.test"), before + 1)

    def test_list(self):
        addrs = ["alice@example.test", "bob@example.test", "carol@staff.example.test"]
        before = {a: self.count(a) for a in addrs}
        with self.mx() as s:
            s.sendmail("x@example.net", ["staff@example.test"], b"Subject: list\r\n\r\nx\r\n")
        for a in addrs:
            self.assertEqual(self.count(a), before[a] + 1, a)

    def test_unknown_user(self):
        with self.mx() as s:
            s.ehlo()
            s.mail("x@example.net")
            code, msg = s.rcpt("nobody@example.test")
            self.assertEqual(code, 550)
            self.assertTrue(msg.startswith(b"5.1.1"), msg)

    def test_relay_refused_with_tricks(self):
        tricks = ["user@other.test", "user%other.test@example.test",
                  "other.test!user@example.test", "@example.test:user@other.test",
                  '"user@other.test"@example.test', "user@[127.0.0.9]",
                  "alice%other.test@example.test", '"alice"@example.test']
        r = Raw(self.srv.smtp_port)
        r.cmd("EHLO relay.test")
        self.assertEqual(r.cmd("MAIL FROM:<spammer@evil.test>")[0], 250)
        for t in tricks:
            code, text, _ = r.cmd("RCPT TO:<%s>" % t)
            self.assertEqual(code, 550, (t, text))
            self.assertIn("5.7.1", text, t)
        self.assertEqual(r.cmd("DATA")[0], 554)
        r.cmd("QUIT")
        r.close()

    def test_relay_allowed_when_authenticated(self):
        with self.submission("alice@example.test") as s:
            refused = s.sendmail("alice@example.test", ["someone@other.test"],
                                 b"From: alice@example.test\r\nSubject: out\r\n\r\nx\r\n")
            self.assertEqual(refused, {})

    def test_too_many_recipients(self):
        r = Raw(self.srv.smtp_port)
        r.cmd("EHLO x")
        r.cmd("MAIL FROM:<x@example.net>")
        codes = [r.cmd("RCPT TO:<alice@example.test>")[0] for _ in range(6)]
        self.assertEqual(codes[:5], [250] * 5)
        code, text, _ = r.cmd("RCPT TO:<alice@example.test>")
        self.assertEqual(code, 452)
        self.assertIn("4.5.3", text)
        r.close()

    # ---- SIZE (RFC 1870)

    def test_size_declared_too_big(self):
        r = Raw(self.srv.smtp_port)
        _, _, lines = r.cmd("EHLO x")
        self.assertIn("250-SIZE 31457280", lines)
        code, text, _ = r.cmd("MAIL FROM:<x@example.net> SIZE=40000000")
        self.assertEqual(code, 552)
        self.assertIn("5.3.4", text)
        self.assertEqual(r.cmd("MAIL FROM:<x@example.net> SIZE=1000")[0], 250)
        r.close()

    def test_size_real_too_big(self):
        before = self.count("bob@example.test")
        r = Raw(self.srv.smtp_port)
        r.cmd("EHLO x")
        r.cmd("MAIL FROM:<x@example.net>")
        r.cmd("RCPT TO:<bob@example.test>")
        self.assertEqual(r.cmd("DATA")[0], 354)
        line = b"x" * 998 + b"\r\n"
        for _ in range(31 * 1024):
            r.send(line)
        code, text, _ = r.cmd(".")
        self.assertEqual(code, 552)
        self.assertIn("5.3.4", text)
        self.assertEqual(r.cmd("NOOP")[0], 250)  # still in sync
        r.close()
        self.assertEqual(self.count("bob@example.test"), before)

    # ---- PIPELINING (RFC 2920)

    def test_pipelining(self):
        before = self.count("bob@example.test")
        r = Raw(self.srv.smtp_port)
        r.cmd("EHLO x")
        r.send(b"MAIL FROM:<p@example.net>\r\nRCPT TO:<bob@example.test>\r\n"
               b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        codes = [r.reply()[0] for _ in range(5)]
        self.assertEqual(codes, [250, 250, 550, 250, 354])
        r.send(b"Subject: piped\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\n")
        self.assertEqual([r.reply()[0] for _ in range(3)], [250, 250, 250])
        r.close()
        self.assertEqual(self.count("bob@example.test"), before + 1)

    # ---- content

    def test_dot_stuffing_and_8bit(self):
        body = (b"Subject: dots\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n"
                b".leading dot\r\n..two dots\r\n.\tdot tab\r\nGr\xc3\xbc\xc3\x9fe \xff\xfe\r\n.\r\n")
        # smtplib stuffs the dots; the stored copy must be unstuffed exactly.
        with self.mx() as s:
            s.ehlo()
            self.assertTrue(s.has_extn("8bitmime"))
            s.sendmail("x@example.net", ["bob@example.test"], body, mail_options=["BODY=8BITMIME"])
        _, rest = split_stored(self.last_message("bob@example.test"))
        self.assertEqual(rest, body)

    def test_20mb_byte_exact(self):
        import random
        rnd = random.Random(7)
        lines = []
        size = 0
        while size < 20 * 1024 * 1024:
            n = rnd.randint(0, 200)
            line = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 .\xe9\xff") for _ in range(n))
            lines.append(line)
            size += n + 2
        body = b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
        with self.mx() as s:
            s.sendmail("x@example.net", ["carol@staff.example.test"], body)
        _, rest = split_stored(self.last_message("carol@staff.example.test"))
        self.assertEqual(len(rest), len(body))
        self.assertTrue(rest == body)

    def test_bdat(self):
        before = self.count("bob@example.test")
        r = Raw(self.srv.smtp_port)
        _, _, lines = r.cmd("EHLO x")
        self.assertIn("250-CHUNKING", lines)
        r.cmd("MAIL FROM:<b@example.net>")
        r.cmd("RCPT TO:<bob@example.test>")
        part1 = b"Subject: chunks\r\n\r\n.line one\r\n"
        part2 = b"line two\r\n"
        r.send(b"BDAT %d\r\n" % len(part1) + part1)
        code, text, _ = r.reply()
        self.assertEqual(code, 250, text)
        r.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
        code, text, _ = r.reply()
        self.assertEqual(code, 250, text)
        r.cmd("QUIT")
        r.close()
        self.assertEqual(self.count("bob@example.test"), before + 1)
        _, rest = split_stored(self.last_message("bob@example.test"))
        self.assertEqual(rest, part1 + part2)

    def test_smuggling_refused(self):
        attempts = [
            b"Subject: a\r\n\r\nhi\n.\nMAIL FROM:<evil@example.net>\r\n.\r\n",
            b"Subject: a\r\n\r\nhi\r\n.\nMAIL FROM:<evil@example.net>\r\n.\r\n",
            b"Subject: a\r\n\r\nhi\n.\r\nMAIL FROM:<evil@example.net>\r\n.\r\n",
            b"Subject: a\r\n\r\nhi\r.\r\nMAIL FROM:<evil@example.net>\r\n.\r\n",
            b"Subject: a\r\n\r\nbare\rcr\r\n.\r\n",
        ]
        before = self.count("bob@example.test")
        for data in attempts:
            r = Raw(self.srv.smtp_port)
            r.cmd("EHLO x")
            r.cmd("MAIL FROM:<s@example.net>")
            r.cmd("RCPT TO:<bob@example.test>")
            self.assertEqual(r.cmd("DATA")[0], 354)
            r.send(data)
            code, text, _ = r.reply()
            self.assertTrue(500 <= code < 600, (data, text))
            self.assertEqual(r.cmd("NOOP")[0], 250)  # no smuggled command was run
            r.close()
        self.assertEqual(self.count("bob@example.test"), before)

    # ---- TLS and AUTH

    def test_starttls_injection_discarded(self):
        r = Raw(self.srv.smtp_port)
        r.cmd("EHLO x")
        r.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<inject@example.net>\r\n")
        code, _, _ = r.reply()
        self.assertEqual(code, 220)
        r.starttls()
        # The first reply after the handshake must be EHLO's, not RSET's.
        code, text, lines = r.cmd("EHLO x")
        self.assertEqual(code, 250)
        self.assertTrue(lines[0].startswith("250-mail.example.test"), lines)
        self.assertNotIn("250-STARTTLS", lines)
        self.assertEqual(r.cmd("MAIL FROM:<ok@example.net>")[0], 250)
        r.close()

    def test_auth_requires_tls(self):
        r = Raw(self.srv.submission_port)
        _, _, lines = r.cmd("EHLO x")
        self.assertFalse(any(l.startswith("250-AUTH") or l.startswith("250 AUTH") for l in lines))
        code, text, _ = r.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1zZWNyZXQtMQ==")
        self.assertEqual(code, 538)
        code, text, _ = r.cmd("MAIL FROM:<alice@example.test>")
        self.assertEqual(code, 530)
        r.close()

    def test_auth_plain_and_login(self):
        for mech in ("PLAIN", "LOGIN"):
            s = smtplib.SMTP(HOST, self.srv.submission_port, timeout=30)
            s.starttls(context=tls_ctx())
            s.ehlo()
            self.assertIn(mech, s.esmtp_features.get("auth", ""))
            s.user, s.password = "alice@example.test", PW["alice@example.test"]
            # PLAIN with the initial response, LOGIN through both challenges
            code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower()),
                             initial_response_ok=(mech == "PLAIN"))
            self.assertEqual(code, 235)
            s.quit()

    def test_auth_bad_password(self):
        s = smtplib.SMTP(HOST, self.srv.submission_port, timeout=30)
        s.starttls(context=tls_ctx())
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.login("alice@example.test", "wrong")
        self.assertEqual(cm.exception.smtp_code, 535)
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.login("nobody@example.test", "wrong")
        self.assertEqual(cm.exception.smtp_code, 535)
        s.close()

    def test_smtps_implicit_tls(self):
        before = self.count("bob@example.test")
        with smtplib.SMTP_SSL(HOST, self.srv.smtps_port, context=tls_ctx(), timeout=30) as s:
            s.login("bob@example.test", PW["bob@example.test"])
            s.sendmail("bob@example.test", ["bob@example.test"],
                       b"From: bob@example.test\r\nSubject: tls\r\n\r\nx\r\n")
        self.assertEqual(self.count("bob@example.test"), before + 1)
        raw = self.last_message("bob@example.test")
        self.assertIn(b"with ESMTPSA", raw)
        self.assertIn(b"authenticated as bob@example.test", raw)
        # submission adds Date: and Message-ID: when missing
        self.assertIn(b"\r\nDate: ", raw)
        self.assertIn(b"\r\nMessage-ID: <", raw)

    def test_pupil_cannot_send_as_head(self):
        with self.submission("pupil@example.test") as s:
            s.ehlo()
            code, msg = s.mail("head@example.test")
            self.assertEqual(code, 553)
            self.assertTrue(msg.startswith(b"5.7.1"), msg)
            s.rset()
            code, _ = s.mail("pupil@example.test")
            self.assertEqual(code, 250)
            s.rcpt("alice@example.test")
            code, msg = s.data(b"From: Head Teacher <head@example.test>\r\nSubject: x\r\n\r\nx\r\n")
            self.assertEqual(code, 553)
            self.assertTrue(msg.startswith(b"5.7.1"), msg)

    def test_user_may_send_as_alias_and_list(self):
        with self.submission("alice@example.test") as s:
            refused = s.sendmail("office@example.test", ["bob@example.test"],
                                 b"From: Office <office@example.test>\r\nSubject: x\r\n\r\nx\r\n")
            self.assertEqual(refused, {})
            refused = s.sendmail("staff@example.test", ["bob@example.test"],
                                 b"From: staff@example.test\r\nSubject: x\r\n\r\nx\r\n")
            self.assertEqual(refused, {})

    # ---- commands and errors

    def test_commands(self):
        r = Raw(self.srv.smtp_port)
        self.assertTrue(r.greeting[1].startswith("220 mail.example.test"))
        self.assertEqual(r.cmd("MAIL FROM:<x@example.net>")[0], 503)
        _, _, lines = r.cmd("EHLO x")
        for ext in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS", "CHUNKING", "SMTPUTF8"):
            self.assertTrue(any(l[4:].startswith(ext) for l in lines), ext)
        self.assertEqual(r.cmd("RCPT TO:<alice@example.test>")[1][:9], "503 5.5.1")
        self.assertEqual(r.cmd("DATA")[0], 503)
        self.assertEqual(r.cmd("HELP")[0], 214)
        self.assertEqual(r.cmd("VRFY alice")[0], 252)
        self.assertEqual(r.cmd("EXPN staff")[0], 502)
        for verb in ("SEND FROM:<a@b>", "SOML FROM:<a@b>", "SAML FROM:<a@b>", "TURN"):
            self.assertEqual(r.cmd(verb)[1][:9], "502 5.5.1", verb)
        self.assertEqual(r.cmd("FOO")[1][:9], "500 5.5.1")
        self.assertEqual(r.cmd("MAIL FROM:<x@example.net> BOGUS=1")[1][:3], "555")
        self.assertEqual(r.cmd("MAIL FROM:x")[1][:9], "501 5.5.4")
        self.assertEqual(r.cmd("NOOP")[0], 250)
        self.assertEqual(r.cmd("RSET")[1], "250 2.0.0 Ok")
        self.assertEqual(r.cmd("QUIT")[0], 221)
        r.close()

    def test_long_line(self):
        r = Raw(self.srv.smtp_port)
        r.cmd("EHLO x")
        code, text, _ = r.cmd("NOOP " + "x" * 600)
        self.assertEqual(text[:9], "500 5.5.2")
        code, text, _ = r.cmd("RCPT TO:<" + "a" * 520 + "@example.test>")
        self.assertEqual(text[:9], "500 5.5.2")
        code, text, _ = r.cmd("X" * 20000)
        self.assertEqual(text[:9], "500 5.5.2")
        self.assertEqual(r.cmd("NOOP")[0], 250)  # the rest of the line was skipped
        r.close()

    def test_too_many_errors(self):
        r = Raw(self.srv.smtp_port)
        codes = [r.cmd("BOGUS")[0] for _ in range(20)]
        self.assertEqual(codes, [500] * 20)
        code, text, _ = r.reply()  # sent right after the 20th error
        self.assertEqual(code, 421, text)
        self.assertIn("4.7.0", text)
        with self.assertRaises(EOFError):
            r.line()
        r.close()

    # ---- other clients

    def test_swaks(self):
        before = self.count("alice@example.test")
        r = subprocess.run(["swaks", "--server", "%s:%d" % (HOST, self.srv.submission_port),
                            "-tls", "--auth", "LOGIN", "--auth-user", "alice@example.test",
                            "--auth-password", PW["alice@example.test"],
                            "--from", "alice@example.test", "--to", "alice@example.test",
                            "--h-From", "alice@example.test"],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode(errors="replace"))
        self.assertEqual(self.count("alice@example.test"), before + 1)

    def test_curl(self):
        before = self.count("bob@example.test")
        path = os.path.join(self.srv.dir, "curl-msg.txt")
        with open(path, "wb") as f:
            f.write(b"From: c@example.net\r\nSubject: curl\r\n\r\nvia curl\r\n")
        r = subprocess.run(["curl", "-sS", "smtp://%s:%d" % (HOST, self.srv.smtp_port),
                            "--mail-from", "c@example.net", "--mail-rcpt", "bob@example.test",
                            "-T", path], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.count("bob@example.test"), before + 1)


class ServiceTest(unittest.TestCase):
    def test_check_config(self):
        srv = Server("check")
        try:
            r = subprocess.run([prtest.POSTROOMD, "-c", srv.conf, "--check"], capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(srv.conf, "a") as f:
                f.write("bogus_key = 1\n")
            r = subprocess.run([prtest.POSTROOMD, "-c", srv.conf, "--check"], capture_output=True)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn(b"bogus_key", r.stderr)
            self.assertIn(b":", r.stderr)
        finally:
            srv.cleanup()

    def test_connection_limit_and_signals(self):
        srv = Server("limits", extra={"server.max_connections_per_address": "3"})
        srv.add_user("alice@example.test", "pw-alice-123")
        srv.start()
        try:
            conns = [Raw(srv.smtp_port) for _ in range(2)]  # wait_port used one and closed it
            time.sleep(0.2)
            conns.append(Raw(srv.smtp_port))
            extra = socket.create_connection((HOST, srv.smtp_port), timeout=10)
            data = extra.recv(1000)
            self.assertTrue(data.startswith(b"421"), data)
            extra.close()
            # SIGHUP keeps serving
            srv.proc.send_signal(1)
            time.sleep(0.5)
            for c in conns:
                self.assertEqual(c.cmd("NOOP")[0], 250)
            # a transaction in flight finishes across SIGTERM
            c = conns[0]
            c.cmd("EHLO x")
            c.cmd("MAIL FROM:<x@example.net>")
            c.cmd("RCPT TO:<alice@example.test>")
            c.cmd("DATA")
            srv.proc.send_signal(15)
            time.sleep(0.5)
            c.send(b"Subject: late\r\n\r\nfinished during shutdown\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
            self.assertEqual(srv.proc.wait(timeout=60), 0)
            srv.proc = None
            self.assertEqual(srv.mailbox_count("alice@example.test"), 1)
        finally:
            srv.cleanup()


if __name__ == "__main__":
    prtest.main()
