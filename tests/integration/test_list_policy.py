"""Mailing-list posting policies against a real postroomd with smtplib: set
with `postroom list policy`, enforced at RCPT on the MX and submission
ports ("members" by envelope sender, "local" by AUTH only, never a claimed
MAIL FROM), through aliases too, and each member gets one copy."""
import smtplib
import unittest

import prtest
from prtest import HOST, Server, tls_context

PW = {"alice@example.test": "alice-secret-1", "bob@example.test": "bob-secret-2",
      "carol@example.test": "carol-secret-3"}
MEMBERS = ["alice@example.test", "bob@example.test"]


class ListPolicyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("listpolicy")
        for addr, pw in PW.items():
            cls.srv.add_user(addr, pw)
        cls.srv.cli("alias", "add", "a.smith@example.test", "alice@example.test")
        for lst, policy in (("staff@example.test", "members"), ("announce@example.test", "local"),
                            ("open@example.test", "anyone")):
            cls.srv.cli("list", "add", lst)
            for m in MEMBERS:
                cls.srv.cli("list", "member", "add", lst, m)
            cls.srv.cli("list", "policy", lst, policy)
        cls.srv.cli("list", "member", "add", "staff@example.test", "Friend@Remote.test")
        cls.srv.cli("alias", "add", "team@example.test", "staff@example.test")
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text())
        cls.srv.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc

    def counts(self):
        return {a: self.srv.mailbox_count(a) for a in PW}

    def assert_delivered(self, before, to):
        after = self.counts()
        for a in PW:
            self.assertEqual(after[a], before[a] + (1 if a in to else 0), a)

    def mx_send(self, sender, rcpts):
        with smtplib.SMTP(HOST, self.srv.smtp_port, timeout=60) as s:
            s.ehlo("client.example.net")
            return s.sendmail(sender, rcpts, b"Subject: policy\r\n\r\nhello list\r\n")

    def submit(self, user, rcpts, sender=None):
        with smtplib.SMTP(HOST, self.srv.submission_port, timeout=60) as s:
            s.starttls(context=tls_context())
            s.login(user, PW[user])
            return s.sendmail(sender or user, rcpts,
                              ("From: <%s>\r\nSubject: policy\r\n\r\nhello\r\n" % (sender or user))
                              .encode())

    def assert_refused(self, sender, rcpt, text):
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
            self.mx_send(sender, [rcpt])
        code, msg = cm.exception.recipients[rcpt]
        self.assertEqual(code, 550)
        self.assertEqual(msg.decode(), "5.7.1 <%s>: %s" % (rcpt, text))

    # ---- members

    def test_member_posts_over_mx(self):
        before = self.counts()
        self.assertEqual(self.mx_send("alice@example.test", ["staff@example.test"]), {})
        self.assert_delivered(before, MEMBERS)

    def test_member_alias_and_external_member(self):
        before = self.counts()
        self.assertEqual(self.mx_send("A.Smith@example.test", ["staff@example.test"]), {})
        self.assertEqual(self.mx_send("friend@remote.test", ["staff@example.test"]), {})
        after = self.counts()
        for a in MEMBERS:
            self.assertEqual(after[a], before[a] + 2, a)

    def test_non_member_refused(self):
        before = self.counts()
        self.assert_refused("stranger@example.net", "staff@example.test",
                            "Only members may post to this list")
        self.assert_refused("carol@example.test", "staff@example.test",
                            "Only members may post to this list")
        self.assert_refused("", "staff@example.test", "Only members may post to this list")
        # through an alias: the list's policy still applies
        self.assert_refused("stranger@example.net", "team@example.test",
                            "Only members may post to this list")
        # other recipients of the same message are not affected
        refused = self.mx_send("stranger@example.net", ["staff@example.test", "carol@example.test"])
        self.assertEqual(list(refused), ["staff@example.test"])
        self.assert_delivered(before, ["carol@example.test"])
        self.assertIn("list staff@example.test (posting: members) refused <staff@example.test> "
                      "from <stranger@example.net>", self.srv.log_text())

    # ---- local

    def test_local_refuses_claimed_sender(self):
        before = self.counts()
        self.assert_refused("alice@example.test", "announce@example.test",
                            "Only authenticated local senders may post to this list")
        self.assert_delivered(before, [])

    def test_local_accepts_authenticated(self):
        before = self.counts()
        # carol is no member: being logged in is what counts
        self.assertEqual(self.submit("carol@example.test", ["announce@example.test"]), {})
        self.assert_delivered(before, MEMBERS)
        # a member also named directly still gets one copy
        before = self.counts()
        self.assertEqual(self.submit("bob@example.test",
                                     ["announce@example.test", "alice@example.test"]), {})
        self.assert_delivered(before, MEMBERS)

    # ---- administration

    def test_cli(self):
        out = self.srv.cli("list", "show").stdout.decode()
        self.assertIn("staff@example.test (posting: members): alice@example.test", out)
        self.assertIn("announce@example.test (posting: local):", out)
        self.assertIn("open@example.test (posting: anyone):", out)
        r = self.srv.cli("list", "policy", "open@example.test", "everyone", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown posting policy 'everyone'", r.stderr.decode())
        r = self.srv.cli("list", "policy", "carol@example.test", "members", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("'carol@example.test' is a user, not a list", r.stderr.decode())
        r = self.srv.cli("list", "policy", "open@example.test", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("list policy LIST anyone|members|local", self.srv.cli("--help").stdout.decode())

    def test_change_takes_effect_while_running(self):
        self.srv.cli("list", "add", "club@example.test")
        self.srv.cli("list", "member", "add", "club@example.test", "bob@example.test")
        before = self.counts()
        self.assertEqual(self.mx_send("stranger@example.net", ["club@example.test"]), {})
        self.srv.cli("list", "policy", "club@example.test", "members")
        self.assert_refused("stranger@example.net", "club@example.test",
                            "Only members may post to this list")
        self.srv.cli("list", "policy", "club@example.test", "anyone")
        self.assertEqual(self.mx_send("stranger@example.net", ["club@example.test"]), {})
        after = self.counts()
        for a in PW:
            self.assertEqual(after[a], before[a] + (2 if a == "bob@example.test" else 0), a)


if __name__ == "__main__":
    prtest.main()
