#!/usr/bin/env python3
"""Helpers for tests/bench/auth.sh (Python standard library only, plus
tests/integration/ldaptest.py for slapd). bench_helper.py does the rest
(freeport, cpu, busy, run, tree).

  auth_helper.py slapd STATE USERS USERFMT PASSFMT TLS LOGLEVEL
      Start a private slapd on 127.0.0.1 (ldaptest.Slapd, preset "openldap",
      its fixtures plus USERS users uid=u<i>,ou=people with mail
      USERFMT % i and an {SSHA} userPassword of PASSFMT % i); TLS "1": also
      STARTTLS/ldaps with a throwaway CA. LOGLEVEL: slapd -d (e.g. 0, stats).
      Its data go below $PR_TEST_TMP. Writes shell assignments (SLAPD_URI,
      SLAPD_PID, SLAPD_BASE, ...) to STATE once slapd answers, then waits for
      SIGTERM/SIGINT and stops slapd (slapd also gets SIGTERM should this
      process die without that: PR_SET_PDEATHSIG).
  auth_helper.py ldapops LOG START END
      LDAP operations slapd logged (LOGLEVEL stats) in LOG between the byte
      offsets START and END: "connections binds searches unbinds errors"
      (ACCEPT, 'BIND dn="..." method=' (slapd logs a second BIND line
      per bind, with mech=), SRCH base=, UNBIND lines; errors: RESULT lines
      with an err= other than 0 (success) and 49 (invalidCredentials)).
"""
import os
import re
import shlex
import signal
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ next to ldaptest.py from a benchmark run
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "integration")))


def users_ldif(base, n, userfmt, passfmt, ssha):
    out = []
    for i in range(n):
        uid = "u%d" % i
        out.append("dn: uid=%s,ou=people,%s\n"
                   "objectClass: inetOrgPerson\n"
                   "uid: %s\n"
                   "cn: Bench User %d\n"
                   "sn: User%d\n"
                   "mail: %s\n"
                   "userPassword: %s\n" % (uid, base, uid, i, i, userfmt % i,
                                           ssha(passfmt % i)))
    return "\n".join(out)


def run_slapd(state, n, userfmt, passfmt, tls, loglevel):
    import ldaptest  # after sys.path; reads PR_TEST_TMP at import
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    d = ldaptest.Slapd("authbench", preset="openldap", tls=tls, loglevel=loglevel)
    try:
        d.start()
        d.add_ldif(users_ldif(d.base, n, userfmt, passfmt, ldaptest.ssha))
        found = d.search("(&(objectClass=inetOrgPerson)(uid=u*))", ["1.1"])
        if len(found) != n:
            raise RuntimeError("slapd holds %d bench users, expected %d" % (len(found), n))
        kv = {
            "SLAPD_PID": d.pid,
            "SLAPD_DIR": d.dir,
            "SLAPD_LOG": d.log,
            "SLAPD_URI": d.uri,
            "SLAPD_LDAPS_URI": d.ldaps_uri or "",
            "SLAPD_CA_FILE": d.ca_file or "",
            "SLAPD_BASE": d.base,
            "SLAPD_PEOPLE": "ou=people," + d.base,
            "SLAPD_BIND_DN": d.bind_dn,
            "SLAPD_BIND_PASSWORD": d.bind_password,
            "SLAPD_BIND_PASSWORD_FILE": d.bind_password_file,
            "SLAPD_ADMIN_DN": d.admin_dn,
            "SLAPD_ADMIN_PASSWORD_FILE": d.admin_password_file,
        }
        tmp = state + ".tmp"
        with open(tmp, "w") as f:
            for k, v in kv.items():
                f.write("%s=%s\n" % (k, shlex.quote(str(v))))
        os.rename(tmp, state)  # appears complete or not at all
        while not stop.is_set() and d.pid:
            stop.wait(0.5)
        if not stop.is_set():
            sys.exit("slapd exited on its own:\n" + d.log_text()[-2000:])
    finally:
        d.stop()
        if os.environ.get("KEEP_TMP") != "1":
            d.cleanup()


def ldap_ops(log, start, end):
    counts = {"ACCEPT": 0, "BIND": 0, "SRCH": 0, "UNBIND": 0}
    errors = 0
    pat = re.compile(rb' (ACCEPT) from | op=\d+ (BIND) dn="[^"]*" method=| op=\d+ (SRCH) base='
                     rb'| op=\d+ (UNBIND)')
    err = re.compile(rb" RESULT .*\berr=(\d+)")
    try:
        with open(log, "rb") as f:
            f.seek(start)
            data = f.read(max(0, end - start))
    except OSError:
        data = b""
    for line in data.splitlines():
        m = pat.search(line)
        if m:
            counts[next(g for g in m.groups() if g).decode()] += 1
            continue
        m = err.search(line)
        if m and m.group(1) not in (b"0", b"49"):
            errors += 1
    print("%d %d %d %d %d" % (counts["ACCEPT"], counts["BIND"], counts["SRCH"], counts["UNBIND"],
                              errors))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "slapd" and len(args) == 6:
        run_slapd(args[0], int(args[1]), args[2], args[3], args[4] == "1", args[5])
    elif cmd == "ldapops" and len(args) == 3:
        ldap_ops(args[0], int(args[1]), int(args[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
