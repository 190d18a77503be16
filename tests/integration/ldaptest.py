r"""Shared harness for LDAP directory tests: a real OpenLDAP slapd on loopback
with its own cn=config, database, TLS certificates and fixture data, all in a
temporary directory (under $PR_TEST_TMP if set). Standard library only.

Needs the Debian packages slapd, ldap-utils and openssl (tests/run.sh installs
them). The harness never reads or changes /etc/ldap/slapd.d and uses its own
free ports, so it works whether or not a system slapd is running. To install
the package without its postinst starting a system slapd (outside the test
suite), put `exit 101` into /usr/sbin/policy-rc.d first.

    from ldaptest import Slapd, USERS, ldap_config, ldap_extra
    with Slapd("lookup", preset="openldap") as d:      # started
        d.search("(mail=alice@example.test)", ["uid"])
        # -> [{"dn": "uid=alice,ou=people,dc=example,dc=test", "uid": ["alice"]}]
        conf_text = ldap_config(d)                       # a postroom [ldap] section
        extra = ldap_extra(d, starttls=False)            # for prtest.Server(extra=...)

Presets (both use base dc=example,dc=test, see tests/fixtures/ldap/):
  openldap         users uid=NAME,ou=people with mail / mailLocalAddress /
                   mailAlternateAddress, groupOfNames lists with mail, a
                   nisMailAlias (schemas core cosine inetorgperson nis misc +
                   postroom-mail.ldif)
  activedirectory  users cn=FULL NAME,ou=people with sAMAccountName,
                   userPrincipalName, proxyAddresses, userAccountControl;
                   groupOfNames groups with mail/proxyAddresses (schemas core
                   cosine inetorgperson nis + postroom-ad.ldif)

Accounts: admin_dn (the rootdn, may write everything), bind_dn (service
account cn=postroom,ou=services, reads everything except userPassword),
every user (binds as itself, reads its own entry, may change its own
password with the RFC 3062 password modify exop, e.g. ldappasswd),
anonymous (bind/auth only, reads nothing but the root DSE and schema).
Searches by a user or anonymous outside what they may read fail with
noSuchObject (32), so lookups on a connection still bound as a user fail.
Password files are written without a trailing newline (as `ldapsearch -y`
expects them). slapd logs at "stats" level to d.log (d.log_text()): every
bind, search filter and result the code under test caused.

DN spelling: slapd returns the AD preset's "cn=Lee\, Carol,..." entry as
"cn=Lee\2C Carol,..." (USERS has that form) while the Engineering group's
member value keeps "\,": compare DNs normalized, not as strings.
"""
import base64
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from prtest import HOST, TMP_ROOT, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures", "ldap"))
SYSTEM_SCHEMA = "/etc/ldap/schema"
MODULE_PATH = "/usr/lib/ldap"

BASE = "dc=example,dc=test"
ADMIN_DN = "cn=admin," + BASE
SERVICE_DN = "cn=postroom,ou=services," + BASE
PRESETS = ("openldap", "activedirectory")

# Users in the fixtures, with the passwords the tests bind with. alice's
# password contains spaces, carol's is not ASCII (UTF-8 on the wire).
USERS = {
    "openldap": {
        "alice": {"dn": "uid=alice,ou=people," + BASE, "password": "alice secret 1",
                  "mail": "alice@example.test",
                  "aliases": ["alice.smith@example.test"]},      # mailLocalAddress
        "bob": {"dn": "uid=bob,ou=people," + BASE, "password": "bob-secret-2",
                "mail": "bob@example.test",
                "aliases": ["robert@example.test"]},             # mailAlternateAddress
        "carol": {"dn": "uid=carol,ou=people," + BASE, "password": "carol-s\u00e9cret-3",
                  "mail": "carol@example.test", "aliases": []},
    },
    "activedirectory": {
        "alice": {"dn": "cn=Alice Smith,ou=people," + BASE, "password": "alice secret 1",
                  "mail": "alice@example.test", "upn": "alice@example.test",
                  "aliases": ["alice.smith@example.test", "asmith@example.test"],
                  "uac": 512},
        "bob": {"dn": "cn=Bob Jones,ou=people," + BASE, "password": "bob-secret-2",
                "mail": "bob@example.test", "upn": "bob@corp.example.test",
                "aliases": ["robert@example.test"], "uac": 512},
        # the fixture writes "cn=Lee\, Carol" (also so in Engineering's member
        # value); slapd returns the entry's DN with the comma as "\2C"
        "carol": {"dn": "cn=Lee\\2C Carol,ou=people," + BASE, "password": "carol-s\u00e9cret-3",
                  "mail": "carol@example.test", "upn": "carol@example.test",
                  "aliases": [], "uac": 66048},
        # disabled (ACCOUNTDISABLE bit): slapd still lets dave bind, a backend
        # has to check userAccountControl itself
        "dave": {"dn": "cn=Dave Miller,ou=people," + BASE, "password": "dave-secret-4",
                 "mail": "dave@example.test", "upn": "dave@example.test",
                 "aliases": [], "uac": 514, "disabled": True},
    },
}

