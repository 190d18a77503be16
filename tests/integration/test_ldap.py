"""The LDAP directory backend against a real slapd (tests/integration/ldaptest.py):
recipients (users, their other addresses, lists, nested lists, a loop,
unknown addresses), logins over POP3 and SMTP AUTH by address and by user
name, wrong, empty and injected credentials, a disabled AD account, StartTLS
and ldaps to slapd, and a directory that stops answering (temporary errors,
nothing lost, recovery)."""
import base64
import os
import poplib
import smtplib
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldaptest  # noqa: E402
import prtest  # noqa: E402
from prtest import HOST, Server  # noqa: E402

OPENLDAP = ldaptest.USERS["openldap"]
AD = ldaptest.USERS["activedirectory"]
# The test slapd carries AD's attributes on inetOrgPerson entries and groups
# are groupOfNames: the AD preset's object filters are overridden to match.
AD_FILTERS = {
    "user_filter": "(&(objectClass=inetOrgPerson)(objectClass=postroomADObject))",
    "list_filter": "(objectClass=groupOfNames)",
}


STARTTLS_OID = "1.3.6.1.4.1.1466.20037"  # RFC 4511 4.14.1, as slapd logs it


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


class LdapCase(unittest.TestCase):
    PRESET = "openldap"
    LDAP = {}

    @classmethod
    def setUpClass(cls):
        cls.slapd = ldaptest.Slapd("pr-" + cls.PRESET, preset=cls.PRESET)
        cls.slapd.start()
        extra = {"directory.backend": "ldap", "pop3.allow_plaintext_auth": "yes",
                 "smtp.allow_plaintext_auth": "yes", "ldap.timeout": "2s",
                 "server.limit_exempt_networks": "127.0.0.0/8"}
        extra.update(ldaptest.ldap_extra(cls.slapd, **cls.overrides(cls.slapd)))
        cls.srv = Server("ldap-" + cls.PRESET, extra=extra, domains="example.test")
        try:
            cls.srv.start()
            prtest.wait_port(cls.srv.pop3_port, timeout=10)
        except Exception:
            cls.slapd.cleanup()
            raise

    @classmethod
    def overrides(cls, slapd):
        """[ldap] keys that differ from the harness's defaults."""
        return cls.LDAP

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text()[-6000:])
        cls.srv.cleanup()
        cls.slapd.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc

    def rcpt(self, address):
        """(code, text) of RCPT TO:<address> on the MX port."""
        with smtplib.SMTP(HOST, self.srv.smtp_port, timeout=30) as s:
            s.ehlo("client.example.net")
            s.mail("sender@example.net")
            return s.rcpt(address)

    def deliver(self, address):
        """Send one message to address; the mailbox counts before and after
        are the caller's."""
        self.srv.deliver(address, b"Subject: to %s\r\n\r\nhello\r\n" % address.encode())

    def counts(self, users):
        return {u: self.srv.mailbox_count(u) for u in users}

    def pop_login(self, user, password):
        """The reply to PASS (poplib raises on -ERR: return its text)."""
        p = poplib.POP3(HOST, self.srv.pop3_port, timeout=30)
        try:
            p.user(user)
            reply = p.pass_(password).decode()
            p.quit()
            return reply
        except poplib.error_proto as e:
            p.close()
            return e.args[0].decode()

    def smtp_auth(self, user, password):
        with smtplib.SMTP(HOST, self.srv.submission_port, timeout=30) as s:
            s.ehlo("client.example.net")
            return s.docmd("AUTH", "PLAIN " + plain(user, password))


