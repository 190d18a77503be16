"""Admin writes to LDAP through [ldap] admin_bind_dn (issue 4): `postroom
user add/passwd/del`, `alias add/del` of a user's other address and `list
member add/del` of an LDAP group change the real slapd, which ldapsearch
then shows, and postroomd (cache_ttl 0) acts on at once: logins with the new
password, mail to the new address. OpenLDAP gets RFC 3062 Password Modify
(slapd hashes), Active Directory unicodePwd (the quoted password in
UTF-16LE), only over TLS. DNs of new users are escaped by libldap."""
import base64
import os
import poplib
import smtplib
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldaptest  # noqa: E402
import prtest  # noqa: E402
from prtest import HOST, Server  # noqa: E402

BASE = "dc=example,dc=test"
PEOPLE = "ou=people," + BASE
ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
PASSWD_EXOP = "1.3.6.1.4.1.4203.1.11.1"  # RFC 3062, as slapd logs it
# The test slapd's AD users are inetOrgPerson + postroomADObject; those made
# by postroom are AD's structural class user (no objectCategory in slapd).
AD_FILTERS = {
    "user_filter": "(|(objectClass=user)(&(objectClass=inetOrgPerson)"
                   "(objectClass=postroomADObject)))",
    "list_filter": "(objectClass=groupOfNames)",
}


class AdminCase(unittest.TestCase):
    PRESET = "openldap"
    LDAP = {}
    TLS = True

    @classmethod
    def setUpClass(cls):
        cls.slapd = ldaptest.Slapd("pr-admin-" + cls.PRESET, preset=cls.PRESET, tls=cls.TLS)
        cls.slapd.start()
        extra = {"directory.backend": "ldap", "pop3.allow_plaintext_auth": "yes",
                 "ldap.timeout": "5s", "server.limit_exempt_networks": "127.0.0.0/8",
                 "directory.auth_cache_ttl": "0"}
        over = {"admin_bind_dn": cls.slapd.admin_dn,
                "admin_bind_password_file": cls.slapd.admin_password_file,
                "admin_user_base": PEOPLE, "cache_ttl": "0", "negative_cache_ttl": "0"}
        over.update(cls.LDAP)
        extra.update(ldaptest.ldap_extra(cls.slapd, **over))
        cls.srv = Server("ldap-admin-" + cls.PRESET, extra=extra, domains="example.test")
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

    def cli(self, *args, password=None):
        return self.srv.cli(*args, input=None if password is None else
                            (password + "\n").encode())

    def refused(self, *args, password=None):
        r = self.srv.cli(*args, input=None if password is None else (password + "\n").encode(),
                         check=False)
        self.assertEqual(r.returncode, 1, "postroom %s: %r" % (" ".join(args), r))
        return r.stderr.decode(errors="replace")

    def entry(self, filter, *attrs):
        es = self.slapd.search(filter, attrs)
        self.assertEqual(len(es), 1, "%s: %r" % (filter, es))
        return es[0]

    def absent(self, filter):
        self.assertEqual(self.slapd.search(filter, ["1.1"]), [])

    def rcpt(self, address):
        with smtplib.SMTP(HOST, self.srv.smtp_port, timeout=30) as s:
            s.ehlo("client.example.net")
            s.mail("sender@example.net")
            return s.rcpt(address)[0]

    def pop_login(self, user, password):
        """True if USER/PASS succeeds."""
        p = poplib.POP3(HOST, self.srv.pop3_port, timeout=30)
        try:
            p.user(user)
            p.pass_(password)
            p.quit()
            return True
        except poplib.error_proto:
            p.close()
            return False

    def deliver_counts(self, address, users):
        before = {u: self.srv.mailbox_count(u) for u in users}
        self.srv.deliver(address, b"Subject: to %s\r\n\r\nhello\r\n" % address.encode())
        return {u: self.srv.mailbox_count(u) - before[u] for u in users}


