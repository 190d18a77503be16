"""The built-in directory beside LDAP (issue 4): with [directory] backend =
ldap, aliases and lists made with `postroom alias/list ...` go to the
built-in directory (no write rights in LDAP needed), are consulted before
LDAP's addresses and expand to LDAP users and groups; users still come from
LDAP only, so `postroom user add` is refused. Also the failed-credential
cache: a stale password retried is refused without binding again. Real
slapd (tests/integration/ldaptest.py) and a real postroomd; the CLI runs
beside the daemon on the same data dir, as an admin would use it."""
import os
import poplib
import smtplib
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldaptest  # noqa: E402
import prtest  # noqa: E402
from prtest import HOST, Server  # noqa: E402

USERS = ldaptest.USERS["openldap"]
ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"


class LdapLocalTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.slapd = ldaptest.Slapd("pr-local", preset="openldap")
        cls.slapd.start()
        extra = {"directory.backend": "ldap", "pop3.allow_plaintext_auth": "yes",
                 "ldap.timeout": "2s", "server.limit_exempt_networks": "127.0.0.0/8"}
        extra.update(ldaptest.ldap_extra(cls.slapd))
        cls.srv = Server("ldap-local", extra=extra, domains="example.test")
        try:
            cls.srv.start()
            prtest.wait_port(cls.srv.pop3_port, timeout=10)
        except Exception:
            cls.slapd.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text()[-6000:])
        cls.srv.cleanup()
        cls.slapd.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc

    def rcpt(self, address):
        with smtplib.SMTP(HOST, self.srv.smtp_port, timeout=30) as s:
            s.ehlo("client.example.net")
            s.mail("sender@example.net")
            return s.rcpt(address)

    def deliver_counts(self, address, users=(ALICE, BOB, CAROL)):
        """Deliver one message to address; how many each user received."""
        before = {u: self.srv.mailbox_count(u) for u in users}
        self.srv.deliver(address, b"Subject: to %s\r\n\r\nhello\r\n" % address.encode())
        return {u: self.srv.mailbox_count(u) - before[u] for u in users}

    def refused(self, *args, input=None):
        """Run a CLI command that must fail; its error line."""
        r = self.srv.cli(*args, input=input, check=False)
        self.assertEqual(r.returncode, 1, "postroom %s: %r" % (" ".join(args), r))
        return r.stderr.decode(errors="replace")

    def test_alias_of_ldap_users(self):
        self.assertEqual(self.rcpt("teachers@example.test")[0], 550)
        self.srv.cli("alias", "add", "teachers@example.test", ALICE, BOB)
        self.assertIn("teachers@example.test", self.srv.cli("alias", "list").stdout.decode())
        self.assertEqual(self.rcpt("Teachers@Example.test")[0], 250)
        self.assertEqual(self.deliver_counts("teachers@example.test"),
                         {ALICE: 1, BOB: 1, CAROL: 0})
        # a target must exist: in LDAP or locally
        err = self.refused("alias", "add", "typo@example.test", "alicee@example.test")
        self.assertIn("does not exist", err)

    def test_list_of_ldap_users_and_groups(self):
        self.srv.cli("list", "add", "class-7b@example.test")
        self.srv.cli("list", "member", "add", "class-7b@example.test", CAROL)
        self.srv.cli("list", "member", "add", "class-7b@example.test", "staff@example.test")
        self.srv.cli("list", "member", "add", "class-7b@example.test", ALICE)  # also in staff
        self.assertIn("class-7b@example.test", self.srv.cli("list", "show").stdout.decode())
        self.assertEqual(self.rcpt("class-7b@example.test")[0], 250)
        # staff (an LDAP group) expands to alice and bob; alice gets one copy
        self.assertEqual(self.deliver_counts("class-7b@example.test"),
                         {ALICE: 1, BOB: 1, CAROL: 1})
        self.srv.cli("list", "member", "del", "class-7b@example.test", "staff@example.test")
        self.assertEqual(self.deliver_counts("class-7b@example.test"),
                         {ALICE: 1, BOB: 0, CAROL: 1})

    def test_users_and_ldap_entries_stay_read_only(self):
        err = self.refused("user", "add", "new@example.test", "--password-stdin",
                           input=b"new-secret-1\n")
        self.assertIn("'ldap' directory is read-only", err)
        self.assertEqual(self.rcpt("new@example.test")[0], 550)
        err = self.refused("user", "passwd", ALICE, "--password-stdin", input=b"x-secret-2\n")
        self.assertIn("read-only", err)
        self.assertIn("read-only", self.refused("user", "del", BOB))
        self.assertIn("read-only", self.refused("domain", "add", "other.test"))
        # an LDAP group's members are LDAP's to change
        err = self.refused("list", "member", "add", "staff@example.test", CAROL)
        self.assertIn("'staff@example.test' is a list in the 'ldap' directory", err)
        self.assertIn("read-only", self.refused("list", "del", "staff@example.test"))
        self.assertIn("read-only", self.refused("alias", "del", "alice.smith@example.test"))
        self.assertEqual(self.deliver_counts("staff@example.test"), {ALICE: 1, BOB: 1, CAROL: 0})

    def test_local_alias_shadows_ldap_address(self):
        self.assertEqual(self.deliver_counts("everyone@example.test"),
                         {ALICE: 1, BOB: 1, CAROL: 1})
        self.srv.cli("alias", "add", "everyone@example.test", CAROL)
        self.assertEqual(self.deliver_counts("everyone@example.test"),
                         {ALICE: 0, BOB: 0, CAROL: 1})
        # another address of an LDAP user (mailLocalAddress), redirected
        self.srv.cli("alias", "add", "alice.smith@example.test", BOB)
        self.assertEqual(self.deliver_counts("alice.smith@example.test"),
                         {ALICE: 0, BOB: 1, CAROL: 0})
        # deleted: LDAP answers again
        self.srv.cli("alias", "del", "everyone@example.test")
        self.srv.cli("alias", "del", "alice.smith@example.test")
        self.assertEqual(self.deliver_counts("everyone@example.test"),
                         {ALICE: 1, BOB: 1, CAROL: 1})
        self.assertEqual(self.deliver_counts("alice.smith@example.test"),
                         {ALICE: 1, BOB: 0, CAROL: 0})

    def pop_login(self, user, password):
        p = poplib.POP3(HOST, self.srv.pop3_port, timeout=30)
        try:
            p.user(user)
            reply = p.pass_(password).decode()
            p.quit()
            return reply
        except poplib.error_proto as e:
            p.close()
            return e.args[0].decode()

    def test_stale_password_binds_once(self):
        dn = USERS["carol"]["dn"]
        # bind requests as carol (a successful one logs a second BIND line)
        binds = lambda: self.slapd.log_text().count('BIND dn="%s" method=' % dn)  # noqa: E731
        before = binds()
        for _ in range(3):
            reply = self.pop_login(CAROL, "carol-old-password")
            self.assertTrue(reply.startswith("-ERR [AUTH]"), reply)
        self.assertEqual(binds(), before + 1)
        # the right password is not held back by the remembered failure
        self.assertTrue(self.pop_login(CAROL, USERS["carol"]["password"]).startswith("+OK"))
        self.assertEqual(binds(), before + 2)
        reply = self.pop_login(CAROL, "carol-old-password")
        self.assertTrue(reply.startswith("-ERR [AUTH]"), reply)
        self.assertEqual(binds(), before + 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