class OpenLdapTest(LdapCase):
    PRESET = "openldap"
    LDAP = {"login_names": "address,username"}

    def test_recipients(self):
        self.assertEqual(self.rcpt("alice@example.test")[0], 250)
        log = self.slapd.log_text()  # postroomd's connections to slapd use StartTLS
        self.assertIn(STARTTLS_OID, log)
        self.assertIn("TLS established", log)
        self.assertEqual(self.rcpt("Alice.Smith@Example.TEST")[0], 250)  # mailLocalAddress
        self.assertEqual(self.rcpt("robert@example.test")[0], 250)  # mailAlternateAddress
        code, text = self.rcpt("nobody@example.test")
        self.assertEqual(code, 550, text)
        self.assertIn(b"5.1.1", text)

    def test_other_address_and_lists_deliver_once(self):
        users = ["alice@example.test", "bob@example.test", "carol@example.test"]
        before = self.counts(users)
        self.deliver("alice.smith@example.test")  # into alice's mailbox
        self.deliver("staff@example.test")  # alice, bob
        self.deliver("everyone@example.test")  # staff (nested) + carol
        self.deliver("loop-a@example.test")  # loop-a <-> loop-b: alice, carol once
        after = self.counts(users)
        self.assertEqual(after["alice@example.test"] - before["alice@example.test"], 4)
        self.assertEqual(after["bob@example.test"] - before["bob@example.test"], 2)
        self.assertEqual(after["carol@example.test"] - before["carol@example.test"], 2)

    def test_logins(self):
        alice = OPENLDAP["alice"]["password"]  # has spaces
        carol = OPENLDAP["carol"]["password"]  # not ASCII
        self.assertTrue(self.pop_login("alice@example.test", alice).startswith("+OK"))
        self.assertTrue(self.pop_login("alice", alice).startswith("+OK"))  # user name
        self.assertTrue(self.pop_login("carol@example.test", carol).startswith("+OK"))
        self.assertEqual(self.smtp_auth("bob", OPENLDAP["bob"]["password"])[0], 235)
        self.assertEqual(self.smtp_auth("bob@example.test", "wrong")[0], 535)
        wrong = self.pop_login("alice@example.test", "alice secret 2")
        unknown = self.pop_login("nobody@example.test", "alice secret 1")
        self.assertTrue(wrong.startswith("-ERR [AUTH]"), wrong)
        self.assertEqual(wrong, unknown)

    def test_empty_password_and_injection_refused(self):
        alice = OPENLDAP["alice"]["password"]
        # An empty password would be an unauthenticated bind: never a login.
        self.assertEqual(self.smtp_auth("alice@example.test", "")[0], 501)  # malformed PLAIN
        for name in ("*", "*)(uid=*", "admin)(|(uid=*", "alice)(uid=*", "al*",
                     "alice\\2a", "uid=alice,ou=people,dc=example,dc=test"):
            reply = self.pop_login(name, alice)
            self.assertTrue(reply.startswith("-ERR"), "%r logged in: %s" % (name, reply))
        self.assertEqual(self.rcpt("*@example.test")[0] // 100, 5)
        self.assertEqual(self.rcpt("al*@example.test")[0], 550)


class LdapsTest(LdapCase):
    """ldaps:// (implicit TLS) instead of StartTLS."""
    PRESET = "openldap"

    @classmethod
    def overrides(cls, slapd):
        return {"uri": slapd.ldaps_uri, "starttls": False}

    def test_login_and_recipient_over_ldaps(self):
        pw = OPENLDAP["alice"]["password"]
        self.assertTrue(self.pop_login("alice@example.test", pw).startswith("+OK"))
        self.assertEqual(self.rcpt("bob@example.test")[0], 250)
        log = self.slapd.log_text()
        self.assertIn("TLS established", log)
        self.assertNotIn(STARTTLS_OID, log)


class ActiveDirectoryTest(LdapCase):
    PRESET = "activedirectory"
    LDAP = dict(AD_FILTERS, login_names="address,username")

    def test_group_policy_holds_for_its_other_addresses(self):
        # Staff is staff@ with proxyAddresses smtp:team@; a policy set on
        # staff@ (in the built-in directory) holds for team@ too.
        self.srv.cli("list", "policy", "staff@example.test", "members")
        try:
            for address in ("staff@example.test", "team@example.test"):
                code, text = self.rcpt(address)
                self.assertEqual(code, 550, (address, text))
                self.assertIn(b"5.7.1", text)
            with smtplib.SMTP(HOST, self.srv.smtp_port, timeout=30) as s:
                s.ehlo("client.example.net")
                s.mail("bob@example.test")  # a member
                self.assertEqual(s.rcpt("team@example.test")[0], 250)
            # the list's own address as sender is no member
            with smtplib.SMTP(HOST, self.srv.smtp_port, timeout=30) as s:
                s.ehlo("client.example.net")
                s.mail("staff@example.test")
                self.assertEqual(s.rcpt("staff@example.test")[0], 550)
        finally:
            self.srv.cli("list", "policy", "staff@example.test", "anyone")

    def test_recipients_and_groups(self):
        self.assertEqual(self.rcpt("asmith@example.test")[0], 250)  # smtp: proxyAddress
        self.assertEqual(self.rcpt("team@example.test")[0], 250)  # a group's alias
        code, text = self.rcpt("dave@example.test")  # disabled: does not receive
        self.assertEqual(code, 550, text)
        users = ["alice@example.test", "bob@example.test", "carol@example.test"]
        before = self.counts(users)
        self.deliver("everyone@example.test")  # Staff + Engineering (no mail) + dave
        after = self.counts(users)
        for u in users:
            self.assertEqual(after[u] - before[u], 1, u)

    def test_logins(self):
        pw = AD["alice"]["password"]
        for login in ("alice@example.test", "alice", "asmith@example.test"):
            self.assertTrue(self.pop_login(login, pw).startswith("+OK"), login)
        # bob's userPrincipalName differs from his mail
        self.assertTrue(self.pop_login("bob@corp.example.test",
                                       AD["bob"]["password"]).startswith("+OK"))
        # slapd lets dave bind; the disabled bit must stop him here
        reply = self.pop_login("dave", AD["dave"]["password"])
        self.assertTrue(reply.startswith("-ERR [AUTH]"), reply)


class PasswordChangeTest(LdapCase):
    """Logins are cached (a keyed hash of the password, per login) for as
    long as the directory's answer is: with cache_ttl = 0 a password changed
    in LDAP takes effect at once; with the cache, repeated logins cost no
    bind."""
    PRESET = "openldap"
    LDAP = {"cache_ttl": "0"}

    def test_changed_password_takes_effect(self):
        dn = OPENLDAP["carol"]["dn"]
        old = OPENLDAP["carol"]["password"]
        self.assertTrue(self.pop_login("carol@example.test", old).startswith("+OK"))
        self.slapd.modify_ldif("dn: %s\nchangetype: modify\nreplace: userPassword\n"
                               "userPassword: %s\n" % (dn, ldaptest.ssha("carol-new-4")))
        reply = self.pop_login("carol@example.test", old)
        self.assertTrue(reply.startswith("-ERR [AUTH]"), reply)
        self.assertTrue(self.pop_login("carol@example.test", "carol-new-4").startswith("+OK"))


class CachedLoginTest(LdapCase):
    PRESET = "openldap"

    def test_repeated_logins_bind_once(self):
        dn = OPENLDAP["bob"]["dn"]
        pw = OPENLDAP["bob"]["password"]
        binds = lambda: self.slapd.log_text().count('BIND dn="%s"' % dn)  # noqa: E731
        self.assertTrue(self.pop_login("bob@example.test", pw).startswith("+OK"))
        first = binds()
        self.assertGreaterEqual(first, 1)
        for _ in range(5):
            self.assertTrue(self.pop_login("bob@example.test", pw).startswith("+OK"))
        self.assertEqual(binds(), first)
        # a wrong password is never accepted from the cache
        reply = self.pop_login("bob@example.test", pw + "x")
        self.assertTrue(reply.startswith("-ERR [AUTH]"), reply)


class OutageTest(LdapCase):
    """slapd stops answering (SIGSTOP: connections are accepted, nothing is
    answered) and comes back."""
    PRESET = "openldap"

    def test_paused_directory_gives_temporary_errors_then_recovers(self):
        pw = OPENLDAP["bob"]["password"]
        self.assertTrue(self.pop_login("bob@example.test", pw).startswith("+OK"))
        self.assertEqual(self.rcpt("bob@example.test")[0], 250)
        before = self.srv.mailbox_count("bob@example.test")
        self.slapd.pause()
        try:
            # A known user keeps receiving and logging in from the cache
            # (cache_ttl), and the password is still checked.
            self.assertEqual(self.rcpt("bob@example.test")[0], 250)
            self.assertTrue(self.pop_login("bob@example.test", pw).startswith("+OK"))
            wrong = self.pop_login("bob@example.test", "not-bobs-password")
            self.assertTrue(wrong.startswith("-ERR [SYS/TEMP]"), wrong)
            # Anyone else gets a temporary error in time, never a permanent one.
            t = time.time()
            code, text = self.rcpt("carol@example.test")
            elapsed = time.time() - t
            self.assertEqual(code, 451, text)
            self.assertIn(b"4.4.3", text)
            self.assertLess(elapsed, 2 + 1 + 1, "timeout + 1 s (+1 s slack for the client)")
            reply = self.pop_login("carol@example.test", OPENLDAP["carol"]["password"])
            self.assertTrue(reply.startswith("-ERR [SYS/TEMP]"), reply)
        finally:
            self.slapd.resume()
        deadline = time.time() + 40
        while self.rcpt("bob@example.test")[0] != 250:
            self.assertLess(time.time(), deadline, "no recovery after slapd came back")
            time.sleep(0.5)
        self.deliver("bob@example.test")
        self.assertEqual(self.srv.mailbox_count("bob@example.test"), before + 1)


class SlowDirectoryTest(LdapCase):
    """slapd paused from a fresh start (no earlier outage remembered)."""
    PRESET = "openldap"

    def test_waiting_for_the_directory_holds_up_no_other_session(self):
        """Sessions share a few event-loop threads: one waiting for LDAP
        (here until the 2 s timeout) must not stall the others."""
        pw = OPENLDAP["bob"]["password"]
        self.assertEqual(self.rcpt("bob@example.test")[0], 250)  # now cached
        self.assertTrue(self.pop_login("bob@example.test", pw).startswith("+OK"))
        waiting = {}
        done = threading.Event()

        def slow():
            try:
                waiting["rcpt"] = self.rcpt("dave-unknown@example.test")
            finally:
                done.set()

        self.slapd.pause()
        try:
            # Logged in and at RCPT, so the lookup is what it waits for.
            t = threading.Thread(target=slow)
            t.start()
            time.sleep(0.3)
            self.assertFalse(done.is_set(), "the lookup did not wait for the paused directory: %r" % waiting)
            # Meanwhile others are served: a cached recipient and a cached login.
            self.assertEqual(self.rcpt("bob@example.test")[0], 250)
            self.assertTrue(self.pop_login("bob@example.test", pw).startswith("+OK"))
            self.assertFalse(done.is_set(), "served only after the slow lookup ended")
            t.join(30)
            self.assertEqual(waiting["rcpt"][0], 451, waiting)
        finally:
            self.slapd.resume()


if __name__ == "__main__":
    unittest.main(verbosity=2)