class OpenLdapAdminTest(AdminCase):
    PRESET = "openldap"

    def test_user_add_passwd_del(self):
        user = "dora@example.test"
        self.assertEqual(self.rcpt(user), 550)
        self.cli("user", "add", user, "--password-stdin", password="first-Secret-1")
        e = self.entry("(uid=dora)", "objectClass", "mail", "userPassword")
        self.assertEqual(e["dn"], "uid=dora," + PEOPLE)
        self.assertEqual(e["mail"], [user])
        # slapd hashed it (Password Modify), postroom never stored it plain
        self.assertTrue(e["userPassword"][0].startswith("{SSHA}"), e["userPassword"])
        self.assertIn(PASSWD_EXOP, self.slapd.log_text())
        self.assertEqual(self.rcpt(user), 250)
        self.assertTrue(self.pop_login(user, "first-Secret-1"))
        self.assertTrue(self.pop_login("dora", "first-Secret-1") is False)  # login_names = address

        # another address for the new user: slapd needs inetLocalMailRecipient
        # for mailLocalAddress, added with it
        self.cli("alias", "add", "d.extra@example.test", user)
        e = self.entry("(uid=dora)", "objectClass", "mailLocalAddress")
        self.assertEqual(e["mailLocalAddress"], ["d.extra@example.test"])
        self.assertIn("inetLocalMailRecipient", e["objectClass"])
        self.assertEqual(self.rcpt("d.extra@example.test"), 250)
        self.cli("user", "passwd", user, "--password-stdin", password="second-Secret-2")
        self.assertFalse(self.pop_login(user, "first-Secret-1"))
        self.assertTrue(self.pop_login(user, "second-Secret-2"))
        self.slapd.whoami("uid=dora," + PEOPLE, "second-Secret-2")  # slapd's own bind agrees

        err = self.refused("user", "add", user, "--password-stdin", password="x-Secret-3")
        self.assertIn("already exists", err)
        self.cli("user", "del", user)
        self.absent("(uid=dora)")
        self.assertEqual(self.rcpt(user), 550)
        self.assertFalse(self.pop_login(user, "second-Secret-2"))
        self.assertIn("does not exist", self.refused("user", "del", user))

    def test_new_user_dn_is_escaped(self):
        # '=', '+' and '#' are allowed in an address's local part and are
        # DN syntax: libldap escapes them (RFC 4514), the entry is one RDN.
        user = "a=b+c#d@example.test"
        self.cli("user", "add", user, "--password-stdin", password="odd-Secret-4")
        e = self.entry("(mail=a=b+c#d@example.test)", "uid")
        self.assertEqual(e["uid"], ["a=b+c#d"])
        self.assertTrue(e["dn"].endswith("," + PEOPLE), e["dn"])
        self.assertEqual(len(self.slapd.search("(objectClass=*)", ["1.1"], base=e["dn"],
                                               scope="base")), 1)
        self.assertTrue(self.pop_login(user, "odd-Secret-4"))
        self.cli("user", "del", user)
        self.absent("(mail=a=b+c#d@example.test)")

    def test_other_address_add_del(self):
        extra = "a.smith@example.test"
        self.assertEqual(self.rcpt(extra), 550)
        self.cli("alias", "add", extra, ALICE)
        e = self.entry("(uid=alice)", "mailLocalAddress")
        self.assertIn(extra, e["mailLocalAddress"])
        self.assertEqual(self.deliver_counts(extra, [ALICE, BOB]), {ALICE: 1, BOB: 0})
        # an alias with several targets is not one user's address: it goes
        # to the built-in directory, LDAP is untouched
        self.cli("alias", "add", "pair@example.test", ALICE, BOB)
        self.absent("(mailLocalAddress=pair@example.test)")
        self.assertEqual(self.deliver_counts("pair@example.test", [ALICE, BOB]),
                         {ALICE: 1, BOB: 1})
        self.cli("alias", "del", "pair@example.test")
        self.cli("alias", "del", extra)
        e = self.entry("(uid=alice)", "mailLocalAddress")
        self.assertNotIn(extra, e.get("mailLocalAddress", []))
        self.assertEqual(self.rcpt(extra), 550)
        # a user's mailbox is not an alias to delete
        self.assertIn("does not exist", self.refused("alias", "del", BOB))
        self.entry("(mail=bob@example.test)", "1.1")

    def test_list_member_add_del(self):
        staff = ldaptest.GROUPS["openldap"]["staff"]["dn"]
        carol_dn = ldaptest.USERS["openldap"]["carol"]["dn"]
        self.cli("list", "member", "add", "staff@example.test", CAROL)
        self.assertIn(carol_dn, self.slapd.search("(objectClass=*)", ["member"], base=staff,
                                                  scope="base")[0]["member"])
        self.assertEqual(self.deliver_counts("staff@example.test", [ALICE, BOB, CAROL]),
                         {ALICE: 1, BOB: 1, CAROL: 1})
        err = self.refused("list", "member", "add", "staff@example.test", CAROL)
        self.assertIn("already a member", err)
        self.cli("list", "member", "del", "staff@example.test", CAROL)
        self.assertNotIn(carol_dn, self.slapd.search("(objectClass=*)", ["member"], base=staff,
                                                     scope="base")[0]["member"])
        self.assertEqual(self.deliver_counts("staff@example.test", [ALICE, BOB, CAROL]),
                         {ALICE: 1, BOB: 1, CAROL: 0})


