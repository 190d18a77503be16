"""MX resolution (service/queue/mx.c, issue 5) against a real dnsmasq on
loopback (dnstest.py), through the test tool pr_mxquery ($PR_MXQUERY), which
prints what mx_resolve returns: MX hosts by preference with their A/AAAA
(IPv4 first), equal preferences shuffled, implicit MX from A/AAAA (RFC 5321
5.1), null MX (RFC 7505), NXDOMAIN and NODATA -> not found, SERVFAIL,
REFUSED and timeouts -> temporary failure within the timeout, a CNAME'd MX
target, hosts without addresses dropped, a host whose lookup times out kept
without addresses, limits (16 hosts, 8 addresses per family), several
dns_servers where the first is dead, bad input, and several threads sharing
one resolver. Only loopback addresses are used."""
import os
import shutil
import subprocess
import sys
import time
import unittest

import prtest
from dnstest import Dnsmasq, free_udp_tcp_port, have_ipv6_loopback

MXQUERY = os.environ.get("PR_MXQUERY", "build/tests/pr_mxquery")

BIG = {"h%d.big.test" % i: ["127.0.2.%d" % i] for i in range(1, 21)}
ZONE = dict(
    mx={
        "a.test": [(20, "mx2.a.test"), (10, "mx1.a.test")],
        "dualmx.test": [(10, "dual.test")],
        "eq.test": [(10, "e1.eq.test"), (10, "e2.eq.test"), (10, "e3.eq.test"),
                    (5, "first.eq.test"), (20, "last.eq.test")],
        "cn.test": [(5, "alias.test")],
        "gone.test": [(5, "missing.test")],
        "noaddr.test": [(5, "nodata.test"), (10, "missing.test")],
        "partgone.test": [(5, "missing.test"), (10, "mx2.a.test")],
        "slowmx.test": [(5, "mx1.timeout.test"), (10, "mx2.a.test")],
        "allslow.test": [(5, "mx1.timeout.test"), (10, "mx2.timeout.test")],
        "mixnull.test": [(10, "mx1.a.test")],
        "dup.test": [(30, "mx1.a.test"), (10, "mx1.a.test"), (20, "mx2.a.test")],
        "badname.test": [(10, "bad_name.test")],
        "big.test": [(i, "h%d.big.test" % i) for i in range(20, 0, -1)],
        "manymx.test": [(10, "many.test")],
        "zero.test": [(10, "zeroaddr.test")],
    },
    hosts=dict(BIG, **{
        "mx1.a.test": ["127.0.0.2"],
        "mx2.a.test": ["127.0.0.3"],
        "dual.test": ["::1", "127.0.0.4"],
        "implicit.test": ["127.0.0.5"],
        "first.eq.test": ["127.0.0.6"],
        "e1.eq.test": ["127.0.0.7"],
        "e2.eq.test": ["127.0.0.8"],
        "e3.eq.test": ["127.0.0.9"],
        "last.eq.test": ["127.0.0.10"],
        "bad_name.test": ["127.0.0.2"],
        "many.test": ["127.0.3.%d" % i for i in range(1, 13)] + ["::%x" % i for i in range(1, 11)],
        "zeroaddr.test": ["0.0.0.0", "127.0.0.11", "::"],
    }),
    cname={"alias.test": "mx1.a.test"},
    null_mx=["nullmx.test", "mixnull.test"],
    nodata=["nodata.test"],
    nxdomain=["nx.test"],
    servfail=["servfail.test"],
    timeout=["timeout.test"],
)


