"""Mailbox quotas against a real postroomd with smtplib and the real
`postroom` CLI: a message under the quota is delivered; 552 5.2.2 for a
message that can never fit (SIZE= at MAIL/RCPT, and the real size at the end
of DATA); 452 4.2.2 when the mailbox is full now; a per-user override set
with `postroom user quota` while the daemon runs (a size, 0 = unlimited,
`default`); `postroom mailbox show` reporting the usage against the limit.
Also, from the same issue, the verified-credential cache: a password
changed by the CLI (another process) takes effect at once for SMTP AUTH."""
import re
import smtplib
import ssl
import unittest

import prtest
from prtest import HOST, Server

DEFAULT = 20 * 1024  # store.default_quota = 20k


def tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def message(size, subject="q"):
    """A message of exactly size octets (CRLF line ends)."""
    head = ("From: x@example.net\r\nSubject: %s\r\n\r\n" % subject).encode()
    lines = []
    left = size - len(head)
    while left > 0:
        n = min(78, left)
        if left - n == 1:  # never leave a one-octet line: it could not end in CRLF
            n -= 1
        lines.append(b"y" * (n - 2) + b"\r\n")
        left -= n
    msg = head + b"".join(lines)
    assert len(msg) == size, (len(msg), size)
    return msg


class QuotaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("quota", extra={"store.default_quota": "20k",
                                         "smtp.max_errors": "100"})
        # one mailbox per test, so the tests do not depend on their order
        for user in ("alice", "bob", "carol", "dave", "erin", "frank", "hank", "ivy"):
            cls.srv.add_user("%s@example.test" % user, "%s-secret" % user)
        # an override set before the daemon starts
        cls.srv.cli("user", "quota", "carol@example.test", "5k")
        cls.srv.cli("list", "add", "team@example.test")
        cls.srv.cli("list", "member", "add", "team@example.test", "erin@example.test")
        cls.srv.cli("list", "member", "add", "team@example.test", "frank@example.test")
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text())
        cls.srv.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc

    def mx(self):
        s = smtplib.SMTP(HOST, self.srv.smtp_port, timeout=30)
        s.ehlo("client.example.net")
        return s

    def count(self, addr):
        return self.srv.mailbox_count(addr)

    def quota_line(self, addr):
        """(used, limit or None) from `postroom mailbox show`."""
        out = self.srv.cli("mailbox", "show", addr).stdout.decode()
        for line in out.splitlines():
            m = re.match(r"\s*quota (\d+)/(\d+) bytes", line)
            if m:
                return int(m.group(1)), int(m.group(2))
            m = re.match(r"\s*quota (\d+) bytes, no limit$", line)
            if m:
                return int(m.group(1)), None
        self.fail("no quota line in:\n" + out)

    def send_no_size(self, rcpt, msg):
        """MAIL without SIZE=, so only the real size can be checked: returns
        (rcpt reply, data reply or None)."""
        with self.mx() as s:
            self.assertEqual(s.mail("x@example.net")[0], 250)
            r = s.rcpt(rcpt)
            d = s.data(msg) if r[0] == 250 else None
            return r, d

    # ---- delivered

    def test_under_quota_delivered(self):
        before = self.count("alice@example.test")
        with self.mx() as s:
            refused = s.sendmail("x@example.net", ["alice@example.test"], message(4000))
        self.assertEqual(refused, {})
        self.assertEqual(self.count("alice@example.test"), before + 1)
        used, limit = self.quota_line("alice@example.test")
        self.assertEqual(limit, DEFAULT)
        # the stored copy: the trace header prefix plus the message
        self.assertGreater(used, 4000 * (before + 1))
        self.assertLess(used, 4600 * (before + 1))

    # ---- 552 5.2.2: can never fit

    def test_size_param_over_quota(self):
        # smtplib sends SIZE=<length> itself when the server offers SIZE
        with self.mx() as s:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                s.sendmail("x@example.net", ["bob@example.test"], message(DEFAULT + 1000))
        code, text = cm.exception.recipients["bob@example.test"]
        self.assertEqual(code, 552)
        self.assertTrue(text.startswith(b"5.2.2"), text)
        self.assertEqual(self.count("bob@example.test"), 0)

    def test_real_size_over_quota(self):
        r, d = self.send_no_size("hank@example.test", message(DEFAULT + 1000))
        self.assertEqual(r[0], 250)
        self.assertEqual(d[0], 552)
        self.assertTrue(d[1].startswith(b"5.2.2"), d)
        self.assertEqual(self.count("hank@example.test"), 0)

    def test_override_before_start(self):
        # carol's own 5k, not the 20k default
        self.assertEqual(self.quota_line("carol@example.test"), (0, 5 * 1024))
        with self.mx() as s:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                s.sendmail("x@example.net", ["carol@example.test"], message(6000))
        self.assertEqual(cm.exception.recipients["carol@example.test"][0], 552)
        with self.mx() as s:
            self.assertEqual(s.sendmail("x@example.net", ["carol@example.test"], message(3000)),
                             {})
        self.assertEqual(self.count("carol@example.test"), 1)

    # ---- 452 4.2.2: full now; overrides changed while the daemon runs

    def test_full_then_override(self):
        addr = "dave@example.test"
        self.srv.cli("user", "quota", addr, "6k")  # the running daemon sees it at once
        with self.mx() as s:
            self.assertEqual(s.sendmail("x@example.net", [addr], message(4000)), {})
        used, limit = self.quota_line(addr)
        self.assertEqual(limit, 6 * 1024)

        # room left, but not for this one: SIZE= refuses at RCPT ...
        with self.mx() as s:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                s.sendmail("x@example.net", [addr], message(4000))
        code, text = cm.exception.recipients[addr]
        self.assertEqual(code, 452)
        self.assertTrue(text.startswith(b"4.2.2"), text)
        # ... the real size at the end of DATA
        r, d = self.send_no_size(addr, message(4000))
        self.assertEqual(r[0], 250)
        self.assertEqual(d[0], 452)
        self.assertTrue(d[1].startswith(b"4.2.2"), d)
        self.assertEqual(self.count(addr), 1)

        # usage at the limit: refused at RCPT even without a size
        self.srv.cli("user", "quota", addr, str(used))
        r, d = self.send_no_size(addr, message(100))
        self.assertEqual(r[0], 452)
        self.assertTrue(r[1].startswith(b"4.2.2"), r)
        self.assertEqual(self.quota_line(addr), (used, used))

        # 0: unlimited for this user, over the default
        self.srv.cli("user", "quota", addr, "0")
        with self.mx() as s:
            self.assertEqual(s.sendmail("x@example.net", [addr], message(DEFAULT + 2000)), {})
        used2, limit = self.quota_line(addr)
        self.assertIsNone(limit)
        self.assertGreater(used2, used + DEFAULT + 2000)
        out = self.srv.cli("user", "list").stdout.decode()
        self.assertIn("dave@example.test  quota unlimited", out)

        # default: back to [store] default_quota, which dave is now over
        self.srv.cli("user", "quota", addr, "default")
        self.assertEqual(self.quota_line(addr), (used2, DEFAULT))
        r, d = self.send_no_size(addr, message(100))
        self.assertEqual(r[0], 452)
        self.assertEqual(self.count(addr), 2)

    def test_list_some_and_all_full(self):
        # frank full: the list still delivers to both (a logged overshoot)
        with self.mx() as s:
            self.assertEqual(s.sendmail("x@example.net", ["frank@example.test"], message(1000)),
                             {})
        used, _ = self.quota_line("frank@example.test")
        self.srv.cli("user", "quota", "frank@example.test", str(used))
        with self.mx() as s:
            self.assertEqual(s.sendmail("x@example.net", ["team@example.test"], message(1000)),
                             {})
        self.assertEqual(self.count("erin@example.test"), 1)
        self.assertEqual(self.count("frank@example.test"), 2)
        self.assertIn("over quota", self.srv.log_text())
        # both full: the list address is refused
        used, _ = self.quota_line("erin@example.test")
        self.srv.cli("user", "quota", "erin@example.test", str(used))
        with self.mx() as s:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
                s.sendmail("x@example.net", ["team@example.test"], message(1000))
        self.assertEqual(cm.exception.recipients["team@example.test"][0], 452)
        self.assertEqual(self.count("erin@example.test"), 1)

    # ---- the CLI

    def test_mailbox_show_keeps_folder_lines(self):
        addr = "ivy@example.test"
        self.srv.cli("user", "quota", addr, "default")
        out = self.srv.cli("mailbox", "show", addr).stdout.decode()
        self.assertIn("\n  quota 0/20480 bytes (0%, default)\n", out)
        with self.mx() as s:
            s.sendmail("x@example.net", [addr], message(500))
        out = self.srv.cli("mailbox", "show", addr).stdout.decode()
        self.assertRegex(out, r"\n  INBOX +1 message ")
        self.assertRegex(out, r"\n  quota [5-9]\d\d/20480 bytes \(\d+%, default\)\n")
        self.assertEqual(self.srv.mailbox_count(addr), 1)

    def test_cli_errors(self):
        r = self.srv.cli("user", "quota", "alice@example.test", "lots", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"invalid quota 'lots'", r.stderr)
        r = self.srv.cli("user", "quota", "alice@example.test", "-5", check=False)
        self.assertEqual(r.returncode, 2)
        r = self.srv.cli("user", "quota", "alice@example.test", check=False)
        self.assertEqual(r.returncode, 2)
        r = self.srv.cli("user", "quota", "nobody@example.test", "5m", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"user 'nobody@example.test' does not exist", r.stderr)
        r = self.srv.cli("user", "quota", "team@example.test", "5m", check=False)
        self.assertEqual(r.returncode, 1)


class CredentialCacheTest(unittest.TestCase):
    """A password changed by `postroom user passwd` (another process) is
    honoured at once even though the daemon remembers recent logins."""

    @classmethod
    def setUpClass(cls):
        cls.srv = Server("authcache")
        cls.srv.add_user("gina@example.test", "old-secret")
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text())
        cls.srv.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc

    def login(self, password):
        with smtplib.SMTP(HOST, self.srv.submission_port, timeout=30) as s:
            s.starttls(context=tls_ctx())
            try:
                return s.login("gina@example.test", password)[0]
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    def test_password_change_by_cli(self):
        self.assertEqual(self.login("old-secret"), 235)
        self.assertEqual(self.login("old-secret"), 235)  # from the cache
        self.assertEqual(self.login("wrong"), 535)
        self.srv.cli("user", "passwd", "gina@example.test", "--password-stdin",
                     input=b"new-secret\n")
        self.assertEqual(self.login("old-secret"), 535)
        self.assertEqual(self.login("new-secret"), 235)
        self.assertEqual(self.login("new-secret"), 235)


if __name__ == "__main__":
    prtest.main()