class ActiveDirectoryAdminTest(AdminCase):
    PRESET = "activedirectory"
    LDAP = dict(AD_FILTERS)  # StartTLS to slapd (ldap_extra): passwords may go

    def unicode_pwd(self, dn):
        e = self.slapd.search("(objectClass=*)", ["unicodePwd"], base=dn, scope="base")[0]
        v = e["unicodePwd"][0]
        return v if isinstance(v, bytes) else v.encode()

    def test_user_add_passwd_alias_del(self):
        user = "erin@example.test"
        self.cli("user", "add", user, "--password-stdin", password="Erin-Secret-1")
        dn = "cn=erin," + PEOPLE
        e = self.entry("(sAMAccountName=erin)", "objectClass", "userPrincipalName",
                       "proxyAddresses", "userAccountControl", "mail")
        self.assertEqual(e["dn"].lower(), dn)
        self.assertIn("user", e["objectClass"])
        self.assertEqual(e["userPrincipalName"], [user])
        self.assertEqual(e["proxyAddresses"], ["SMTP:" + user])
        self.assertEqual(e["userAccountControl"], ["512"])
        self.assertEqual(self.unicode_pwd(dn), '"Erin-Secret-1"'.encode("utf-16-le"))
        self.assertEqual(self.rcpt(user), 250)

        # non-ASCII passwords: UTF-16LE, with a surrogate pair
        self.cli("user", "passwd", user, "--password-stdin", password="Gr\u00fc\u00dfe-\U0001F600")
        self.assertEqual(self.unicode_pwd(dn), '"Gr\u00fc\u00dfe-\U0001F600"'.encode("utf-16-le"))

        self.cli("alias", "add", "e.w@example.test", user)
        e = self.entry("(sAMAccountName=erin)", "proxyAddresses")
        self.assertEqual(sorted(e["proxyAddresses"]), ["SMTP:" + user, "smtp:e.w@example.test"])
        self.assertEqual(self.deliver_counts("E.W@example.test", [user]), {user: 1})
        self.cli("alias", "del", "e.w@example.test")
        e = self.entry("(sAMAccountName=erin)", "proxyAddresses")
        self.assertEqual(e["proxyAddresses"], ["SMTP:" + user])

        self.cli("user", "del", user)
        self.absent("(sAMAccountName=erin)")
        self.assertEqual(self.rcpt(user), 550)

    def test_existing_user_password_and_group(self):
        alice_dn = ldaptest.USERS["activedirectory"]["alice"]["dn"]
        self.cli("user", "passwd", ALICE, "--password-stdin", password="New-Alice-9")
        self.assertEqual(self.unicode_pwd(alice_dn), '"New-Alice-9"'.encode("utf-16-le"))
        staff = ldaptest.GROUPS["activedirectory"]["Staff"]["dn"]
        carol_dn = ldaptest.USERS["activedirectory"]["carol"]["dn"]
        # team@ is another address of Staff: an alias of staff@, not a list of its own
        self.assertIn("does not exist", self.refused("list", "member", "add", "team@example.test", CAROL))
        self.cli("list", "member", "add", "staff@example.test", CAROL)
        members = self.slapd.search("(objectClass=*)", ["member"], base=staff,
                                    scope="base")[0]["member"]
        self.assertIn(carol_dn.lower(), [m.lower() for m in members])
        self.cli("list", "member", "del", "staff@example.test", CAROL)
        members = self.slapd.search("(objectClass=*)", ["member"], base=staff,
                                    scope="base")[0]["member"]
        self.assertNotIn(carol_dn.lower(), [m.lower() for m in members])


class ActiveDirectoryNoTlsTest(AdminCase):
    """AD passwords never go over a connection without TLS."""
    PRESET = "activedirectory"
    LDAP = dict(AD_FILTERS, starttls="no")

    def test_password_refused_without_tls(self):
        alice_dn = ldaptest.USERS["activedirectory"]["alice"]["dn"]
        err = self.refused("user", "passwd", ALICE, "--password-stdin", password="Plain-Text-1")
        self.assertIn("only over TLS", err)
        e = self.slapd.search("(objectClass=*)", ["unicodePwd"], base=alice_dn, scope="base")[0]
        self.assertNotIn("unicodePwd", e)
        err = self.refused("user", "add", "frank@example.test", "--password-stdin",
                           password="Plain-Text-2")
        self.assertIn("only over TLS", err)
        self.absent("(sAMAccountName=frank)")


if __name__ == "__main__":
    unittest.main(verbosity=2)