# Groups in the fixtures; "members" lists direct members by name (users from
# USERS, groups from here). Expanded: openldap everyone = alice bob carol;
# loop-a = loop-b = alice carol; AD Everyone = alice bob carol (+ dave, disabled).
GROUPS = {
    "openldap": {
        "staff": {"dn": "cn=staff,ou=groups," + BASE, "mail": "staff@example.test",
                  "members": ["alice", "bob"]},
        "everyone": {"dn": "cn=everyone,ou=groups," + BASE, "mail": "everyone@example.test",
                     "members": ["staff", "carol"]},
        "loop-a": {"dn": "cn=loop-a,ou=groups," + BASE, "mail": "loop-a@example.test",
                   "members": ["loop-b", "alice"]},
        "loop-b": {"dn": "cn=loop-b,ou=groups," + BASE, "mail": "loop-b@example.test",
                   "members": ["loop-a", "carol"]},
    },
    "activedirectory": {
        "Staff": {"dn": "cn=Staff,ou=groups," + BASE, "mail": "staff@example.test",
                  "aliases": ["team@example.test"], "members": ["alice", "bob"]},
        "Engineering": {"dn": "cn=Engineering,ou=groups," + BASE, "mail": None,
                        "members": ["carol"]},
        "Everyone": {"dn": "cn=Everyone,ou=groups," + BASE, "mail": "everyone@example.test",
                     "members": ["Staff", "Engineering", "dave"]},
    },
}
# openldap preset only: nisMailAlias cn=postmaster,ou=aliases -> alice@example.test
ALIASES = {"openldap": {"postmaster": ["alice@example.test"]}, "activedirectory": {}}

SCHEMAS = {
    "openldap": ["core", "cosine", "inetorgperson", "nis", "misc",
                 os.path.join(FIXTURES, "postroom-mail.ldif")],
    "activedirectory": ["core", "cosine", "inetorgperson", "nis",
                        os.path.join(FIXTURES, "postroom-ad.ldif")],
}


def _die_with_parent():
    """preexec_fn: SIGTERM slapd if the test process dies without cleanup
    (e.g. killed by a ctest timeout), so no daemon is left behind."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _which(name):
    path = shutil.which(name) or os.path.join("/usr/sbin", name)
    if not os.access(path, os.X_OK):
        raise RuntimeError("%s not found: apt-get install slapd ldap-utils openssl" % name)
    return path


def ssha(password):
    """An {SSHA} userPassword value for password (str, hashed as UTF-8)."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def parse_ldif(text):
    """Entries of ldapsearch -LLL output as dicts: "dn" -> str, every other
    attribute -> list of values (str, or bytes if not UTF-8)."""
    entries, cur, lines = [], None, []
    for line in text.splitlines():      # unfold continuation lines first
        if line.startswith(" ") and lines:
            lines[-1] += line[1:]
        else:
            lines.append(line)
    for line in lines + [""]:
        if not line:
            if cur is not None:
                entries.append(cur)
            cur = None
            continue
        if line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        if value.startswith(":"):
            raw = base64.b64decode(value[1:].strip())
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                value = raw
        else:
            value = value[1:] if value.startswith(" ") else value
        if name.lower() == "dn":
            cur = {"dn": value}
        elif cur is not None:
            cur.setdefault(name, []).append(value)
    return entries


