r"""Shared harness for tests that need DNS: a real dnsmasq on 127.0.0.1 (and
optionally ::1) at a free high port, answering only from the records the
test gives it. Standard library only; needs the Debian package dnsmasq-base
(/usr/sbin/dnsmasq; tests/run.sh installs it). It never reads
/etc/dnsmasq.conf, /etc/resolv.conf or /etc/hosts and forwards nothing to
the outside.

    from dnstest import Dnsmasq
    with Dnsmasq("mx",
                 mx={"a.test": [(10, "mx1.a.test"), (20, "mx2.a.test")]},
                 hosts={"mx1.a.test": ["127.0.0.2"], "mx2.a.test": ["127.0.0.3"],
                        "dual.test": ["127.0.0.4", "::1"]},
                 cname={"alias.test": "mx1.a.test"},
                 null_mx=["nullmx.test"], nodata=["nodata.test"],
                 nxdomain=["nx.test"], servfail=["servfail.test"],
                 timeout=["timeout.test"]) as d:
        d.server              # "127.0.0.1:PORT", for [outbound] dns_servers
        d.query("a.test", "MX")   # -> (rcode, number of answers)

Records (names are lower-cased, no trailing dot):
  mx        {domain: [(preference, target), ...]}    --mx-host
  hosts     {name: [IPv4 or IPv6, ...]}               --host-record (A/AAAA;
            dnsmasq may return them in any order)
  cname     {alias: target}                           --cname
  null_mx   [domain]: one MX "0 ." (RFC 7505)         --dns-rr (type 15,
            rdata 0000 00: dnsmasq's --mx-host cannot name the root)
  nodata    [name]: exists (a TXT record), no MX/A/AAAA: NOERROR, no answer
  nxdomain  [domain]: the domain and all below it are NXDOMAIN (--address=/d/)
  servfail  [domain]: forwarded to a server in this harness that answers
            SERVFAIL to everything; dnsmasq passes it on
  timeout   [domain]: forwarded to a UDP socket that never answers, so a
            client's query times out (dnsmasq stays silent)
  local     zones answered only from the records above (default ["test"]):
            any other name in them is NXDOMAIN, a name with other records
            NOERROR/NODATA. Names outside every zone get REFUSED (dnsmasq has
            no upstream servers).

d.blackhole is "127.0.0.1:PORT" of the never-answering socket, usable as a
dead entry in a dns_servers list. d.log_text() is dnsmasq's log (every
query with its answer, --log-queries). Only loopback addresses are ever
used. dnsmasq runs with -d (no daemon, no user change) so that it dies with
the test process (PR_SET_PDEATHSIG, which a change of user would clear).
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

from prtest import HOST, TMP_ROOT

DNSMASQ = os.environ.get("DNSMASQ", "/usr/sbin/dnsmasq")
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def _die_with_parent():
    """preexec_fn: SIGTERM dnsmasq if the test process dies without cleanup
    (e.g. killed by a ctest timeout), so no daemon is left behind."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def free_udp_tcp_port(host=HOST):
    """A port free for both UDP and TCP on host (dnsmasq binds both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(family, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP+TCP port")


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def dns_query(host, port, name, qtype="A", timeout=2.0):
    """One UDP query; returns (rcode name, answer count) or ("TIMEOUT", 0)."""
    tid = int.from_bytes(os.urandom(2), "big")
    pkt = struct.pack(">HHHHHH", tid, 0x0100, 1, 0, 0, 0)
    pkt += _encode_name(name) + struct.pack(">HH", QTYPES.get(qtype, qtype), 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, (host, port))
        deadline = time.time() + timeout
        while True:
            try:
                data = s.recv(65535)
            except (socket.timeout, ConnectionRefusedError):
                return ("TIMEOUT", 0)
            if len(data) >= 12 and data[:2] == pkt[:2]:
                flags, _, ancount = struct.unpack(">HHH", data[2:8])
                return (RCODES.get(flags & 15, str(flags & 15)), ancount)
            if time.time() > deadline:
                return ("TIMEOUT", 0)


class _ServfailServer:
    """A UDP DNS server on loopback answering SERVFAIL to every query."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            if len(data) < 12 or data[2] & 0x80:
                continue
            reply = bytearray(data)
            reply[2] = 0x80 | (data[2] & 0x79)  # QR, same opcode and RD
            reply[3] = 0x80 | 2                 # RA, SERVFAIL
            try:
                self.sock.sendto(bytes(reply), peer)
            except OSError:
                pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Dnsmasq:
    """One dnsmasq with its own config, log and ports. Construction writes
    the config; start() runs it and waits until it answers. Usable as a
    context manager (start ... cleanup)."""

    def __init__(self, name="dns", mx=None, hosts=None, cname=None, null_mx=(),
                 nodata=(), nxdomain=(), servfail=(), timeout=(), local=("test",),
                 ipv6=False):
        if not os.access(DNSMASQ, os.X_OK):
            raise RuntimeError("%s not found: apt-get install dnsmasq-base" % DNSMASQ)
        self.name = name
        self.ipv6 = ipv6
        os.makedirs(TMP_ROOT, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="dnsmasq-%s-" % name, dir=TMP_ROOT)
        self.log = os.path.join(self.dir, "dnsmasq.log")
        self.conf = os.path.join(self.dir, "dnsmasq.conf")
        self.proc = None
        self._servfail = None
        # never read from: queries sent here time out
        self._blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._blackhole.bind((HOST, 0))
        self.blackhole = "%s:%d" % (HOST, self._blackhole.getsockname()[1])
        try:
            self.port = free_udp_tcp_port()
            if servfail:
                self._servfail = _ServfailServer()
            self._write_config(mx or {}, hosts or {}, cname or {}, null_mx, nodata,
                               nxdomain, servfail, timeout, local)
        except BaseException:
            self.cleanup()
            raise

    @property
    def server(self):
        """The [outbound] dns_servers entry for this server (IPv4)."""
        return "%s:%d" % (HOST, self.port)

    @property
    def server6(self):
        return "[::1]:%d" % self.port if self.ipv6 else None

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def _write_config(self, mx, hosts, cname, null_mx, nodata, nxdomain, servfail,
                      timeout, local):
        def norm(n):
            n = n.strip().rstrip(".").lower()
            if not n or any(c in n for c in ",/#= \t\n"):
                raise ValueError("bad name %r" % n)
            return n

        listen = HOST + (",::1" if self.ipv6 else "")
        lines = [
            "port=%d" % self.port,
            "listen-address=%s" % listen,
            "bind-interfaces",
            "no-resolv",          # no upstream from /etc/resolv.conf
            "no-hosts",           # nor names from /etc/hosts
            "no-poll",
            "cache-size=0",       # every query answered afresh
            "no-negcache",
            "log-queries",
        ]
        for zone in local:
            lines.append("local=/%s/" % norm(zone))
        for domain, records in mx.items():
            for pref, target in records:
                lines.append("mx-host=%s,%s,%d" % (norm(domain), norm(target), int(pref)))
        for host, addrs in hosts.items():
            for a in addrs:  # one line each: a line holds one address per family
                socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)
                lines.append("host-record=%s,%s" % (norm(host), a))
        for alias, target in cname.items():
            lines.append("cname=%s,%s" % (norm(alias), norm(target)))
        for domain in null_mx:
            lines.append("dns-rr=%s,15,000000" % norm(domain))  # preference 0, root
        for name in nodata:
            lines.append('txt-record=%s,"exists"' % norm(name))
        for domain in nxdomain:
            lines.append("address=/%s/" % norm(domain))
        for domain in servfail:
            lines.append("server=/%s/%s#%d" % (norm(domain), HOST, self._servfail.port))
        for domain in timeout:
            lines.append("server=/%s/%s" % (norm(domain), self.blackhole.replace(":", "#")))
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=30):
        if self.pid:
            return self
        with open(self.log, "ab") as log:
            # -d: foreground, log to stderr, keep the user (see module doc)
            self.proc = subprocess.Popen(
                [DNSMASQ, "--conf-file=" + self.conf, "-d"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent)
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError("dnsmasq exited (%s) at start:\n%s" % (rc, self.log_text()))
            # any answer (NXDOMAIN for the probe) shows it serves
            if self.query("probe.invalid", "A", timeout=0.5)[0] != "TIMEOUT":
                return self
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("dnsmasq did not answer:\n%s" % self.log_text())
            time.sleep(0.05)

    def query(self, name, qtype="A", timeout=2.0, ipv6=False):
        """(rcode, answer count) as dnsmasq answers name/qtype over UDP."""
        return dns_query("::1" if ipv6 else HOST, self.port, name, qtype, timeout)

    def stop(self, timeout=15):
        """SIGTERM, SIGKILL if it does not exit. Returns the exit status."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def cleanup(self):
        self.stop()
        if self._servfail:
            self._servfail.close()
            self._servfail = None
        if self._blackhole:
            self._blackhole.close()
            self._blackhole = None
        if os.environ.get("PR_KEEP_TMP") is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()

    def log_text(self):
        if os.path.exists(self.log):
            with open(self.log, errors="replace") as f:
                return f.read()
        return ""
