"""Reading the LDAP directory at scale, and `postroomd --check`.

Against a real slapd (tests/integration/ldaptest.py) that, like AD, stops a
plain search at 100 entries but pages (RFC 2696) to the end: `postroom
user list` and --check see all 250+ users; a 200-member group is expanded
with at most two base searches per member DN, skipping a disabled user;
nisMailAlias entries are lists by cn in every local domain (the fixture's
postmaster, and a bare local part as member); groupOfUniqueNames with an
optional UID on a member.

Against ldaptest.FakeDirectory, which answers as AD does where slapd
cannot: groups whose member values come in ranges ("member;range=0-2" then
"member;range=3-*"...), for member and for another member attribute; a
member DN in another domain (a referral); continuation references in
every subtree search; pages of two entries.

--check: the bind DN, URI, TLS, base and user count on success; a wrong
bind password, a wrong base, a certificate nobody trusts, a paused and a
stopped slapd each fail with the reason and a non-zero status, in time;
the local directory's user count."""
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldaptest  # noqa: E402
import prtest  # noqa: E402
from prtest import HOST, Server  # noqa: E402

BASE = ldaptest.BASE
PEOPLE = "ou=people," + BASE
ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
N_EXTRA = 250  # users u000..u249 added to the fixture's three
N_CROWD = 200  # crowd@ has u000..u199; u001 is disabled


