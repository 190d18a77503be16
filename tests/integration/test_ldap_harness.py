"""Self-test of the LDAP harness (ldaptest.py): for both presets a real slapd
on loopback accepts user binds with the right password and refuses wrong
ones (ldapwhoami), StartTLS (-ZZ) and ldaps work with the generated CA, the
service account reads but anonymous does not, the fixtures answer the
lookups a mail backend makes, a paused slapd accepts connections but times
out a search which works again after resume, the password modify exop and
add_ldif work, and stop() leaves no process behind. Needs no postroomd."""
import os
import socket
import subprocess
import time
import unittest

import prtest
from ldaptest import USERS, Slapd, ldap_config, ldap_extra

STARTTLS_OID = "1.3.6.1.4.1.1466.20037"
PASSWD_MODIFY_OID = "1.3.6.1.4.1.4203.1.11.1"
WHOAMI_OID = "1.3.6.1.4.1.4203.1.11.3"


def slapd_pids_for(path):
    """PIDs of processes whose command line mentions path."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                if path.encode() in f.read():
                    pids.append(int(p))
        except OSError:
            pass
    return pids


def port_open(port):
    try:
        with socket.create_connection((prtest.HOST, port), timeout=1):
            return True
    except OSError:
        return False


class PresetMixin:
    preset = None

    @classmethod
    def setUpClass(cls):
        cls.d = Slapd("harness-" + cls.preset, preset=cls.preset, tls=True)
        cls.addClassCleanup(cls.d.cleanup)
        cls.d.start()

    def test_user_binds(self):
        for name, u in USERS[self.preset].items():
            r = self.d.whoami(u["dn"], u["password"])
            self.assertEqual(r.returncode, 0, (name, r.stderr))
            self.assertEqual(r.stdout.decode().strip().lower(), ("dn:" + u["dn"]).lower())
            r = self.d.whoami(u["dn"], u["password"] + "x")
            self.assertEqual(r.returncode, 49, (name, r.stderr))  # invalidCredentials
            self.assertIn(b"Invalid credentials", r.stderr)
        r = self.d.whoami("uid=nobody,ou=people," + self.d.base, "whatever")
        self.assertEqual(r.returncode, 49)
        r = self.d.whoami(self.d.bind_dn, self.d.bind_password)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_starttls(self):
        u = USERS[self.preset]["alice"]
        r = self.d.whoami(u["dn"], u["password"], starttls=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.d.tool("ldapsearch", "-LLL", "-b", self.d.base, "-s", "base", "1.1",
                        bind="service", starttls=True)
        self.assertIn(b"dn: " + self.d.base.encode(), r.stdout)
        # a client that does not trust our CA must refuse the certificate
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        if os.path.exists(bundle):
            r = self.d.whoami(u["dn"], u["password"], starttls=True,
                              extra_env={"LDAPTLS_CACERT": bundle})
            self.assertNotEqual(r.returncode, 0)

    def test_ldaps(self):
        u = USERS[self.preset]["bob"]
        r = self.d.whoami(u["dn"], u["password"], uri=self.d.ldaps_uri)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.d.search("(mail=bob@example.test)", ["1.1"],
                                           bind="service")), 1)

    def test_access(self):
        # the service account reads entries but not password hashes
        found = self.d.search("(mail=alice@example.test)", bind="service")
        self.assertEqual([e["dn"] for e in found], [USERS[self.preset]["alice"]["dn"]])
        self.assertNotIn("userPassword", found[0])
        self.assertIn("userPassword", self.d.search("(mail=alice@example.test)")[0])
        # anonymous sees nothing in the tree (not even the base: noSuchObject),
        # but the root DSE
        r = self.d.tool("ldapsearch", "-LLL", "-b", self.d.base, "(objectClass=*)",
                        bind=None, check=False)
        self.assertEqual(r.returncode, 32, r.stderr)
        self.assertNotIn(b"dn:", r.stdout)
        dse = self.d.search("(objectClass=*)", ["supportedExtension"], base="",
                            scope="base", bind=None)
        ext = dse[0]["supportedExtension"]
        for oid in (STARTTLS_OID, PASSWD_MODIFY_OID, WHOAMI_OID):
            self.assertIn(oid, ext)
        # a user reads its own entry, not somebody else's (so lookups made on
        # a connection still bound as a user find nothing)
        a, b = USERS[self.preset]["alice"], USERS[self.preset]["bob"]
        mine = self.d.search("(objectClass=*)", ["mail"], base=a["dn"], scope="base",
                             bind=(a["dn"], a["password"]))
        self.assertEqual([e["mail"] for e in mine], [[a["mail"]]])
        r = self.d.tool("ldapsearch", "-b", b["dn"], "-s", "base", "(objectClass=*)",
                        bind=(a["dn"], a["password"]), check=False)
        self.assertEqual(r.returncode, 32, r.stderr)

    def test_pause_resume(self):
        d = self.d
        d.pause()
        try:
            # the kernel still completes the TCP handshake ...
            with socket.create_connection((prtest.HOST, d.port), timeout=2) as s:
                # ... but an anonymous simple bind request is never answered
                s.sendall(bytes.fromhex("300c020101600702010304008000"))
                s.settimeout(1)
                with self.assertRaises(socket.timeout):
                    s.recv(100)
            t = time.time()
            r = d.tool("ldapsearch", "-b", d.base, "(mail=alice@example.test)", "1.1",
                       bind="service", check=False, timeout=15,
                       extra_env={"LDAPTIMEOUT": "2", "LDAPNETWORK_TIMEOUT": "2"})
            took = time.time() - t
            self.assertNotEqual(r.returncode, 0)
            self.assertGreaterEqual(took, 1.5)
            self.assertLess(took, 10)
            with self.assertRaises(subprocess.TimeoutExpired):
                d.search("(mail=alice@example.test)", ["1.1"], bind="service", timeout=2)
        finally:
            d.resume()
        self.assertEqual(len(d.search("(mail=alice@example.test)", ["1.1"],
                                      bind="service", timeout=10)), 1)

    def test_config_text(self):
        text = ldap_config(self.d)
        self.assertTrue(text.startswith("[ldap]\n"))
        for line in ("uri = " + self.d.uri, "starttls = yes", "ca_file = " + self.d.ca_file,
                     "bind_dn = " + self.d.bind_dn,
                     "bind_password_file = " + self.d.bind_password_file,
                     "base = dc=example,dc=test", "preset = " + self.preset):
            self.assertIn(line + "\n", text)
        text = ldap_config(self.d, uri=self.d.ldaps_uri, starttls=False, ca_file=None)
        self.assertIn("uri = ldaps://", text)
        self.assertIn("starttls = no\n", text)
        self.assertNotIn("ca_file", text)
        self.assertEqual(ldap_extra(self.d)["ldap.preset"], self.preset)
        with open(self.d.bind_password_file) as f:
            self.assertEqual(f.read(), self.d.bind_password)


class OpenLdapPreset(PresetMixin, unittest.TestCase):
    preset = "openldap"

    def test_fixture_lookups(self):
        s = lambda f, *a: self.d.search(f, list(a) or ["1.1"], bind="service")
        alice, bob = USERS["openldap"]["alice"]["dn"], USERS["openldap"]["bob"]["dn"]
        self.assertEqual([e["dn"] for e in s("(mailLocalAddress=ALICE.Smith@example.test)")],
                         [alice])
        self.assertEqual([e["dn"] for e in s("(mailAlternateAddress=robert@example.test)")],
                         [bob])
        staff = s("(&(objectClass=groupOfNames)(mail=staff@example.test))", "member")
        self.assertEqual(sorted(staff[0]["member"]), sorted([alice, bob]))
        loop = s("(mail=loop-a@example.test)", "member")[0]["member"]
        self.assertIn("cn=loop-b,ou=groups,dc=example,dc=test", loop)
        pm = s("(&(objectClass=nisMailAlias)(cn=postmaster))", "rfc822MailMember")
        self.assertEqual(pm[0]["rfc822MailMember"], ["alice@example.test"])
        carol = s("(uid=carol)", "cn")
        self.assertEqual(carol[0]["cn"], ["Carol M\u00fcller"])  # base64 in LDIF


class ActiveDirectoryPreset(PresetMixin, unittest.TestCase):
    preset = "activedirectory"

    def test_fixture_lookups(self):
        s = lambda f, *a: self.d.search(f, list(a) or ["1.1"], bind="service")
        users = USERS["activedirectory"]
        # proxyAddresses match case-insensitively, as in AD
        self.assertEqual([e["dn"] for e in s("(proxyAddresses=SMTP:asmith@example.test)")],
                         [users["alice"]["dn"]])
        self.assertEqual([e["dn"] for e in s("(proxyAddresses=smtp:staff@example.test)")],
                         ["cn=Staff,ou=groups,dc=example,dc=test"])
        self.assertEqual([e["dn"] for e in s("(sAMAccountName=CAROL)")], [users["carol"]["dn"]])
        self.assertEqual([e["dn"] for e in s("(userPrincipalName=bob@corp.example.test)")],
                         [users["bob"]["dn"]])
        # the AD bit-and matching rule: accounts without ACCOUNTDISABLE (2)
        enabled = s("(&(objectClass=inetOrgPerson)"
                    "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))", "sAMAccountName")
        self.assertEqual(sorted(e["sAMAccountName"][0] for e in enabled),
                         ["alice", "bob", "carol"])
        # groups holding a member, by its (escaped) DN
        groups = s("(&(objectClass=groupOfNames)(member=%s))" % users["carol"]["dn"]
                   .replace("\\", "\\5c"))
        self.assertEqual([e["dn"] for e in groups], ["cn=Engineering,ou=groups,dc=example,dc=test"])
        everyone = s("(mail=everyone@example.test)", "member")[0]["member"]
        self.assertIn("cn=Staff,ou=groups,dc=example,dc=test", everyone)


class Lifecycle(unittest.TestCase):
    def test_passwd_add_stop(self):
        d = Slapd("harness-life", preset="openldap", tls=False)
        self.addCleanup(d.cleanup)
        self.assertIsNone(d.pid)
        self.assertIsNone(d.ca_file)
        self.assertIsNone(d.ldaps_uri)
        self.assertIn("starttls = no\n", ldap_config(d))
        d.start()
        pid, port = d.pid, d.port
        self.assertTrue(port_open(port))
        # RFC 3062 password modify, by the user for itself
        bob = USERS["openldap"]["bob"]
        d.tool("ldappasswd", "-s", "bob new secret", bind=(bob["dn"], bob["password"]))
        self.assertEqual(d.whoami(bob["dn"], "bob new secret").returncode, 0)
        self.assertEqual(d.whoami(bob["dn"], bob["password"]).returncode, 49)
        # the service account may not change passwords
        r = d.tool("ldappasswd", "-s", "x", bob["dn"], bind="service", check=False)
        self.assertNotEqual(r.returncode, 0)
        # add_ldif as the admin, then the new user binds
        d.add_ldif("dn: uid=erin,ou=people,dc=example,dc=test\n"
                   "objectClass: inetOrgPerson\nobjectClass: postroomMailUser\n"
                   "uid: erin\ncn: Erin\nsn: E\nmail: erin@example.test\n"
                   "userPassword: erin-pw\n")
        self.assertEqual(d.whoami("uid=erin,ou=people,dc=example,dc=test",
                                  "erin-pw").returncode, 0)
        d.modify_ldif("dn: uid=erin,ou=people,dc=example,dc=test\nchangetype: modify\n"
                      "add: mailLocalAddress\nmailLocalAddress: e@example.test\n")
        self.assertEqual(len(d.search("(mailLocalAddress=e@example.test)", ["1.1"])), 1)
        # stop from the paused state too: nothing may be left running
        d.pause()
        d.stop()
        self.assertIsNone(d.pid)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        self.assertEqual(slapd_pids_for(d.config_dir), [])
        self.assertFalse(port_open(port))
        # and it starts again on the same port with the same data
        d.start()
        self.assertEqual(d.whoami(bob["dn"], "bob new secret").returncode, 0)
        d.cleanup()
        self.assertEqual(slapd_pids_for(d.config_dir), [])
        if os.environ.get("PR_KEEP_TMP") is None:
            self.assertFalse(os.path.exists(d.dir))


if __name__ == "__main__":
    prtest.main()