class Slapd:
    """One slapd with its own cn=config, mdb database, certificates and ports.
    Construction prepares everything (config, data, certificates); start()
    runs it. Usable as a context manager (start ... cleanup)."""

    def __init__(self, name="ldap", preset="openldap", tls=True, fixture=None,
                 loglevel="stats", sizelimit=None):
        if preset not in PRESETS:
            raise ValueError("unknown preset %r" % preset)
        self.slapd_bin = _which("slapd")
        self.slapadd_bin = _which("slapadd")
        for tool in ("ldapsearch", "ldapadd", "ldapmodify", "ldapwhoami"):
            _which(tool)
        self.name = name
        self.preset = preset
        self.tls = tls
        self.loglevel = loglevel
        # olcSizeLimit of the database (None: slapd's default, 500 entries
        # per search for everyone but the rootdn), e.g. "size.soft=100
        # size.hard=100 size.prtotal=unlimited" for a directory that, like
        # AD (MaxPageSize), answers a plain search with part of the entries
        # and all of them only page by page (RFC 2696)
        self.sizelimit = sizelimit
        self.users = USERS[preset]
        self.groups = GROUPS[preset]
        os.makedirs(TMP_ROOT, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="slapd-%s-" % name, dir=TMP_ROOT)
        self.config_dir = os.path.join(self.dir, "slapd.d")
        self.db_dir = os.path.join(self.dir, "db")
        self.log = os.path.join(self.dir, "slapd.log")
        self.port = free_port()
        self.ldaps_port = free_port() if tls else None
        self.proc = None
        self.paused = False
        self.base = BASE
        self.admin_dn = ADMIN_DN
        self.bind_dn = SERVICE_DN
        self.admin_password = "admin-" + secrets.token_hex(8)
        self.bind_password = "postroom-" + secrets.token_hex(8)
        self.admin_password_file = self._write("admin.pw", self.admin_password)
        self.bind_password_file = self._write("bind.pw", self.bind_password)
        self.ca_file = self.cert_file = self.key_file = None
        try:
            if tls:
                self._make_certs()
            self._make_config()
            self._load(fixture or os.path.join(FIXTURES, preset + ".ldif"))
        except BaseException:
            self.cleanup()
            raise

    # -- properties -------------------------------------------------------
    @property
    def uri(self):
        return "ldap://%s:%d" % (HOST, self.port)

    @property
    def ldaps_uri(self):
        return "ldaps://%s:%d" % (HOST, self.ldaps_port) if self.tls else None

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def user(self, name):
        return self.users[name]

    # -- setup ------------------------------------------------------------
    def _write(self, name, text, mode=0o600):
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def _run(self, argv, input=None, timeout=60, check=True, env=None):
        r = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                           env=env)
        if check and r.returncode != 0:
            raise AssertionError("%s failed (%d): %s%s" % (
                " ".join(argv), r.returncode, r.stdout.decode(errors="replace"),
                r.stderr.decode(errors="replace")))
        return r

    def _make_certs(self):
        """A throwaway CA and a server certificate for 127.0.0.1/localhost."""
        d = self.dir
        self.ca_file = os.path.join(d, "ca.pem")
        ca_key = os.path.join(d, "ca.key")
        self.cert_file = os.path.join(d, "server.pem")
        self.key_file = os.path.join(d, "server.key")
        csr = os.path.join(d, "server.csr")
        # libldap checks a "localhost" URI against this machine's host name
        names = ["localhost"] + [h for h in [socket.gethostname()]
                                 if h and re.fullmatch(r"[A-Za-z0-9.-]+", h) and h != "localhost"]
        san = ",".join(["IP:127.0.0.1"] + ["DNS:" + n for n in names])
        ext = self._write("server.ext", "subjectAltName=" + san + "\n"
                          "basicConstraints=critical,CA:FALSE\n"
                          "keyUsage=critical,digitalSignature,keyEncipherment\n"
                          "extendedKeyUsage=serverAuth\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self._run(["openssl", "req", "-x509", "-new"] + ec +
                  ["-keyout", ca_key, "-out", self.ca_file, "-days", "7",
                   "-subj", "/O=Postroom tests/CN=Postroom LDAP test CA %s" % self.name,
                   "-addext", "basicConstraints=critical,CA:TRUE",
                   "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        self._run(["openssl", "req", "-new"] + ec +
                  ["-keyout", self.key_file, "-out", csr, "-subj", "/CN=localhost"])
        self._run(["openssl", "x509", "-req", "-in", csr, "-CA", self.ca_file,
                   "-CAkey", ca_key, "-set_serial", str(secrets.randbits(63)),
                   "-days", "7", "-extfile", ext, "-out", self.cert_file])

    def _make_config(self):
        includes = []
        for s in SCHEMAS[self.preset]:
            path = s if os.path.isabs(s) else os.path.join(SYSTEM_SCHEMA, s + ".ldif")
            includes.append("include: file://%s" % urllib.request.pathname2url(path))
        tls = ""
        if self.tls:
            tls = ("olcTLSCACertificateFile: %s\nolcTLSCertificateFile: %s\n"
                   "olcTLSCertificateKeyFile: %s\nolcTLSVerifyClient: never\n"
                   % (self.ca_file, self.cert_file, self.key_file))
        admin, service = self.admin_dn, self.bind_dn
        text = """dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {dir}/slapd.pid
olcArgsFile: {dir}/slapd.args
olcPasswordHash: {{SSHA}}
{tls}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {modpath}
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{includes}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcAccess: {{0}}to dn.base="" by * read
olcAccess: {{1}}to dn.base="cn=Subschema" by * read

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {db}
olcSuffix: {base}
olcRootDN: {admin}
olcRootPW: {rootpw}
olcDbMaxSize: 67108864
olcDbIndex: objectClass eq
olcDbIndex: cn,uid,mail eq,sub
olcDbIndex: member eq
olcDbIndex: {index}
{sizelimit}olcAccess: {{0}}to attrs=userPassword
  by self write
  by dn.exact="{admin}" write
  by anonymous auth
  by * none
olcAccess: {{1}}to *
  by dn.exact="{admin}" write
  by dn.exact="{service}" read
  by self read
  by * none
""".format(dir=self.dir, tls=tls, modpath=MODULE_PATH, includes="\n\n".join(includes),
           db=self.db_dir, base=self.base, admin=admin, service=service,
           rootpw=ssha(self.admin_password),
           sizelimit=("olcSizeLimit: %s\n" % self.sizelimit) if self.sizelimit else "",
           index=("mailLocalAddress,mailAlternateAddress,rfc822MailMember eq"
                  if self.preset == "openldap" else
                  "sAMAccountName,userPrincipalName,proxyAddresses eq"))
        path = self._write("config.ldif", text)
        os.makedirs(self.config_dir)
        os.makedirs(self.db_dir)
        self._run([self.slapadd_bin, "-n0", "-F", self.config_dir, "-l", path])

    def _load(self, fixture):
        with open(fixture, encoding="utf-8") as f:
            text = f.read()
        text = self._fill_passwords(text)
        path = self._write("data.ldif", text)
        self._run([self.slapadd_bin, "-q", "-F", self.config_dir, "-b", self.base,
                   "-l", path])

    def _fill_passwords(self, text):
        out = []
        for line in text.split("\n"):
            if line.startswith("userPassword: @PASSWORD:") and line.rstrip().endswith("@"):
                who = line.rstrip()[len("userPassword: @PASSWORD:"):-1]
                pw = self.bind_password if who == "postroom" else self.users[who]["password"]
                line = "userPassword: " + ssha(pw)
            out.append(line)
        return "\n".join(out)

    # -- process control --------------------------------------------------
    def start(self, timeout=30):
        if self.pid:
            return self
        urls = self.uri + "/" + ((" " + self.ldaps_uri + "/") if self.tls else "")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.slapd_bin, "-h", urls, "-F", self.config_dir, "-d", self.loglevel],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent)
        self.paused = False
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError("slapd exited (%s) at start:\n%s" % (rc, self.log_text()))
            r = self.tool("ldapsearch", "-b", self.base, "-s", "base", "(objectClass=*)", "1.1",
                          bind="service", check=False, timeout=10,
                          extra_env={"LDAPTIMEOUT": "2", "LDAPNETWORK_TIMEOUT": "2"})
            if r.returncode == 0:
                return self
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("slapd did not answer a service bind+search:\n%s\n%s"
                                   % (r.stderr.decode(errors="replace"), self.log_text()))
            time.sleep(0.1)

    def stop(self, timeout=15):
        """SIGTERM (after SIGCONT if paused), SIGKILL if it does not exit.
        Returns the exit status (None if it was not running)."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        self.paused = False
        return rc

    def kill(self):
        """SIGKILL: the directory vanishes without a goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.paused = False

    def restart(self):
        self.stop()
        return self.start()

    def _state(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]

    def _wait_state(self, stopped, timeout=10):
        # signals are delivered asynchronously: wait until it took effect
        deadline = time.time() + timeout
        while (self._state() in "Tt") != stopped:
            if time.time() > deadline:
                raise RuntimeError("slapd did not %s" % ("stop" if stopped else "continue"))
            time.sleep(0.01)

    def pause(self):
        """SIGSTOP: the kernel still accepts TCP connections on the ports,
        but nothing is ever answered until resume(). Returns once the
        process is stopped."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True
        self._wait_state(True)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False
        self._wait_state(False)

    def cleanup(self):
        self.stop()
        if os.environ.get("PR_KEEP_TMP") is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def log_text(self):
        if os.path.exists(self.log):
            with open(self.log, errors="replace") as f:
                return f.read()
        return ""

    # -- client tools -----------------------------------------------------
    def env(self, **extra):
        """Environment for OpenLDAP client tools: trust our CA (and nothing
        else), demand a valid certificate, ignore ~/.ldaprc."""
        env = dict(os.environ)
        env["LDAPRC"] = "/nonexistent-ldaprc"
        if self.tls:
            env["LDAPTLS_CACERT"] = self.ca_file
            env["LDAPTLS_REQCERT"] = "demand"
        env.update(extra)
        return env

    def tool(self, name, *args, bind="admin", uri=None, starttls=False, input=None,
             check=True, timeout=30, extra_env=None):
        """Run an OpenLDAP client (ldapsearch, ldapadd, ldapwhoami, ldappasswd,
        ...) with -x against uri (default self.uri). bind: "admin", "service",
        None (anonymous) or (dn, password). starttls: -ZZ. Returns the
        CompletedProcess; raises AssertionError on failure if check."""
        argv = [_which(name), "-x", "-H", uri or self.uri]
        if starttls:
            argv.append("-ZZ")
        if bind == "admin":
            argv += ["-D", self.admin_dn, "-y", self.admin_password_file]
        elif bind == "service":
            argv += ["-D", self.bind_dn, "-y", self.bind_password_file]
        elif bind is not None:
            argv += ["-D", bind[0], "-w", bind[1]]
        argv += list(args)
        if isinstance(input, str):
            input = input.encode("utf-8")
        return self._run(argv, input=input, timeout=timeout, check=check,
                         env=self.env(**(extra_env or {})))

    def whoami(self, dn, password, uri=None, starttls=False, timeout=30, extra_env=None):
        """ldapwhoami as (dn, password); CompletedProcess, never raises on rc."""
        return self.tool("ldapwhoami", bind=(dn, password), uri=uri, starttls=starttls,
                         check=False, timeout=timeout, extra_env=extra_env)

    def add_ldif(self, text):
        """ldapadd as the admin (rootdn)."""
        return self.tool("ldapadd", input=text)

    def modify_ldif(self, text):
        """ldapmodify as the admin (changetype records allowed)."""
        return self.tool("ldapmodify", input=text)

    def search(self, filter="(objectClass=*)", attrs=(), base=None, scope="sub",
               bind="admin", timeout=30, extra_env=None):
        """ldapsearch (as the admin by default); a list of dicts, see
        parse_ldif. Raises AssertionError if ldapsearch fails and
        subprocess.TimeoutExpired if it takes longer than timeout."""
        r = self.tool("ldapsearch", "-LLL", "-o", "ldif_wrap=no", "-b", self.base if base is None else base,
                      "-s", scope, filter, *attrs, bind=bind, timeout=timeout,
                      extra_env=extra_env)
        return parse_ldif(r.stdout.decode("utf-8", errors="replace"))


def ldap_settings(slapd, **overrides):
    """The key/value pairs of a postroom [ldap] section for this slapd, in
    order. An override of None drops the key; True/False become yes/no;
    unknown keys are appended."""
    kv = {
        "uri": slapd.uri,
        "starttls": "yes" if slapd.tls else "no",
        "ca_file": slapd.ca_file,
        "bind_dn": slapd.bind_dn,
        "bind_password_file": slapd.bind_password_file,
        "base": slapd.base,
        "preset": slapd.preset,
    }
    kv.update(overrides)
    out = {}
    for k, v in kv.items():
        if v is None:
            continue
        if v is True or v is False:
            v = "yes" if v else "no"
        out[k] = str(v)
    return out


def ldap_config(slapd, **overrides):
    """Text of a postroom [ldap] section, e.g. ldap_config(d, starttls=False,
    uri=d.ldaps_uri)."""
    return "[ldap]\n" + "".join("%s = %s\n" % kv for kv in
                                ldap_settings(slapd, **overrides).items())


def ldap_extra(slapd, **overrides):
    """The same as a prtest.Server(extra=...) dict ({"ldap.uri": ...})."""
    return {"ldap." + k: v for k, v in ldap_settings(slapd, **overrides).items()}


# -- a fake directory server ----------------------------------------------
#
# For what slapd cannot be made to do: attribute descriptions with AD's
# ";range=" option (slapd refuses '=' in an option), continuation
# references and referrals from a plain test tree, a tiny page size.

PAGED_OID = "1.2.840.113556.1.4.319"  # RFC 2696
AD_BIT_AND = "1.2.840.113556.1.4.803"  # LDAP_MATCHING_RULE_BIT_AND


def _ber_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(tag, content):
    return bytes([tag]) + _ber_len(len(content)) + content


def _int(n, tag=0x02):
    return _tlv(tag, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def _str(s, tag=0x04):
    return _tlv(tag, s.encode("utf-8") if isinstance(s, str) else s)


def _read(data, i):
    """One BER TLV of data at i: (tag, content, next i)."""
    tag, n = data[i], data[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(data[i:i + k], "big")
        i += k
    return tag, data[i:i + n], i + n


def _items(data):
    out, i = [], 0
    while i < len(data):
        tag, v, i = _read(data, i)
        out.append((tag, v))
    return out


def _filter(data):
    """A BER filter as a tuple: ("&", [..]) ("|", [..]) ("!", f) ("=", a, v)
    ("*", a) ("ext", rule, a, v), anything else ("?",)."""
    tag, v, _ = _read(data, 0)
    return _filter_of(tag, v)


def _filter_of(tag, v):
    if tag in (0xA0, 0xA1):
        return ("&" if tag == 0xA0 else "|", [_filter_of(t, c) for t, c in _items(v)])
    if tag == 0xA2:
        t, c, _ = _read(v, 0)
        return ("!", _filter_of(t, c))
    if tag == 0xA3:
        (_, a), (_, val) = _items(v)
        return ("=", a.decode(), val.decode("utf-8", "replace"))
    if tag == 0x87:
        return ("*", v.decode())
    if tag == 0xA9:
        parts = {t: c.decode("utf-8", "replace") for t, c in _items(v)}
        return ("ext", parts.get(0x81), parts.get(0x82), parts.get(0x83))
    return ("?",)


def filter_text(f):
    """RFC 4515-like text of a decoded filter (values as they are)."""
    op = f[0]
    if op in ("&", "|"):
        return "(%s%s)" % (op, "".join(filter_text(x) for x in f[1]))
    if op == "!":
        return "(!%s)" % filter_text(f[1])
    if op == "=":
        return "(%s=%s)" % (f[1], f[2])
    if op == "*":
        return "(%s=*)" % f[1]
    if op == "ext":
        return "(%s:%s:=%s)" % (f[2], f[1], f[3])
    return "(?)"


class FakeDirectory:
    """A small LDAPv3 server on loopback (plain TCP) over an in-memory tree,
    acting as AD does where slapd cannot:

    - ranged retrieval: an attribute with more than max_values values is
      returned as "member;range=0-<max-1>" beside an empty "member", and a
      request for "member;range=<low>-*" gets the next chunk, named
      "member;range=<low>-<high>" or, for the last one, "...-*";
    - paging (RFC 2696) with pages of at most page_size entries, whatever
      the client asks; a plain subtree search stops after size_limit
      entries with sizeLimitExceeded (AD's MaxPageSize);
    - every subtree search also answers the continuation references in
      references; a base search for a DN outside base gets a referral.

    entries: {dn: {attribute: [values]}} (DNs and attribute names compare
    without regard to case, so do equality matches); passwords: {dn:
    password} for simple binds (anonymous binds always succeed). Filters:
    and, or, not, equality, presence and AD's bit-and extensible match;
    anything else is false. Every search is recorded in self.searches as a
    dict (base, scope, filter: text, attrs, paged: cookie or None).
    Usable as a context manager."""

    def __init__(self, entries, base=BASE, passwords=None, max_values=1500, page_size=1000,
                 size_limit=1000, references=()):
        import socketserver
        import threading
        self.entries = {dn.lower(): (dn, attrs) for dn, attrs in entries.items()}
        self.base = base
        self.passwords = {k.lower(): v for k, v in (passwords or {}).items()}
        self.max_values = max_values
        self.page_size = page_size
        self.size_limit = size_limit
        self.references = list(references)
        self.searches = []
        self.connections = 0
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                fake.connections += 1
                fake._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def uri(self):
        return "ldap://%s:%d" % (HOST, self.port)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- protocol ---------------------------------------------------------
    def _serve(self, sock):
        buf = b""
        while True:
            while True:  # a whole message in buf?
                if len(buf) >= 2:
                    n = buf[1]
                    head = 2 + (n & 0x7F if n & 0x80 else 0)
                    if len(buf) >= head:
                        size = int.from_bytes(buf[2:head], "big") if n & 0x80 else n
                        if len(buf) >= head + size:
                            break
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            _, msg, end = _read(buf, 0)
            buf = buf[end:]
            parts = _items(msg)
            msgid = int.from_bytes(parts[0][1], "big", signed=True)
            tag, op = parts[1]
            controls = {}
            if len(parts) > 2 and parts[2][0] == 0xA0:
                for _, c in _items(parts[2][1]):
                    fields = _items(c)
                    oid = fields[0][1].decode()
                    value = [v for t, v in fields[1:] if t == 0x04]
                    controls[oid] = value[0] if value else b""
            out = []
            if tag == 0x42:  # unbind
                return
            if tag == 0x60:  # bind
                _, name, auth = _items(op)[:3]
                dn, pw = name[1].decode(), auth[1].decode("utf-8", "replace")
                ok = dn == "" or self.passwords.get(dn.lower()) == pw
                out.append(self._result(msgid, 0x61, 0 if ok else 49))
            elif tag == 0x63:  # search
                out += self._search(msgid, op, controls)
            elif tag == 0x77:  # extended (StartTLS): not here
                out.append(self._result(msgid, 0x78, 2, "no extended operations"))
            # abandon (0x50) and anything else: no answer
            if out:
                sock.sendall(b"".join(out))

    @staticmethod
    def _result(msgid, tag, rc, diag="", referral=None, controls=b""):
        body = _int(rc, 0x0A) + _str("") + _str(diag)
        if referral:
            body += _tlv(0xA3, _str(referral))
        return _tlv(0x30, _int(msgid) + _tlv(tag, body) + controls)

    def _match(self, attrs, f):
        op = f[0]
        if op == "&":
            return all(self._match(attrs, x) for x in f[1])
        if op == "|":
            return any(self._match(attrs, x) for x in f[1])
        if op == "!":
            return not self._match(attrs, f[1])
        vals = self._get(attrs, f[1] if op != "ext" else f[2])
        if op == "=":
            return any(v.lower() == f[2].lower() for v in vals)
        if op == "*":
            return bool(vals) or f[1].lower() == "objectclass"
        if op == "ext" and f[1] == AD_BIT_AND:
            return any(v.lstrip("-").isdigit() and int(v) & int(f[3]) == int(f[3]) for v in vals)
        return False

    @staticmethod
    def _get(attrs, name):
        for k, v in attrs.items():
            if k.lower() == name.lower():
                return v
        return []

    def _values(self, attrs, want):
        """The attributes of an entry to return for the description want:
        [(description, values)], ranged as AD does."""
        name, _, opt = want.partition(";")
        for k, vals in attrs.items():
            if k.lower() != name.lower():
                continue
            if opt.lower().startswith("range="):
                low, _, high = opt[6:].partition("-")
                low = int(low)
                last = len(vals) - 1 if high == "*" else min(int(high), len(vals) - 1)
                last = min(last, low + self.max_values - 1)
                chunk = vals[low:last + 1]
                end = "*" if last >= len(vals) - 1 else str(last)
                return [("%s;range=%d-%s" % (k, low, end), chunk)]
            if len(vals) > self.max_values:
                return [(k, []), ("%s;range=0-%d" % (k, self.max_values - 1),
                                  vals[:self.max_values])]
            return [(k, vals)]
        return []

    def _entry(self, msgid, dn, attrs, wanted):
        if "1.1" in wanted and len(wanted) == 1:
            wanted = []
        elif not wanted or "*" in wanted:
            wanted = list(attrs)
        out = b""
        for want in wanted:
            for desc, vals in self._values(attrs, want):
                out += _tlv(0x30, _str(desc) + _tlv(0x31, b"".join(_str(v) for v in vals)))
        return _tlv(0x30, _int(msgid) + _tlv(0x64, _str(dn) + _tlv(0x30, out)))

    def _search(self, msgid, op, controls):
        fields = _items(op)
        base = fields[0][1].decode()
        scope = int.from_bytes(fields[1][1], "big")
        sizelimit = int.from_bytes(fields[3][1], "big")
        ftag, fval = fields[6]
        f = _filter_of(ftag, fval)
        wanted = [v.decode() for _, v in _items(fields[7][1])]
        paged = None
        if PAGED_OID in controls:
            (_, size), (_, cookie) = _items(_items(controls[PAGED_OID])[0][1])
            paged = (int.from_bytes(size, "big"), cookie.decode())
        self.searches.append({"base": base, "scope": scope, "filter": filter_text(f),
                              "attrs": wanted, "paged": paged[1] if paged else None})
        lbase = base.lower()
        inside = lbase == self.base.lower() or lbase.endswith("," + self.base.lower())
        if not inside:
            return [self._result(msgid, 0x65, 10, referral="ldap://elsewhere.example/" + base)]
        if scope == 0:
            found = [self.entries[lbase]] if lbase in self.entries else []
            if not found:
                return [self._result(msgid, 0x65, 32)]
        else:
            found = [(dn, a) for k, (dn, a) in sorted(self.entries.items())
                     if k == lbase or k.endswith("," + lbase)]
            if scope == 1:
                found = [(dn, a) for dn, a in found if dn.lower().partition(",")[2] == lbase]
        found = [(dn, a) for dn, a in found if self._match(a, f)]
        out, rc, ctrl = [], 0, b""
        if paged:
            start = int(paged[1] or "0")
            size = min(paged[0] or self.page_size, self.page_size)
            page = found[start:start + size]
            cookie = str(start + size) if start + size < len(found) else ""
            value = _tlv(0x30, _int(len(found)) + _str(cookie))
            ctrl = _tlv(0xA0, _tlv(0x30, _str(PAGED_OID) + _str(value)))
        else:
            limit = min(x for x in (sizelimit, self.size_limit) if x) if (
                sizelimit or self.size_limit) else 0
            page = found[:limit] if limit else found
            if limit and len(found) > limit:
                rc = 4  # sizeLimitExceeded
        for dn, a in page:
            out.append(self._entry(msgid, dn, a, wanted))
        if scope != 0:
            for ref in self.references:
                out.append(_tlv(0x30, _int(msgid) + _tlv(0x73, _str(ref))))
        out.append(self._result(msgid, 0x65, rc, controls=ctrl))
        return out