def check(conf, timeout=60):
    """postroomd -c conf --check: (exit status, stdout + stderr, seconds)."""
    t = time.time()
    r = subprocess.run([prtest.POSTROOMD, "-c", conf, "--check"], capture_output=True,
                       timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace"), time.time() - t


class Directory(unittest.TestCase):
    """A running postroomd on some directory; subclasses set it up."""

    srv = None

    def rcpt(self, address):
        with smtplib.SMTP(HOST, self.srv.smtp_port, timeout=60) as s:
            s.ehlo("client.example.net")
            s.mail("sender@example.net")
            return s.rcpt(address)

    def count(self, address):
        """Messages in address's INBOX; 0 for someone who is no user (a
        disabled one) and so has no mailbox."""
        r = self.srv.cli("mailbox", "show", address, check=False)
        if r.returncode != 0:
            self.assertIn(b"does not exist", r.stderr)
            return 0
        for line in r.stdout.decode().splitlines():
            parts = line.split()
            if parts and parts[0] == "INBOX":
                return int(parts[1])
        return 0

    def deliver_counts(self, address, users):
        """Deliver one message to address; how many each user received."""
        before = {u: self.count(u) for u in users}
        self.srv.deliver(address, b"Subject: to %s\r\n\r\nhello\r\n" % address.encode())
        return {u: self.count(u) - before[u] for u in users}

    def user_list(self):
        return self.srv.cli("user", "list").stdout.decode().split()

    @classmethod
    def stop_server(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text()[-6000:])
        cls.srv.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc


class SlapdReadTest(Directory):
    @classmethod
    def setUpClass(cls):
        cls.slapd = ldaptest.Slapd("pr-read", preset="openldap",
                                   sizelimit="size.soft=100 size.hard=100 size.prtotal=unlimited")
        cls.addClassCleanup(cls.slapd.cleanup)
        cls.slapd.start()
        users = "".join(
            "dn: uid=u%03d,%s\nobjectClass: inetOrgPerson\nuid: u%03d\ncn: U %d\nsn: U\n"
            "mail: u%03d@example.test\n%s\n" % (i, PEOPLE, i, i, i,
                                               "description: disabled\n" if i == 1 else "")
            for i in range(N_EXTRA))
        crowd = "".join("member: uid=u%03d,%s\n" % (i, PEOPLE) for i in range(N_CROWD))
        cls.slapd.add_ldif(
            users +
            "dn: cn=crowd,ou=groups,%s\nobjectClass: groupOfNames\nobjectClass: postroomMailUser\n"
            "cn: crowd\nmail: crowd@example.test\n%s\n" % (BASE, crowd) +
            # an optional UID on bob's value (RFC 4517 nameAndOptionalUID)
            "dn: cn=uniq,ou=groups,%s\nobjectClass: groupOfUniqueNames\n"
            "objectClass: postroomMailUser\ncn: uniq\nmail: uniq@example.test\n"
            "uniqueMember: uid=bob,%s#'0101'B\nuniqueMember: uid=carol,%s\n\n"
            % (BASE, PEOPLE, PEOPLE) +
            # a bare local part, as in /etc/aliases: in the list's domain
            "dn: cn=helpdesk,ou=aliases,%s\nobjectClass: nisMailAlias\ncn: helpdesk\n"
            "rfc822MailMember: bob\nrfc822MailMember: carol@example.test\n" % BASE)
        extra = {"directory.backend": "ldap", "ldap.timeout": "2s",
                 "server.limit_exempt_networks": "127.0.0.0/8"}
        extra.update(ldaptest.ldap_extra(cls.slapd, disabled_filter="(description=disabled)"))
        cls.srv = Server("ldap-read", extra=extra, domains="example.test, example.org")
        cls.srv.start()
        cls.addClassCleanup(cls.stop_server)

    def test_postmaster_is_a_nismailalias_in_every_local_domain(self):
        self.assertEqual(self.rcpt("postmaster@example.test")[0], 250)
        self.assertEqual(self.deliver_counts("postmaster@example.test", [ALICE, BOB]),
                         {ALICE: 1, BOB: 0})
        self.assertEqual(self.deliver_counts("Postmaster@Example.ORG", [ALICE, BOB]),
                         {ALICE: 1, BOB: 0})
        # one search finds it: the list filter with the nisMailAlias branch
        log = self.slapd.log_text()
        self.assertRegex(log, r'filter="\(&\(\|\(objectClass=groupOfNames\).*'
                              r'\(mail=postmaster@example.test\).*'
                              r'\(&\(objectClass=nisMailAlias\)\(cn=postmaster\)\)\)\)"')
        self.assertEqual(self.rcpt("nosuchalias@example.test")[0], 550)

    def test_nismailalias_bare_member_and_unique_names(self):
        self.assertEqual(self.deliver_counts("helpdesk@example.test", [ALICE, BOB, CAROL]),
                         {ALICE: 0, BOB: 1, CAROL: 1})
        self.assertEqual(self.deliver_counts("uniq@example.test", [ALICE, BOB, CAROL]),
                         {ALICE: 0, BOB: 1, CAROL: 1})

    def test_big_group_two_base_searches_per_member(self):
        start = len(self.slapd.log_text())
        sample = ["u000@example.test", "u001@example.test", "u100@example.test",
                  "u199@example.test", "u200@example.test"]
        got = self.deliver_counts("crowd@example.test", sample)
        self.assertEqual(got, {"u000@example.test": 1, "u001@example.test": 0,
                               "u100@example.test": 1, "u199@example.test": 1,
                               "u200@example.test": 0})
        log = self.slapd.log_text()[start:]
        base = re.findall(r'SRCH base="uid=u\d{3},ou=people,dc=example,dc=test" scope=0', log)
        # enabled user? a list? for each member DN, no more (it was three)
        self.assertEqual(len(base), 2 * N_CROWD, log[-3000:])

    def test_user_list_pages_past_the_size_limit(self):
        users = self.user_list()
        self.assertEqual(len(users), 3 + N_EXTRA - 1)  # u001 is disabled
        self.assertEqual(users, sorted(users))
        for u in (ALICE, BOB, CAROL, "u000@example.test", "u249@example.test"):
            self.assertIn(u, users)
        self.assertNotIn("u001@example.test", users)
        # where a plain search stops
        r = self.slapd.tool("ldapsearch", "-LLL", "-b", BASE, "(objectClass=inetOrgPerson)",
                            "1.1", bind="service", check=False)
        self.assertEqual((r.returncode, r.stdout.count(b"dn: ")), (4, 100))  # sizeLimitExceeded
        rc, out, _ = check(self.srv.conf)
        self.assertEqual(rc, 0, out)
        self.assertIn("; %d users visible" % (3 + N_EXTRA - 1), out)


class CheckTest(unittest.TestCase):
    """--check against a slapd with the fixture only (3 users)."""

    @classmethod
    def setUpClass(cls):
        cls.slapd = ldaptest.Slapd("pr-check", preset="openldap")
        cls.addClassCleanup(cls.slapd.cleanup)
        cls.slapd.start()

    def conf(self, **overrides):
        extra = {"directory.backend": "ldap", "ldap.timeout": "2s"}
        extra.update(ldaptest.ldap_extra(self.slapd, **overrides))
        srv = Server("check", extra=extra, domains="example.test")
        self.addCleanup(srv.cleanup)
        return srv.conf

    def failed(self, conf, *words, limit=15):
        rc, out, took = check(conf)
        self.assertNotEqual(rc, 0, out)
        self.assertLess(took, limit, out)
        for w in words:
            self.assertIn(w, out)
        return out

    def test_ok(self):
        rc, out, _ = check(self.conf())
        self.assertEqual(rc, 0, out)
        self.assertIn("configuration ok", out)
        self.assertIn("ldap: bind ok as %s on %s (StartTLS); base %s found; 3 users visible"
                      % (self.slapd.bind_dn, self.slapd.uri, BASE), out)
        rc, out, _ = check(self.conf(uri=self.slapd.ldaps_uri, starttls=False))
        self.assertEqual(rc, 0, out)
        self.assertIn("on %s (ldaps); base %s found; 3 users visible"
                      % (self.slapd.ldaps_uri, BASE), out)
        # an unreachable first URI is skipped, as the daemon's pool does
        dead = "ldap://%s:%d" % (HOST, prtest.free_port())
        rc, out, _ = check(self.conf(uri="%s, %s" % (dead, self.slapd.uri)))
        self.assertEqual(rc, 0, out)
        self.assertIn("on %s (StartTLS) after %s: unreachable" % (self.slapd.uri, dead), out)

    def test_wrong_bind_password(self):
        bad = self.slapd._write("wrong.pw", "not-the-password")
        self.failed(self.conf(bind_password_file=bad), self.slapd.uri, "bind refused",
                    "Invalid credentials")

    def test_wrong_base(self):
        self.failed(self.conf(base="dc=nowhere,dc=test"), "bind ok as " + self.slapd.bind_dn,
                    "base dc=nowhere,dc=test not found")

    def test_untrusted_certificate(self):
        other = ldaptest.Slapd("pr-check-ca", preset="openldap")  # another CA
        self.addCleanup(other.cleanup)
        self.failed(self.conf(ca_file=other.ca_file), self.slapd.uri, "TLS failure")
        self.failed(self.conf(ca_file=other.ca_file, uri=self.slapd.ldaps_uri, starttls=False),
                    self.slapd.ldaps_uri, "TLS failure")

    def test_paused_and_stopped_directory(self):
        conf = self.conf()
        self.slapd.pause()
        try:
            self.failed(conf, self.slapd.uri, "timeout", limit=2 + 5)
        finally:
            self.slapd.resume()
        self.slapd.stop()
        try:
            self.failed(conf, self.slapd.uri, "unreachable", "Can't contact LDAP server")
        finally:
            self.slapd.start()
        self.assertEqual(check(conf)[0], 0)

    def test_local_directory(self):
        srv = Server("check-local")
        self.addCleanup(srv.cleanup)
        srv.add_user("one@example.test", "pw-one-12345")
        srv.add_user("two@example.test", "pw-two-12345")
        rc, out, _ = check(srv.conf)
        self.assertEqual(rc, 0, out)
        self.assertIn("local directory: 2 users", out)


# An AD-like tree for FakeDirectory: users U0..U6 (U5 disabled), groups
# whose member values come in ranges of three.
AD_PEOPLE = "OU=People," + BASE
AD_GROUPS = "OU=Groups," + BASE
SERVICE = "CN=postroom,OU=Services," + BASE
FOREIGN = "CN=Someone,OU=People,DC=other,DC=test"  # another domain: a referral


def ad_user(i):
    return "CN=U%d,%s" % (i, AD_PEOPLE)


def ad_tree():
    tree = {BASE: {"objectClass": ["top", "domain"], "dc": ["example"]},
            SERVICE: {"objectClass": ["top", "applicationProcess"], "cn": ["postroom"]}}
    for i in range(7):
        tree[ad_user(i)] = {
            "objectClass": ["top", "person", "organizationalPerson", "user"],
            "objectCategory": ["person"], "sAMAccountName": ["u%d" % i],
            "mail": ["u%d@example.test" % i], "proxyAddresses": ["SMTP:u%d@example.test" % i],
            "userAccountControl": ["514" if i == 5 else "512"]}
    tree["CN=Big," + AD_GROUPS] = {
        "objectClass": ["top", "group"], "mail": ["big@example.test"],
        "member": [ad_user(i) for i in range(6)] + ["CN=Inner," + AD_GROUPS, FOREIGN]}
    tree["CN=Inner," + AD_GROUPS] = {"objectClass": ["top", "group"], "member": [ad_user(6)]}
    tree["CN=Uniq," + AD_GROUPS] = {"objectClass": ["top", "group"], "mail": ["uniq@example.test"],
                                    "uniqueMember": [ad_user(i) for i in range(5)]}
    return tree


AD_USERS = ["u%d@example.test" % i for i in range(7)]


class FakeAdTest(Directory):
    @classmethod
    def setUpClass(cls):
        os.makedirs(prtest.TMP_ROOT, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="fake-ad-", dir=prtest.TMP_ROOT)
        cls.addClassCleanup(shutil.rmtree, tmp, ignore_errors=True)
        pw_file = os.path.join(tmp, "bind.pw")
        with open(pw_file, "w") as f:
            f.write("fake-secret")
        cls.fake = ldaptest.FakeDirectory(
            ad_tree(), passwords={SERVICE: "fake-secret"}, max_values=3, page_size=2,
            size_limit=2, references=["ldap://ForestDnsZones.example.test/DC=ForestDnsZones,"
                                      "DC=example,DC=test"]).start()
        cls.addClassCleanup(cls.fake.stop)
        extra = {"directory.backend": "ldap", "ldap.timeout": "2s",
                 "server.limit_exempt_networks": "127.0.0.0/8", "ldap.uri": cls.fake.uri,
                 "ldap.starttls": "no", "ldap.bind_dn": SERVICE,
                 "ldap.bind_password_file": pw_file, "ldap.base": BASE,
                 "ldap.preset": "activedirectory", "ldap.member_attributes": "member, uniqueMember"}
        cls.srv = Server("fake-ad", extra=extra, domains="example.test")
        cls.srv.start()
        cls.addClassCleanup(cls.stop_server)

    def searches_of(self, base):
        return [s for s in self.fake.searches if s["base"].lower() == base.lower()]

    def test_member_ranges(self):
        got = self.deliver_counts("big@example.test", AD_USERS)
        # U5 is disabled; U6 comes through Inner (no address); the foreign
        # member's referral is nothing here, not an error
        self.assertEqual(got, {u: 0 if u == "u5@example.test" else 1 for u in AD_USERS})
        asked = [s["attrs"] for s in self.searches_of("CN=Big," + AD_GROUPS)
                 if s["scope"] == 0]
        self.assertIn(["member;range=3-*"], asked)
        self.assertIn(["member;range=6-*"], asked)
        self.assertNotIn(["member;range=9-*"], asked)  # 6-* was the last chunk
        # what each member DN is: two base searches, enabled user and list
        for dn in (ad_user(0), ad_user(5), "CN=Inner," + AD_GROUPS, FOREIGN):
            self.assertEqual(len(self.searches_of(dn)), 2, (dn, self.searches_of(dn)))

    def test_ranges_of_another_member_attribute(self):
        got = self.deliver_counts("uniq@example.test", AD_USERS)
        self.assertEqual(got, {u: 1 if u in AD_USERS[:5] else 0 for u in AD_USERS})
        asked = [s["attrs"] for s in self.searches_of("CN=Uniq," + AD_GROUPS)]
        self.assertIn(["uniqueMember;range=3-*"], asked)

    def test_user_list_and_check_page_through_references(self):
        enabled = sorted(u for u in AD_USERS if u != "u5@example.test")
        self.assertEqual(self.user_list(), enabled)
        cookies = [s["paged"] for s in self.fake.searches if s["paged"] is not None]
        self.assertIn("", cookies)  # the first page
        self.assertIn("4", cookies)  # the third: pages of two
        rc, out, _ = check(self.srv.conf)
        self.assertEqual(rc, 0, out)
        self.assertIn("ldap: bind ok as %s on %s (no TLS); base %s found; 6 users visible"
                      % (SERVICE, self.fake.uri, BASE), out)


if __name__ == "__main__":
    prtest.main()