def mxquery(servers, *domains, timeout_ms=3000, threads=1, check=True):
    """Runs pr_mxquery; returns ({domain: result}, CompletedProcess). A
    result: {"status", "ms", "implicit", "hosts": [(pref, name, [addr])]}."""
    argv = [MXQUERY, "-t", str(timeout_ms), "-j", str(threads)]
    if servers:
        argv += ["-s", ",".join(servers)]
    r = subprocess.run(argv + list(domains), capture_output=True, text=True, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError("pr_mxquery failed (%d): %s%s" % (r.returncode, r.stdout, r.stderr))
    results, order, cur = {}, [], None
    for line in r.stdout.splitlines():
        key, _, rest = line.partition(" ")
        if key == "domain":
            cur = {"status": None, "ms": None, "implicit": None, "hosts": []}
            order.append((rest, cur))
        elif key == "status":
            cur["status"] = rest
        elif key == "ms":
            cur["ms"] = int(rest)
        elif key == "implicit":
            cur["implicit"] = int(rest)
        elif key == "host":
            pref, name, addrs = rest.split(" ")
            cur["hosts"].append((int(pref), name, [] if addrs == "-" else addrs.split(",")))
    for name, res in order:
        results.setdefault(name, res)
    r.order = order
    return results, r


class MxTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = Dnsmasq("mx", **ZONE).start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.cleanup()

    def q(self, *domains, **kw):
        res, _ = mxquery([self.dns.server], *domains, **kw)
        return res if len(domains) > 1 else res[domains[0]]

    def assertStatus(self, res, status):
        self.assertEqual(res["status"], status, "%r\n%s" % (res, self.dns.log_text()[-3000:]))

    # -- routes -------------------------------------------------------------
    def test_mx_by_preference(self):
        res = self.q("a.test")
        self.assertStatus(res, "OK")
        self.assertEqual(res["implicit"], 0)
        self.assertEqual(res["hosts"], [(10, "mx1.a.test", ["127.0.0.2"]),
                                        (20, "mx2.a.test", ["127.0.0.3"])])

    def test_case_and_trailing_dot(self):
        res = self.q("A.Test.")
        self.assertStatus(res, "OK")
        self.assertEqual([h[1] for h in res["hosts"]], ["mx1.a.test", "mx2.a.test"])

    def test_host_with_a_and_aaaa(self):
        res = self.q("dualmx.test")
        self.assertStatus(res, "OK")
        self.assertEqual(res["hosts"], [(10, "dual.test", ["127.0.0.4", "::1"])])

    def test_implicit_mx(self):
        res = self.q("implicit.test")
        self.assertStatus(res, "OK")
        self.assertEqual(res["implicit"], 1)
        self.assertEqual(res["hosts"], [(0, "implicit.test", ["127.0.0.5"])])
        res = self.q("dual.test")
        self.assertEqual(res["implicit"], 1)
        self.assertEqual(res["hosts"], [(0, "dual.test", ["127.0.0.4", "::1"])])

    def test_equal_preferences_shuffled(self):
        _, r = mxquery([self.dns.server], *(["eq.test"] * 40))
        orders = set()
        for _, one in r.order:
            self.assertStatus(one, "OK")
            names = [h[1] for h in one["hosts"]]
            self.assertEqual(names[0], "first.eq.test")
            self.assertEqual(names[-1], "last.eq.test")
            self.assertEqual(sorted(names[1:4]), ["e1.eq.test", "e2.eq.test", "e3.eq.test"])
            self.assertEqual([h[0] for h in one["hosts"]], [5, 10, 10, 10, 20])
            orders.add(tuple(names[1:4]))
        self.assertEqual(len(r.order), 40)
        # 6 orders possible; 40 draws all alike would be a broken shuffle
        self.assertGreater(len(orders), 1)

    def test_cname_target(self):
        res = self.q("cn.test")
        self.assertStatus(res, "OK")
        self.assertEqual(res["hosts"], [(5, "alias.test", ["127.0.0.2"])])

    def test_duplicate_targets(self):
        self.assertEqual(self.dns.query("dup.test", "MX"), ("NOERROR", 3))
        res = self.q("dup.test")
        self.assertStatus(res, "OK")
        self.assertEqual([(h[0], h[1]) for h in res["hosts"]],
                         [(10, "mx1.a.test"), (20, "mx2.a.test")])

    def test_hosts_without_address_dropped(self):
        res = self.q("partgone.test")
        self.assertStatus(res, "OK")
        self.assertEqual(res["hosts"], [(10, "mx2.a.test", ["127.0.0.3"])])
        # every MX host unknown or without address: bounce
        self.assertStatus(self.q("gone.test"), "ENOTFOUND")
        self.assertStatus(self.q("noaddr.test"), "ENOTFOUND")

    def test_unusable_addresses_skipped(self):
        # DNS says 0.0.0.0 and :: too, which connect() would take as this host
        self.assertEqual(self.dns.query("zeroaddr.test", "A"), ("NOERROR", 2))
        self.assertEqual(self.dns.query("zeroaddr.test", "AAAA"), ("NOERROR", 1))
        res = self.q("zero.test")
        self.assertStatus(res, "OK")
        self.assertEqual(res["hosts"], [(10, "zeroaddr.test", ["127.0.0.11"])])

    def test_limits(self):
        # over UDP dnsmasq sends what fits in 512 octets (17 here); more than 16
        self.assertGreater(self.dns.query("big.test", "MX")[1], 16)
        self.assertEqual(self.dns.query("many.test", "A"), ("NOERROR", 12))
        res = self.q("big.test")
        self.assertStatus(res, "OK")
        self.assertEqual([(h[0], h[1]) for h in res["hosts"]],
                         [(i, "h%d.big.test" % i) for i in range(1, 17)])
        self.assertEqual(res["hosts"][0][2], ["127.0.2.1"])
        res = self.q("manymx.test")
        self.assertStatus(res, "OK")
        addrs = res["hosts"][0][2]
        v4 = [a for a in addrs if ":" not in a]
        v6 = [a for a in addrs if ":" in a]
        self.assertEqual((len(v4), len(v6)), (8, 8))
        self.assertEqual(addrs, v4 + v6)  # IPv4 first
        self.assertTrue(set(v4) <= set(ZONE["hosts"]["many.test"]))

    def test_null_mx(self):
        self.assertStatus(self.q("nullmx.test"), "ENULLMX")
        # "." beside a real MX is a misconfiguration: the real one is used
        self.assertEqual(self.dns.query("mixnull.test", "MX"), ("NOERROR", 2))
        res = self.q("mixnull.test")
        self.assertStatus(res, "OK")
        self.assertEqual(res["hosts"], [(10, "mx1.a.test", ["127.0.0.2"])])

    def test_bad_mx_names_defer(self):
        self.assertStatus(self.q("badname.test"), "ETEMPFAIL")

    # -- negative answers -----------------------------------------------------
    def test_nxdomain(self):
        self.assertStatus(self.q("nx.test"), "ENOTFOUND")
        self.assertStatus(self.q("sub.nx.test"), "ENOTFOUND")
        self.assertStatus(self.q("nosuchdomain.test"), "ENOTFOUND")

    def test_no_mx_no_address(self):
        self.assertStatus(self.q("nodata.test"), "ENOTFOUND")

    def test_invalid_domain(self):
        for bad in ("bad..name", "-lead.test", "a" * 64 + ".test", "sp ace.test", ".", ""):
            res, _ = mxquery([self.dns.server], bad)
            self.assertStatus(res[bad], "EINVAL")

    # -- temporary failures ---------------------------------------------------
    def test_servfail_defers(self):
        res = self.q("servfail.test", timeout_ms=3000)
        self.assertStatus(res, "ETEMPFAIL")
        self.assertLess(res["ms"], 1500)  # answered, not timed out

    def test_refused_defers(self):
        # outside dnsmasq's zones and it has no upstream: REFUSED
        self.assertStatus(self.q("example.invalid"), "ETEMPFAIL")

    def test_timeout_defers_within_timeout(self):
        t0 = time.time()
        res = self.q("timeout.test", timeout_ms=1500)
        elapsed = time.time() - t0
        self.assertStatus(res, "ETEMPFAIL")
        self.assertGreaterEqual(res["ms"], 1400)
        self.assertLessEqual(res["ms"], 1700)
        self.assertLess(elapsed, 5)

    def test_slow_mx_host_kept_without_addresses(self):
        res = self.q("slowmx.test", timeout_ms=1500)
        self.assertStatus(res, "OK")
        self.assertEqual(res["hosts"], [(5, "mx1.timeout.test", []),
                                        (10, "mx2.a.test", ["127.0.0.3"])])
        self.assertLessEqual(res["ms"], 1700)
        res = self.q("allslow.test", timeout_ms=1500)
        self.assertStatus(res, "ETEMPFAIL")
        self.assertLessEqual(res["ms"], 1700)

    # -- servers ---------------------------------------------------------------
    def test_first_server_silent(self):
        res, _ = mxquery([self.dns.blackhole, self.dns.server], "a.test", timeout_ms=2000)
        res = res["a.test"]
        self.assertStatus(res, "OK")
        self.assertEqual([h[1] for h in res["hosts"]], ["mx1.a.test", "mx2.a.test"])
        self.assertLess(res["ms"], 1800)

    def test_first_server_closed(self):
        closed = "127.0.0.1:%d" % free_udp_tcp_port()
        res, _ = mxquery([closed, self.dns.server], "a.test", "nx.test", timeout_ms=2000)
        self.assertStatus(res["a.test"], "OK")
        self.assertStatus(res["nx.test"], "ENOTFOUND")

    def test_all_servers_dead(self):
        closed = "127.0.0.1:%d" % free_udp_tcp_port()
        res, _ = mxquery([self.dns.blackhole, closed], "a.test", timeout_ms=1000)
        self.assertStatus(res["a.test"], "ETEMPFAIL")
        self.assertLessEqual(res["a.test"]["ms"], 1200)

    def test_bad_server_is_an_error(self):
        _, r = mxquery(["not-an-ip:53"], "a.test", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("create EINVAL", r.stdout)

    def test_threads_share_a_resolver(self):
        domains = ["a.test", "nx.test", "implicit.test", "nullmx.test", "partgone.test",
                   "servfail.test", "dualmx.test"]
        res, r = mxquery([self.dns.server], *domains, threads=8)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([res[d]["status"] for d in domains],
                         ["OK", "ENOTFOUND", "OK", "ENULLMX", "OK", "ETEMPFAIL", "OK"])


class HarnessTest(unittest.TestCase):
    def test_dnsmasq_dies_with_test_process(self):
        """A test killed without cleanup (ctest timeout) leaves no dnsmasq."""
        code = ("import os, sys; sys.path.insert(0, %r); from dnstest import Dnsmasq; "
                "d = Dnsmasq('orphan').start(); print(d.pid, d.dir, flush=True); os._exit(0)"
                % os.path.dirname(os.path.abspath(__file__)))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        pid, tmpdir = int(r.stdout.split()[0]), r.stdout.split()[1]
        self.addCleanup(shutil.rmtree, tmpdir, True)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with open("/proc/%d/status" % pid) as f:
                    state = [l for l in f if l.startswith("State:")][0]
            except (OSError, IndexError):
                return  # gone (reaped)
            if "Z" in state.split()[1]:
                return  # dead, waiting for a reaper
            time.sleep(0.05)
        os.kill(pid, 15)
        self.fail("dnsmasq %d outlived its test process" % pid)


@unittest.skipUnless(have_ipv6_loopback(), "no ::1")
class MxIpv6ServerTest(unittest.TestCase):
    def test_ipv6_server_syntax(self):
        with Dnsmasq("mx6", mx={"a.test": [(10, "mx1.a.test")]},
                     hosts={"mx1.a.test": ["127.0.0.2"]}, ipv6=True) as d:
            closed = "[::1]:%d" % free_udp_tcp_port("::1")
            res, _ = mxquery([closed, d.server6], "a.test", timeout_ms=2000)
            self.assertEqual(res["a.test"]["hosts"], [(10, "mx1.a.test", ["127.0.0.2"])])
            self.assertIn("from ::1", d.log_text())


if __name__ == "__main__":
    prtest.main()
