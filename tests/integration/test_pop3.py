"""POP3 server against a real postroomd with real clients (poplib, raw
sockets, fetchmail, curl): every command of RFC 1939 plus LAST (RFC 1460),
CAPA and response codes (RFC 2449, RFC 3206), STLS (RFC 2595), AUTH PLAIN and
LOGIN (RFC 5034), implicit TLS, byte-exact RETR/TOP with dot-stuffing and
exact octet counts, stable UIDLs, maildrop locking, deletions only at QUIT,
identical replies for bad logins, and the per-address login delay."""
import base64
import os
import poplib
import random
import re
import socket
import stat
import struct
import subprocess
import threading
import time
import unittest

import prtest
from prtest import HOST, Server, split_stored, tls_context

SENDER = "sender@example.net"
EXPECTED_PREFIX = b"Return-Path: <" + SENDER.encode() + b">\r\nReceived: from "


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def plain_ir(user, password, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, user, password))


def unstuff(wire):
    """The message from a multi-line block as it was on the wire (without the
    terminating '.' line): CRLF lines, a leading dot removed from each line."""
    assert wire == b"" or wire.endswith(b"\r\n"), wire[-20:]
    lines = wire.split(b"\r\n")[:-1]
    return b"".join((l[1:] if l.startswith(b".") else l) + b"\r\n" for l in lines)


def badly_stuffed(wire):
    """Lines on the wire that begin with one dot only (so the original line
    began with a dot that was not doubled)."""
    return [l for l in wire.split(b"\r\n")[:-1] if l.startswith(b".") and not l.startswith(b"..")]


def expected_top(full, n):
    """RFC 1939 TOP: the header, the blank line, then n lines of the body."""
    idx = full.find(b"\r\n\r\n")
    assert idx >= 0
    head, body = full[:idx + 4], full[idx + 4:]
    lines = body.split(b"\r\n")[:-1] if body else []
    return head + b"".join(l + b"\r\n" for l in lines[:n])


class Pop:
    """A line-level POP3 client for what poplib will not do (byte-exact wire
    data, pipelining, over-long lines, abrupt disconnects, source address)."""

    def __init__(self, port, tls=False, source=None, timeout=60):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        if source:
            sock.bind((source, 0))
        sock.connect((HOST, port))
        self.sock = tls_context().wrap_socket(sock) if tls else sock
        self.buf = bytearray()
        self.greeting = self.line()

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed; buffered %r" % bytes(self.buf[:200]))
        self.buf += chunk

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out.decode("utf-8", "replace")
            self._fill()

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.line()

    def multi(self):
        """The data of a multi-line response, exactly as on the wire, without
        the terminating '.' line (so it ends with CRLF unless empty)."""
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return b""
            i = self.buf.find(b"\r\n.\r\n", start)
            if i >= 0:
                out = bytes(self.buf[:i + 2])
                del self.buf[:i + 5]
                return out
            start = max(0, len(self.buf) - 4)
            self._fill()

    def multi_lines(self):
        return [l.decode("utf-8", "replace") for l in unstuff(self.multi()).split(b"\r\n")[:-1]]

    def login(self, user, password):
        r = self.cmd("USER " + user)
        assert r.startswith("+OK"), r
        r = self.cmd("PASS " + password)
        assert r.startswith("+OK"), r

    def stls(self):
        assert not self.buf, self.buf
        self.sock = tls_context().wrap_socket(self.sock)

    def quit(self):
        """QUIT, then wait for the server to close (so its lock is gone)."""
        r = self.cmd("QUIT")
        self.wait_eof()
        self.close()
        return r

    def wait_eof(self, timeout=10):
        self.sock.settimeout(timeout)
        while True:
            try:
                if not self.sock.recv(65536):
                    return
            except (ConnectionResetError, BrokenPipeError):
                return

    def reset(self):
        """Drop the connection abruptly (RST), as a crashed client would."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def stat_reply(line):
    """'+OK nn mm' (RFC 1939 5 STAT) -> (nn, mm)."""
    m = re.match(r"^\+OK (\d+) (\d+)(?: .*)?$", line)
    assert m, "not a STAT reply: %r" % line
    return int(m.group(1)), int(m.group(2))


class PopCase(unittest.TestCase):
    """One postroomd per test class."""
    NAME = "pop3"
    EXTRA = {}
    USERS = {}

    @classmethod
    def setUpClass(cls):
        cls.srv = Server(cls.NAME, extra=cls.EXTRA)
        for addr, pw in cls.USERS.items():
            cls.srv.add_user(addr, pw)
        cls.srv.start()
        try:
            prtest.wait_port(cls.srv.pop3_port, timeout=10)
            prtest.wait_port(cls.srv.pop3s_port, timeout=10)
        except RuntimeError:
            cls.srv.stop()
            print(cls.srv.log_text()[-4000:])
            cls.srv.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text()[-8000:])
        cls.srv.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc

    def deliver(self, rcpt, body, sender=SENDER):
        self.srv.deliver(rcpt, body, sender=sender)

    def pw(self, user):
        return self.USERS[user]

    def poplib_plain(self, user):
        p = poplib.POP3(HOST, self.srv.pop3_port, timeout=60)
        p.user(user)
        p.pass_(self.pw(user))
        return p

    def raw(self, user=None, tls=False, port=None):
        port = port or (self.srv.pop3s_port if tls else self.srv.pop3_port)
        r = Pop(port, tls=tls)
        self.assertTrue(r.greeting.startswith("+OK"), r.greeting)
        if user:
            r.login(user, self.pw(user))
        return r

    def retr_raw(self, r, n):
        """RETR n over a raw session: (status line, wire bytes, message)."""
        status = r.cmd("RETR %d" % n)
        self.assertTrue(status.startswith("+OK"), status)
        wire = r.multi()
        self.assertEqual(badly_stuffed(wire), [], "lines starting with '.' not byte-stuffed")
        return status, wire, unstuff(wire)

    def assert_stored(self, full, body, rcpt):
        """full is what RETR gave: the trace lines, then exactly body."""
        prefix, rest = split_stored(full)
        self.assertEqual(rest, body)
        self.assertTrue(prefix.startswith(EXPECTED_PREFIX), prefix)
        self.assertEqual(prefix.count(b"Return-Path:"), 1, prefix)
        self.assertEqual(prefix.count(b"Received:"), 1, prefix)
        self.assertIn(("for <%s>" % rcpt).encode(), prefix)


def quit_poplib(p):
    """QUIT through poplib, then wait until the server has closed."""
    resp = p._shortcmd("QUIT")
    p.sock.settimeout(10)
    try:
        while p.sock.recv(65536):
            pass
    except OSError:
        pass
    p.close()
    return resp


PLAIN = {"pop3.allow_plaintext_auth": "yes"}


# ---------------------------------------------------------------- 1. commands

class CommandsTest(PopCase):
    NAME = "pop3cmd"
    EXTRA = dict(PLAIN, **{"pop3.max_errors": "50"})
    USERS = {"cmd@example.test": "cmd-secret-1", "empty@example.test": "empty-secret-2",
             "pipe@example.test": "pipe-secret-3", "long@example.test": "long-secret-4",
             "capa@example.test": "capa-secret-5"}

    BODIES = [
        b"From: A <a@example.net>\r\nTo: cmd@example.test\r\nSubject: one\r\n\r\n"
        b"line 1\r\nline 2\r\nline 3\r\n",
        b"Subject: two\r\n\r\n.dot start\r\nsecond\r\n..double\r\n.\r\nlast\r\n",
        b"Subject: three\r\nX-Long: " + b"y" * 500 + b"\r\n\r\nshort body\r\n",
    ]

    def test_all_commands(self):
        user = "cmd@example.test"
        for body in self.BODIES:
            self.deliver(user, body)
        p = poplib.POP3(HOST, self.srv.pop3_port, timeout=60)
        self.assertTrue(p.getwelcome().startswith(b"+OK"), p.getwelcome())
        # not logged in yet: transaction commands are refused
        for c in ("STAT", "LIST", "RETR 1", "DELE 1", "UIDL", "TOP 1 0", "LAST", "RSET"):
            with self.assertRaises(poplib.error_proto, msg=c) as cm:
                p._shortcmd(c)
            self.assertTrue(cm.exception.args[0].startswith(b"-ERR"), (c, cm.exception.args))
        with self.assertRaises(poplib.error_proto) as cm:
            p.pass_(self.pw(user))  # PASS without USER
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR"))
        self.assertTrue(p.user(user).startswith(b"+OK"))
        self.assertTrue(p.pass_(self.pw(user)).startswith(b"+OK"))

        # LAST starts at 0 (RFC 1460)
        self.assertEqual(p._shortcmd("LAST"), b"+OK 0")
        # STAT = count and the sum of the LIST sizes
        count, total = stat_reply(p._shortcmd("STAT").decode())
        self.assertEqual(count, 3)
        resp, listing, _ = p.list()
        self.assertTrue(resp.startswith(b"+OK"), resp)
        self.assertEqual([l.split()[0] for l in listing], [b"1", b"2", b"3"])
        sizes = [int(l.split()[1]) for l in listing]
        self.assertEqual([len(l.split()) for l in listing], [2, 2, 2], listing)
        self.assertEqual(sum(sizes), total)
        for i in (1, 2, 3):
            self.assertEqual(p.list(i).split()[:3], [b"+OK", str(i).encode(), str(sizes[i - 1]).encode()])
        for bad in ("LIST 0", "LIST 4", "LIST abc", "LIST -1", "RETR 0", "RETR 4", "RETR",
                    "DELE 4", "DELE", "TOP 1", "TOP 1 -1", "TOP 4 0", "TOP x 0", "UIDL 4", "UIDL 0"):
            with self.assertRaises(poplib.error_proto, msg=bad) as cm:
                p._shortcmd(bad)
            self.assertTrue(cm.exception.args[0].startswith(b"-ERR"), (bad, cm.exception.args))

        # UIDL all and UIDL n agree; 1..70 chars of 0x21..0x7E, unique
        resp, uidls, _ = p.uidl()
        self.assertTrue(resp.startswith(b"+OK"), resp)
        self.assertEqual([l.split()[0] for l in uidls], [b"1", b"2", b"3"])
        uids = [l.split()[1] for l in uidls]
        self.assertEqual([len(l.split()) for l in uidls], [2, 2, 2], uidls)
        self.assertEqual(len(set(uids)), 3)
        for u in uids:
            self.assertTrue(1 <= len(u) <= 70 and all(0x21 <= c <= 0x7E for c in u), u)
        for i in (1, 2, 3):
            self.assertEqual(p.uidl(i), b"+OK %d %s" % (i, uids[i - 1]))

        # RETR: exact size, the stored message
        full = {}
        for i in (1, 2, 3):
            resp, lines, _ = p.retr(i)
            full[i] = b"".join(l + b"\r\n" for l in lines)
            self.assertEqual(len(full[i]), sizes[i - 1], i)
            self.assertEqual(resp, b"+OK %d octets" % sizes[i - 1])
            self.assert_stored(full[i], self.BODIES[i - 1], user)
        self.assertEqual(p._shortcmd("LAST"), b"+OK 3")

        # TOP n 0 and TOP n 2: header, blank line, exactly n body lines
        for i in (1, 2, 3):
            for n in (0, 1, 2, 100):
                resp, lines, _ = p.top(i, n)
                self.assertTrue(resp.startswith(b"+OK"), resp)
                got = b"".join(l + b"\r\n" for l in lines)
                self.assertEqual(got, expected_top(full[i], n), (i, n))
        resp, lines, _ = p.top(2, 2)
        self.assertEqual(lines[-3:], [b"", b".dot start", b"second"])

        # RSET resets LAST; LAST is the highest number RETR'd
        self.assertTrue(p.rset().startswith(b"+OK"))
        self.assertEqual(p._shortcmd("LAST"), b"+OK 0")
        p.retr(2)
        self.assertEqual(p._shortcmd("LAST"), b"+OK 2")
        p.retr(1)
        self.assertEqual(p._shortcmd("LAST"), b"+OK 2")

        # DELE: gone from this session's view, but not before QUIT
        self.assertTrue(p.dele(1).startswith(b"+OK"))
        for c in ("DELE 1", "LIST 1", "RETR 1", "TOP 1 0", "UIDL 1"):
            with self.assertRaises(poplib.error_proto, msg=c) as cm:
                p._shortcmd(c)
            self.assertTrue(cm.exception.args[0].startswith(b"-ERR"), (c, cm.exception.args))
        self.assertEqual(stat_reply(p._shortcmd("STAT").decode()), (2, total - sizes[0]))
        self.assertEqual(p.list()[1], listing[1:])
        self.assertEqual(p.uidl()[1], uidls[1:])
        self.assertEqual(self.srv.mailbox_count(user), 3)

        # RSET undeletes
        self.assertTrue(p.rset().startswith(b"+OK"))
        self.assertEqual(stat_reply(p._shortcmd("STAT").decode()), (3, total))
        self.assertEqual(p.list()[1], listing)
        self.assertEqual(p.list(1).split()[:3], [b"+OK", b"1", str(sizes[0]).encode()])

        self.assertTrue(p.noop().startswith(b"+OK"))
        # commands are case-insensitive (RFC 1939 3)
        self.assertEqual(stat_reply(p._shortcmd("stat").decode()), (3, total))
        # unknown command, and AUTHORIZATION-only commands after login
        for c in ("FOOBAR", "XTND XMIT", "USER cmd@example.test", "PASS x", "STLS",
                  "APOP cmd@example.test 0123456789abcdef0123456789abcdef"):
            with self.assertRaises(poplib.error_proto, msg=c) as cm:
                p._shortcmd(c)
            self.assertTrue(cm.exception.args[0].startswith(b"-ERR"), (c, cm.exception.args))
        self.assertTrue(p.noop().startswith(b"+OK"))  # still in TRANSACTION

        # DELE 2 then QUIT: the UPDATE state removes it
        p.dele(2)
        self.assertTrue(quit_poplib(p).startswith(b"+OK"))
        self.assertEqual(self.srv.mailbox_count(user), 2)
        p = self.poplib_plain(user)
        self.assertEqual(stat_reply(p._shortcmd("STAT").decode()), (2, sizes[0] + sizes[2]))
        self.assertEqual(p.list()[1], [b"1 %d" % sizes[0], b"2 %d" % sizes[2]])
        self.assertEqual(p.uidl()[1], [b"1 " + uids[0], b"2 " + uids[2]])
        resp, lines, _ = p.retr(2)
        self.assertEqual(b"".join(l + b"\r\n" for l in lines), full[3])
        quit_poplib(p)

    def test_empty_maildrop(self):
        # a user who never got mail
        p = self.poplib_plain("empty@example.test")
        self.assertEqual(stat_reply(p._shortcmd("STAT").decode()), (0, 0))
        resp, listing, _ = p.list()
        self.assertTrue(resp.startswith(b"+OK"), resp)
        self.assertEqual(listing, [])
        resp, uidls, _ = p.uidl()
        self.assertTrue(resp.startswith(b"+OK"), resp)
        self.assertEqual(uidls, [])
        self.assertEqual(p._shortcmd("LAST"), b"+OK 0")
        for c in ("LIST 1", "RETR 1", "DELE 1", "TOP 1 0", "UIDL 1"):
            with self.assertRaises(poplib.error_proto, msg=c):
                p._shortcmd(c)
        self.assertTrue(p.rset().startswith(b"+OK"))
        self.assertTrue(quit_poplib(p).startswith(b"+OK"))

    def test_quit_in_authorization_state(self):
        r = self.raw()
        self.assertTrue(r.quit().startswith("+OK"))

    def test_capa(self):
        user = "capa@example.test"
        p = poplib.POP3(HOST, self.srv.pop3_port, timeout=60)
        caps = p.capa()
        for c in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS",
                  "SASL", "EXPIRE", "IMPLEMENTATION"):
            self.assertIn(c, caps, caps)
        self.assertEqual(set(caps["SASL"]), {"PLAIN", "LOGIN"})
        self.assertEqual(caps["EXPIRE"], ["NEVER"])
        self.assertTrue(caps["IMPLEMENTATION"], caps)
        self.assertNotIn("APOP", caps)
        p.user(user)
        p.pass_(self.pw(user))
        caps = p.capa()  # TRANSACTION state
        for c in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE",
                  "IMPLEMENTATION"):
            self.assertIn(c, caps, caps)
        self.assertEqual(caps["EXPIRE"], ["NEVER"])
        quit_poplib(p)

    def test_apop_not_offered(self):
        r = self.raw()
        reply = r.cmd("APOP capa@example.test c4c9334bac560ecc979e58001b3e22fb")
        self.assertTrue(reply.startswith("-ERR"), reply)
        self.assertTrue(r.cmd("USER capa@example.test").startswith("+OK"))
        self.assertTrue(r.cmd("PASS " + self.pw("capa@example.test")).startswith("+OK"))
        r.quit()

    def test_pipelining(self):
        user = "pipe@example.test"
        bodies = [b"Subject: p%d\r\n\r\nbody %d\r\n.dotted\r\n" % (i, i) for i in range(3)]
        for b in bodies:
            self.deliver(user, b)
        r = self.raw(user)
        r.send("STAT\r\nLIST\r\nUIDL 2\r\nRETR 3\r\nTOP 1 0\r\nLIST 2\r\nNOOP\r\nDELE 1\r\nSTAT\r\n"
               "RSET\r\nSTAT\r\nQUIT\r\n")
        n, total = stat_reply(r.line())
        self.assertEqual(n, 3)
        self.assertTrue(r.line().startswith("+OK"))
        listing = r.multi_lines()
        self.assertEqual(len(listing), 3)
        sizes = [int(l.split()[1]) for l in listing]
        self.assertEqual(sum(sizes), total)
        self.assertRegex(r.line(), r"^\+OK 2 \S+$")
        self.assertEqual(r.line(), "+OK %d octets" % sizes[2])
        msg3 = unstuff(r.multi())
        self.assertEqual(len(msg3), sizes[2])
        self.assert_stored(msg3, bodies[2], user)
        self.assertTrue(r.line().startswith("+OK"))
        top = unstuff(r.multi())
        self.assertTrue(top.endswith(b"Subject: p0\r\n\r\n"), top)
        self.assertEqual(r.line().split()[:3], ["+OK", "2", str(sizes[1])])
        self.assertTrue(r.line().startswith("+OK"))  # NOOP
        self.assertTrue(r.line().startswith("+OK"))  # DELE 1
        self.assertEqual(stat_reply(r.line()), (2, total - sizes[0]))
        self.assertTrue(r.line().startswith("+OK"))  # RSET
        self.assertEqual(stat_reply(r.line()), (3, total))
        self.assertTrue(r.line().startswith("+OK"))  # QUIT
        r.wait_eof()
        r.close()
        self.assertEqual(self.srv.mailbox_count(user), 3)

    def test_long_line_keeps_sync(self):
        user = "long@example.test"
        self.deliver(user, b"Subject: long\r\n\r\nx\r\n")
        r = self.raw()
        # before login
        r.send(b"USER " + b"a" * 20000 + b"\r\nUSER " + user.encode() + b"\r\n")
        self.assertTrue(r.line().startswith("-ERR"))
        self.assertTrue(r.line().startswith("+OK"))
        self.assertTrue(r.cmd("PASS " + self.pw(user)).startswith("+OK"))
        # after login: one -ERR for the whole line, then the next command
        r.send(b"NOOP " + b"x" * 20000 + b"\r\nNOOP\r\nSTAT\r\n")
        self.assertTrue(r.line().startswith("-ERR"))
        self.assertTrue(r.line().startswith("+OK"))
        self.assertEqual(stat_reply(r.line())[0], 1)
        r.send(b"Y" * 100000 + b"\r\nSTAT\r\n")
        self.assertTrue(r.line().startswith("-ERR"))
        self.assertEqual(stat_reply(r.line())[0], 1)
        # a long line that looks like a DELE must not have deleted anything
        r.send(b"DELE 1" + b" " * 30000 + b"1\r\nSTAT\r\n")
        self.assertTrue(r.line().startswith("-ERR"))
        self.assertEqual(stat_reply(r.line())[0], 1)
        self.assertTrue(r.quit().startswith("+OK"))
        self.assertEqual(self.srv.mailbox_count(user), 1)


# ------------------------------------------------------- 2. STLS, POP3S, AUTH

class TlsAuthTest(PopCase):
    NAME = "pop3tls"
    USERS = {"tls@example.test": "tls-secret-1", "ssl@example.test": "ssl-secret-2",
             "auth@example.test": "auth-secret-3", "other@example.test": "other-secret-4",
             "inj@example.test": "inj-secret-5"}

    def test_stls_poplib(self):
        user = "tls@example.test"
        body = b"Subject: over stls\r\n\r\n.secret\r\n"
        self.deliver(user, body)
        p = poplib.POP3(HOST, self.srv.pop3_port, timeout=60)
        self.assertIn("STLS", p.capa())
        self.assertTrue(p.stls(context=tls_context()).startswith(b"+OK"))
        caps = p.capa()
        self.assertNotIn("STLS", caps)
        self.assertIn("USER", caps)
        self.assertEqual(set(caps.get("SASL", [])), {"PLAIN", "LOGIN"})
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("STLS")  # already in TLS
        self.assertTrue(p.user(user).startswith(b"+OK"))
        self.assertTrue(p.pass_(self.pw(user)).startswith(b"+OK"))
        self.assertEqual(p.stat()[0], 1)
        resp, lines, _ = p.retr(1)
        self.assert_stored(b"".join(l + b"\r\n" for l in lines), body, user)
        quit_poplib(p)

    def test_pop3s_poplib(self):
        user = "ssl@example.test"
        body = b"Subject: over pop3s\r\n\r\n..two dots\r\n"
        self.deliver(user, body)
        p = poplib.POP3_SSL(HOST, self.srv.pop3s_port, context=tls_context(), timeout=60)
        self.assertTrue(p.getwelcome().startswith(b"+OK"))
        caps = p.capa()
        self.assertNotIn("STLS", caps)
        for c in ("TOP", "UIDL", "USER", "SASL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"):
            self.assertIn(c, caps)
        with self.assertRaises(poplib.error_proto):
            p._shortcmd("STLS")
        p.user(user)
        self.assertTrue(p.pass_(self.pw(user)).startswith(b"+OK"))
        count, size = p.stat()
        self.assertEqual(count, 1)
        resp, lines, _ = p.retr(1)
        full = b"".join(l + b"\r\n" for l in lines)
        self.assertEqual(len(full), size)
        self.assert_stored(full, body, user)
        quit_poplib(p)

    def tls_sessions(self):
        """A fresh TLS session each on pop3s and via STLS on the plain port."""
        yield self.raw(tls=True)
        r = self.raw()
        self.assertTrue(r.cmd("STLS").startswith("+OK"))
        r.stls()
        yield r

    def logged_in(self, r):
        n, _ = stat_reply(r.cmd("STAT"))
        self.assertEqual(r.quit()[:3], "+OK")
        return n

    def test_auth_plain_initial_response(self):
        user = "auth@example.test"
        for r in self.tls_sessions():
            reply = r.cmd("AUTH PLAIN " + plain_ir(user, self.pw(user)))
            self.assertTrue(reply.startswith("+OK"), reply)
            self.logged_in(r)

    def test_auth_plain_authzid_self(self):
        user = "auth@example.test"
        r = self.raw(tls=True)
        reply = r.cmd("AUTH PLAIN " + plain_ir(user, self.pw(user), authzid=user))
        self.assertTrue(reply.startswith("+OK"), reply)
        self.logged_in(r)

    def test_auth_plain_authzid_other_refused(self):
        user = "auth@example.test"
        r = self.raw(tls=True)
        reply = r.cmd("AUTH PLAIN " + plain_ir(user, self.pw(user), authzid="other@example.test"))
        self.assertTrue(reply.startswith("-ERR"), reply)
        r.close()

    def test_auth_plain_no_initial_response(self):
        user = "auth@example.test"
        for r in self.tls_sessions():
            self.assertEqual(r.cmd("AUTH PLAIN"), "+ ")  # RFC 5034 4: empty challenge
            reply = r.cmd(plain_ir(user, self.pw(user)))
            self.assertTrue(reply.startswith("+OK"), reply)
            self.logged_in(r)

    def test_auth_login_both_ways(self):
        user = "auth@example.test"
        for r in self.tls_sessions():
            ch = r.cmd("AUTH LOGIN")
            self.assertTrue(ch.startswith("+ "), ch)
            ch = r.cmd(b64(user))
            self.assertTrue(ch.startswith("+ "), ch)
            reply = r.cmd(b64(self.pw(user)))
            self.assertTrue(reply.startswith("+OK"), reply)
            self.logged_in(r)
        r = self.raw(tls=True)
        ch = r.cmd("AUTH LOGIN " + b64(user))
        self.assertTrue(ch.startswith("+ "), ch)
        reply = r.cmd(b64(self.pw(user)))
        self.assertTrue(reply.startswith("+OK"), reply)
        self.logged_in(r)

    def test_auth_cancel_and_errors(self):
        user = "auth@example.test"
        r = self.raw(tls=True)
        self.assertEqual(r.cmd("AUTH PLAIN"), "+ ")
        reply = r.cmd("*")
        self.assertTrue(reply.startswith("-ERR"), reply)
        self.assertTrue(r.cmd("AUTH LOGIN").startswith("+ "))
        self.assertTrue(r.cmd(b64(user)).startswith("+ "))
        reply = r.cmd("*")
        self.assertTrue(reply.startswith("-ERR"), reply)
        self.assertTrue(r.cmd("AUTH LOGIN").startswith("+ "))
        reply = r.cmd("*")
        self.assertTrue(reply.startswith("-ERR"), reply)
        for bad in ("AUTH PLAIN !!!notbase64", "AUTH CRAM-MD5", "AUTH XYZZY",
                    "AUTH PLAIN " + b64("no-nul-here")):
            reply = r.cmd(bad)
            self.assertTrue(reply.startswith("-ERR"), (bad, reply))
        # still in AUTHORIZATION: a good login works on the same connection
        reply = r.cmd("AUTH PLAIN " + plain_ir(user, self.pw(user)))
        self.assertTrue(reply.startswith("+OK"), reply)
        self.assertTrue(r.cmd("AUTH PLAIN " + plain_ir(user, self.pw(user))).startswith("-ERR"))
        self.logged_in(r)

    def test_auth_wrong_password_auth_code(self):
        user = "auth@example.test"
        r = self.raw(tls=True)
        reply = r.cmd("AUTH PLAIN " + plain_ir(user, "wrong-password"))
        self.assertTrue(reply.startswith("-ERR [AUTH]"), reply)
        self.assertTrue(r.cmd("AUTH LOGIN").startswith("+ "))
        self.assertTrue(r.cmd(b64(user)).startswith("+ "))
        reply = r.cmd(b64("wrong-again"))
        self.assertTrue(reply.startswith("-ERR [AUTH]"), reply)
        r.close()
        r = self.raw(tls=True)  # and a good login clears it
        self.assertTrue(r.cmd("AUTH PLAIN " + plain_ir(user, self.pw(user))).startswith("+OK"))
        self.logged_in(r)

    def test_stls_injection_discarded(self):
        user = "inj@example.test"
        r = self.raw()
        # commands pipelined behind STLS in the clear must be thrown away
        r.send("STLS\r\nUSER " + user + "\r\n")
        self.assertTrue(r.line().startswith("+OK"))
        r.stls()
        status = r.cmd("CAPA")
        self.assertTrue(status.startswith("+OK"), status)
        caps = r.multi_lines()
        self.assertIn("TOP", caps)
        self.assertFalse([c for c in caps if c.startswith("+OK") or c.startswith("-ERR")], caps)
        reply = r.cmd("PASS " + self.pw(user))  # no USER was given over TLS
        self.assertTrue(reply.startswith("-ERR"), reply)
        r.login(user, self.pw(user))
        self.assertEqual(stat_reply(r.cmd("STAT"))[0], 0)
        self.assertTrue(r.quit().startswith("+OK"))


# ------------------------------------------- 3. default config: TLS required

class PlaintextRefusedTest(PopCase):
    NAME = "pop3nopl"
    USERS = {"plain@example.test": "plain-secret-1", "curlno@example.test": "curlno-secret-2"}

    def test_login_refused_before_stls(self):
        user = "plain@example.test"
        self.deliver(user, b"Subject: keep me\r\n\r\nx\r\n")
        r = self.raw()
        status = r.cmd("CAPA")
        self.assertTrue(status.startswith("+OK"), status)
        caps = r.multi_lines()
        self.assertIn("STLS", caps)
        reply = r.cmd("USER " + user)
        self.assertTrue(reply.startswith("-ERR"), reply)
        reply = r.cmd("PASS " + self.pw(user))
        self.assertTrue(reply.startswith("-ERR"), reply)
        reply = r.cmd("AUTH PLAIN " + plain_ir(user, self.pw(user)))
        self.assertTrue(reply.startswith("-ERR"), reply)
        reply = r.cmd("AUTH LOGIN")
        self.assertTrue(reply.startswith("-ERR"), reply)
        reply = r.cmd("AUTH PLAIN")
        self.assertTrue(reply.startswith("-ERR"), reply)
        reply = r.cmd("STAT")
        self.assertTrue(reply.startswith("-ERR"), reply)
        # the same connection can still upgrade and then log in
        self.assertTrue(r.cmd("STLS").startswith("+OK"))
        r.stls()
        r.login(user, self.pw(user))
        self.assertEqual(stat_reply(r.cmd("STAT"))[0], 1)
        r.quit()
        # poplib's own login over the plain port fails too
        p = poplib.POP3(HOST, self.srv.pop3_port, timeout=60)
        with self.assertRaises(poplib.error_proto) as cm:
            p.user(user)
            p.pass_(self.pw(user))
        self.assertTrue(cm.exception.args[0].startswith(b"-ERR"), cm.exception.args)
        p.close()
        self.assertEqual(self.srv.mailbox_count(user), 1)

    def test_curl_without_tls_refused(self):
        user = "curlno@example.test"
        self.deliver(user, b"Subject: c\r\n\r\nx\r\n")
        r = subprocess.run(["curl", "-sS", "--user", "%s:%s" % (user, self.pw(user)),
                            "pop3://%s:%d/" % (HOST, self.srv.pop3_port)],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 67, (r.stdout, r.stderr))  # CURLE_LOGIN_DENIED
        self.assertEqual(r.stdout, b"")

    def test_too_many_errors(self):
        # [pop3] max_errors defaults to 10: then the client is cut off
        r = self.raw()
        for i in range(10):
            try:
                reply = r.cmd("BOGUS%d" % i)
            except (EOFError, ConnectionResetError):
                self.fail("closed after %d errors, before the limit" % i)
            self.assertTrue(reply.startswith("-ERR"), reply)
        closed = False
        try:
            extra = r.cmd("NOOP")  # at most one more -ERR, then the end
            self.assertTrue(extra.startswith("-ERR"), extra)
            r.line()
        except (EOFError, ConnectionResetError, BrokenPipeError):
            closed = True
        self.assertTrue(closed, "still connected after 11 bad commands")
        r.close()


# ------------------------------------------------------- 4. byte-exact RETR

class ByteExactTest(PopCase):
    NAME = "pop3bytes"
    EXTRA = dict(PLAIN, **{"smtp.max_message_size": "30m"})
    USERS = {"dots@example.test": "dots-secret-1", "big@example.test": "big-secret-2",
             "shapes@example.test": "shapes-secret-3"}

    def check_retr(self, r, n, body, user):
        size = int(r.cmd("LIST %d" % n).split()[2])
        status, wire, full = self.retr_raw(r, n)
        self.assertEqual(status, "+OK %d octets" % len(full))
        self.assertEqual(size, len(full))
        self.assert_stored(full, body, user)
        return full

    def test_dots_and_8bit(self):
        user = "dots@example.test"
        body = (b"From: Friend <friend@example.net>\r\nTo: dots@example.test\r\nSubject: dots\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                b".leading dot\r\n..two dots\r\n.\r\n...\r\n. space\r\n.\tdot tab\r\n"
                b"Gr\xc3\xbc\xc3\x9fe \xff\xfe\x80\r\nmiddle\r\n.\r\nz" + b"w" * 996 + b"\r\n"
                b"\r\n\r\n.\r\n")
        self.deliver(user, body)
        r = self.raw(user)
        full = self.check_retr(r, 1, body, user)
        self.assertEqual(full, self.srv.message(user, 1))  # exactly what the store holds
        # the wire form: every line that began with a dot got one more
        r.send("RETR 1\r\n")
        r.line()
        wire = r.multi()
        self.assertIn(b"\r\n..leading dot\r\n...two dots\r\n..\r\n....\r\n.. space\r\n", wire)
        self.assertTrue(wire.endswith(b"\r\n\r\n\r\n..\r\n"), wire[-20:])
        # TOP over dotted body lines
        for n in (0, 1, 3, 7, 1000):
            self.assertTrue(r.cmd("TOP 1 %d" % n).startswith("+OK"))
            top_wire = r.multi()
            self.assertEqual(badly_stuffed(top_wire), [])
            self.assertEqual(unstuff(top_wire), expected_top(full, n), n)
        n, total = stat_reply(r.cmd("STAT"))
        self.assertEqual((n, total), (1, len(full)))
        r.quit()

    def test_message_shapes(self):
        user = "shapes@example.test"
        bodies = [
            b"Subject: empty body\r\n\r\n",
            b"Subject: headers only\r\n",
            b"Subject: one empty line\r\n\r\n\r\n",
            b"Subject: crlf\r\n\r\nno dots at all\r\n",
            b"Subject: max line\r\n\r\n" + b"m" * 998 + b"\r\n.\r\n" + b"." * 998 + b"\r\n",
        ]
        for b in bodies:
            self.deliver(user, b)
        r = self.raw(user)
        total = 0
        for i, b in enumerate(bodies, 1):
            full = self.check_retr(r, i, b, user)
            total += len(full)
            self.assertEqual(full, self.srv.message(user, i))
            self.assertTrue(r.cmd("TOP %d 0" % i).startswith("+OK"))
            top = unstuff(r.multi())
            if b"\r\n\r\n" in full:
                self.assertEqual(top, expected_top(full, 0), i)
            else:  # no body at all: the whole message is the header
                self.assertEqual(top, full, i)
        self.assertEqual(stat_reply(r.cmd("STAT")), (len(bodies), total))
        r.quit()

    def test_20mb_byte_exact(self):
        user = "big@example.test"
        rnd = random.Random(11)
        lines = []
        size = 0
        alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 .\xe9\xff"
        while size < 20 * 1024 * 1024:
            n = rnd.randint(0, 200)
            line = bytes(rnd.choice(alphabet) for _ in range(n))
            if rnd.random() < 0.05:
                line = b"." + line
            lines.append(line)
            size += n + 2
        body = b"Subject: big\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
        self.deliver(user, body)
        r = self.raw(user)
        n, total = stat_reply(r.cmd("STAT"))
        self.assertEqual(n, 1)
        full = self.check_retr(r, 1, body, user)
        self.assertEqual(total, len(full))
        self.assertTrue(r.cmd("TOP 1 5").startswith("+OK"))
        self.assertEqual(unstuff(r.multi()), expected_top(full, 5))
        r.quit()


# --------------------------------------------------------------- 5. UIDL

class UidlTest(PopCase):
    NAME = "pop3uidl"
    EXTRA = PLAIN
    USERS = {"uidl@example.test": "uidl-secret-1"}

    def uidls(self, p):
        resp, lines, _ = p.uidl()
        self.assertTrue(resp.startswith(b"+OK"))
        out = []
        for i, l in enumerate(lines, 1):
            num, uid = l.split()
            self.assertEqual(int(num), i)
            self.assertTrue(1 <= len(uid) <= 70 and all(0x21 <= c <= 0x7E for c in uid), uid)
            self.assertEqual(p.uidl(i), b"+OK %d %s" % (i, uid))
            out.append(uid)
        self.assertEqual(len(set(out)), len(out), out)
        return out

    def subjects(self, p):
        out = []
        for i in range(1, p.stat()[0] + 1):
            _, lines, _ = p.top(i, 0)
            out.append([l for l in lines if l.startswith(b"Subject:")][0][9:].decode())
        return out

    def test_uidl_stable_unique_never_reused(self):
        user = "uidl@example.test"
        for s in ("a", "b", "c"):
            self.deliver(user, b"Subject: " + s.encode() + b"\r\n\r\nmsg " + s.encode() + b"\r\n")
        p = self.poplib_plain(user)
        first = self.uidls(p)
        self.assertEqual(len(first), 3)
        self.assertEqual(self.subjects(p), ["a", "b", "c"])
        quit_poplib(p)

        p = self.poplib_plain(user)
        self.assertEqual(self.uidls(p), first)  # same in a second session
        p.dele(1)
        quit_poplib(p)

        p = self.poplib_plain(user)
        self.assertEqual(self.uidls(p), first[1:])  # renumbered, identities kept
        self.assertEqual(self.subjects(p), ["b", "c"])
        quit_poplib(p)

        seen = set(first)
        self.deliver(user, b"Subject: d\r\n\r\nmsg d\r\n")
        p = self.poplib_plain(user)
        now = self.uidls(p)
        self.assertEqual(now[:2], first[1:])
        self.assertNotIn(now[2], seen)
        seen.add(now[2])
        # delete the newest: its UIDL must not come back for the next message
        p.dele(3)
        quit_poplib(p)
        self.deliver(user, b"Subject: e\r\n\r\nmsg e\r\n")
        p = self.poplib_plain(user)
        now = self.uidls(p)
        self.assertEqual(now[:2], first[1:])
        self.assertNotIn(now[2], seen)
        self.assertEqual(self.subjects(p), ["b", "c", "e"])
        quit_poplib(p)


# --------------------------------------------------------------- 6. locking

class LockingTest(PopCase):
    NAME = "pop3lock"
    EXTRA = PLAIN
    USERS = {"lock@example.test": "lock-secret-1", "rst@example.test": "rst-secret-2",
             "fin@example.test": "fin-secret-3", "snap@example.test": "snap-secret-4",
             "kill@example.test": "kill-secret-5"}

    def login_when_free(self, user, window=5.0):
        """Log in, retrying only while the reply is [IN-USE], for window seconds."""
        deadline = time.time() + window
        while True:
            r = self.raw()
            self.assertTrue(r.cmd("USER " + user).startswith("+OK"))
            reply = r.cmd("PASS " + self.pw(user))
            if reply.startswith("+OK"):
                return r
            r.close()
            self.assertTrue(reply.startswith("-ERR [IN-USE]"), reply)
            if time.time() > deadline:
                self.fail("maildrop still locked %.0fs after the holder's connection died" % window)
            time.sleep(0.2)

    def test_second_session_in_use(self):
        user = "lock@example.test"
        self.deliver(user, b"Subject: l\r\n\r\nx\r\n")
        a = self.raw(user)
        b = self.raw()
        self.assertTrue(b.cmd("USER " + user).startswith("+OK"))
        reply = b.cmd("PASS " + self.pw(user))
        self.assertTrue(reply.startswith("-ERR [IN-USE]"), reply)
        b.close()
        b = self.raw()
        reply = b.cmd("AUTH PLAIN " + plain_ir(user, self.pw(user)))
        self.assertTrue(reply.startswith("-ERR [IN-USE]"), reply)
        b.close()
        b = self.raw(tls=True)
        b.cmd("USER " + user)
        reply = b.cmd("PASS " + self.pw(user))
        self.assertTrue(reply.startswith("-ERR [IN-USE]"), reply)
        b.close()
        self.assertEqual(stat_reply(a.cmd("STAT"))[0], 1)  # the holder is unaffected
        self.assertTrue(a.quit().startswith("+OK"))
        c = self.raw(user)  # freed by QUIT at once
        self.assertEqual(stat_reply(c.cmd("STAT"))[0], 1)
        c.quit()

    def test_reset_connection_frees_lock_and_deletes_nothing(self):
        user = "rst@example.test"
        for i in range(3):
            self.deliver(user, b"Subject: r%d\r\n\r\nx\r\n" % i)
        r = self.raw(user)
        before = stat_reply(r.cmd("STAT"))
        self.assertEqual(before[0], 3)
        r.send("UIDL\r\n")
        r.line()
        uidl = r.multi()
        for i in (1, 2, 3):
            self.assertTrue(r.cmd("DELE %d" % i).startswith("+OK"))
        self.assertEqual(stat_reply(r.cmd("STAT"))[0], 0)
        r.reset()  # RST, no QUIT
        r = self.login_when_free(user)
        self.assertEqual(stat_reply(r.cmd("STAT")), before)
        r.send("UIDL\r\n")
        r.line()
        self.assertEqual(r.multi(), uidl)
        r.quit()
        self.assertEqual(self.srv.mailbox_count(user), 3)

    def test_closed_connection_frees_lock_and_deletes_nothing(self):
        user = "fin@example.test"
        for i in range(2):
            self.deliver(user, b"Subject: f%d\r\n\r\nx\r\n" % i)
        r = self.raw(user)
        before = stat_reply(r.cmd("STAT"))
        r.cmd("DELE 1")
        r.cmd("DELE 2")
        r.close()  # orderly close, but no QUIT
        r = self.login_when_free(user)
        self.assertEqual(stat_reply(r.cmd("STAT")), before)
        r.quit()
        self.assertEqual(self.srv.mailbox_count(user), 2)

    def test_delivery_while_locked_and_snapshot(self):
        user = "snap@example.test"
        for i in range(2):
            self.deliver(user, b"Subject: old%d\r\n\r\nx\r\n" % i)
        a = self.raw(user)
        before = stat_reply(a.cmd("STAT"))
        self.assertEqual(before[0], 2)
        new = b"Subject: arrived during the session\r\n\r\nnew\r\n"
        self.deliver(user, new)  # a POP3 lock never blocks delivery
        self.assertEqual(stat_reply(a.cmd("STAT")), before)  # numbers fixed for the session
        self.assertTrue(a.cmd("LIST 3").startswith("-ERR"))
        a.cmd("DELE 1")
        a.cmd("DELE 2")
        self.assertTrue(a.quit().startswith("+OK"))
        b = self.raw(user)
        self.assertEqual(stat_reply(b.cmd("STAT"))[0], 1)
        _, _, full = self.retr_raw(b, 1)
        self.assert_stored(full, new, user)
        b.quit()


    def test_kill9_leaves_no_stale_lock(self):
        """The lock lives in the daemon's memory: after kill -9 and a
        restart, the maildrop is free at once and nothing was deleted."""
        user = "kill@example.test"
        for i in range(2):
            self.deliver(user, b"Subject: k%d\r\n\r\nx\r\n" % i)
        r = self.raw(user)
        self.assertTrue(r.cmd("DELE 1").startswith("+OK"))
        self.srv.kill9()
        r.close()
        self.srv.start()
        prtest.wait_port(self.srv.pop3_port, timeout=10)
        b = self.raw()
        self.assertTrue(b.cmd("USER " + user).startswith("+OK"))
        reply = b.cmd("PASS " + self.pw(user))
        self.assertTrue(reply.startswith("+OK"), reply)  # not [IN-USE]
        self.assertEqual(stat_reply(b.cmd("STAT"))[0], 2)
        b.quit()


# ----------------------------------------------------------- 7. bad logins

class BadLoginTest(PopCase):
    NAME = "pop3bad"
    EXTRA = PLAIN
    USERS = {"real@example.test": "real-secret-1"}

    def attempt(self, user, password):
        r = self.raw()
        u = r.cmd("USER " + user)
        t = time.time()
        p = r.cmd("PASS " + password)
        elapsed = time.time() - t
        r.close()
        return u, p, elapsed

    def test_unknown_user_and_wrong_password_look_the_same(self):
        u1, p1, t1 = self.attempt("nobody@example.test", "whatever-1")
        u2, p2, t2 = self.attempt("real@example.test", "wrong-password")
        u3, p3, t3 = self.attempt("someone@elsewhere.test", "whatever-1")
        self.assertTrue(u1.startswith("+OK"), u1)
        self.assertEqual(u1, u2)
        self.assertEqual(u1, u3)
        self.assertTrue(p1.startswith("-ERR [AUTH]"), p1)
        self.assertEqual(p1, p2)
        self.assertEqual(p1, p3)
        for t in (t1, t2, t3):
            self.assertGreaterEqual(t, 0.8, "failed login answered without delay")
        a = []
        for u, pw in (("nobody@example.test", "whatever-1"), ("real@example.test", "wrong-password")):
            r = self.raw()
            a.append(r.cmd("AUTH PLAIN " + plain_ir(u, pw)))
            r.close()
        a1, a2 = a
        self.assertTrue(a1.startswith("-ERR [AUTH]"), a1)
        self.assertEqual(a1, a2)
        r = self.raw("real@example.test")  # the right password still works
        self.assertEqual(stat_reply(r.cmd("STAT")), (0, 0))
        r.quit()


class LoginDelayTest(PopCase):
    NAME = "pop3delay"
    EXTRA = PLAIN
    USERS = {"victim@example.test": "victim-secret-1"}

    def try_login(self, password, source=None, tls=False):
        r = Pop(self.srv.pop3s_port if tls else self.srv.pop3_port, tls=tls, source=source)
        u = r.cmd("USER victim@example.test")
        if u.startswith("-ERR"):
            r.close()
            return u
        p = r.cmd("PASS " + password)
        if p.startswith("+OK"):
            r.quit()
        else:
            r.close()
        return p

    def test_login_delay_after_repeated_failures(self):
        replies = []
        lock = threading.Lock()

        def fail_once():
            reply = self.try_login("wrong-guess")
            with lock:
                replies.append(reply)

        # 12 guesses at once (the server's limit is 10 in 5 minutes); the
        # count, not the per-failure delay, is what blocks.
        t0 = time.time()
        threads = [threading.Thread(target=fail_once) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(len(replies), 12)
        for reply in replies:
            self.assertTrue(reply.startswith("-ERR [AUTH]") or reply.startswith("-ERR [LOGIN-DELAY]"),
                            reply)
        self.assertLess(time.time() - t0, 30)
        # now even the right password is refused from this address
        reply = self.try_login(self.pw("victim@example.test"))
        self.assertTrue(reply.startswith("-ERR [LOGIN-DELAY]"), reply)
        r = self.raw(tls=True)
        reply = r.cmd("AUTH PLAIN " + plain_ir("victim@example.test", self.pw("victim@example.test")))
        self.assertTrue(reply.startswith("-ERR [LOGIN-DELAY]"), reply)
        r.close()
        time.sleep(2)
        reply = self.try_login(self.pw("victim@example.test"))
        self.assertTrue(reply.startswith("-ERR [LOGIN-DELAY]"), reply)
        # per client address: another loopback address is not blocked
        reply = self.try_login(self.pw("victim@example.test"), source="127.0.0.2")
        self.assertTrue(reply.startswith("+OK"), reply)


# ----------------------------------------------------------- 8. fetchmail

MDA = """#!/bin/sh
f=$(mktemp "%s/msg.XXXXXXXX") || exit 75
cat > "$f" || exit 75
"""


class FetchmailTest(PopCase):
    NAME = "pop3fm"
    USERS = {"fm@example.test": "fm-secret-1", "fms@example.test": "fms-secret-2"}

    def setUp(self):
        import tempfile
        self.home = tempfile.mkdtemp(prefix="fetchmail-", dir=self.srv.dir)
        os.chmod(self.home, 0o700)
        self.out = os.path.join(self.home, "out")
        os.mkdir(self.out)
        self.mda = os.path.join(self.home, "mda.sh")
        with open(self.mda, "w") as f:
            f.write(MDA % self.out)
        os.chmod(self.mda, 0o755)

    def rcfile(self, user, port, tls_opts):
        rc = os.path.join(self.home, "fetchmailrc")
        with open(rc, "w") as f:
            f.write('set no syslog\n'
                    'poll 127.0.0.1 service %d protocol POP3 uidl timeout 60\n'
                    '  user "%s" there with password "%s"\n'
                    '  %s no sslcertck\n'
                    '  mda "%s"\n' % (port, user, self.pw(user), tls_opts, self.mda))
        os.chmod(rc, stat.S_IRUSR | stat.S_IWUSR)
        return rc

    def fetch(self, rc, *opts):
        env = dict(os.environ, FETCHMAILHOME=self.home, HOME=self.home)
        r = subprocess.run(["fetchmail", "-f", rc, "-i", os.path.join(self.home, "fetchids"),
                            "--nodetach", "-v"] + list(opts),
                           capture_output=True, timeout=300, env=env)
        return r.returncode, (r.stdout + r.stderr).decode(errors="replace")

    def delivered(self):
        out = {}
        for name in os.listdir(self.out):
            with open(os.path.join(self.out, name), "rb") as f:
                out[name] = f.read()
        return out

    def assert_got(self, files, bodies):
        self.assertEqual(len(files), len(bodies), list(files.values()))
        for b in bodies:
            lf = b.replace(b"\r\n", b"\n")
            self.assertEqual(len([c for c in files.values() if c.endswith(lf)]), 1, (b, files))

    def pop_stat(self, user, tls_port=False):
        if tls_port:
            p = poplib.POP3_SSL(HOST, self.srv.pop3s_port, context=tls_context(), timeout=60)
        else:
            p = poplib.POP3(HOST, self.srv.pop3_port, timeout=60)
            p.stls(context=tls_context())
        p.user(user)
        p.pass_(self.pw(user))
        n = p.stat()[0]
        quit_poplib(p)
        return n

    def test_fetchmail_stls_keep_uidl_then_delete(self):
        user = "fm@example.test"
        bodies = [b"From: a@example.net\r\nSubject: fm%d\r\n\r\nbody %d\r\n.dotted line\r\n.\r\nend\r\n"
                  % (i, i) for i in range(3)]
        for b in bodies:
            self.deliver(user, b)
        # TLS1.2+: STLS is mandatory (the server refuses plaintext logins anyway)
        rc = self.rcfile(user, self.srv.pop3_port, 'sslproto "TLS1.2+"')
        code, log = self.fetch(rc, "--keep")
        self.assertEqual(code, 0, log)
        first = self.delivered()
        self.assert_got(first, bodies)
        code, log = self.fetch(rc, "--keep")  # nothing new
        self.assertEqual(code, 1, log)
        self.assertEqual(self.delivered(), first)
        self.assertEqual(self.pop_stat(user), 3)
        new = b"From: a@example.net\r\nSubject: fm-new\r\n\r\nnewer\r\n"
        self.deliver(user, new)
        code, log = self.fetch(rc, "--keep")
        self.assertEqual(code, 0, log)
        now = self.delivered()
        self.assert_got({k: v for k, v in now.items() if k not in first}, [new])
        self.assertEqual(self.pop_stat(user), 4)
        # a normal run (fetch all, no keep) deletes them from the server
        code, log = self.fetch(rc, "--all")
        self.assertEqual(code, 0, log)
        self.assertEqual(len(self.delivered()), 8)
        self.assertEqual(self.pop_stat(user), 0)
        code, log = self.fetch(rc)
        self.assertEqual(code, 1, log)

    def test_fetchmail_pop3s(self):
        user = "fms@example.test"
        bodies = [b"Subject: fms%d\r\n\r\n..x\r\nGr\xc3\xbc\xc3\x9fe\r\n" % i for i in range(2)]
        for b in bodies:
            self.deliver(user, b)
        rc = self.rcfile(user, self.srv.pop3s_port, "ssl")
        code, log = self.fetch(rc)
        self.assertEqual(code, 0, log)
        self.assert_got(self.delivered(), bodies)
        self.assertEqual(self.pop_stat(user, tls_port=True), 0)
        code, log = self.fetch(rc)
        self.assertEqual(code, 1, log)


# ----------------------------------------------------------------- 9. curl

class CurlTest(PopCase):
    NAME = "pop3curl"
    EXTRA = PLAIN
    USERS = {"curl@example.test": "curl-secret-1"}

    def curl(self, url, *opts, user="curl@example.test", password=None):
        password = password or self.pw(user)
        r = subprocess.run(["curl", "-sS", "--max-time", "60", "--user", "%s:%s" % (user, password)]
                           + list(opts) + [url], capture_output=True, timeout=120)
        return r

    def test_curl_list_and_retrieve(self):
        user = "curl@example.test"
        bodies = [b"Subject: c1\r\n\r\nfirst\r\n",
                  b"Subject: c2\r\n\r\n.dot\r\n..two\r\n.\r\nGr\xc3\xbc\xc3\x9fe\r\n"]
        for b in bodies:
            self.deliver(user, b)
        p = self.poplib_plain(user)
        listing = b"".join(l + b"\r\n" for l in p.list()[1])
        full = [b"".join(l + b"\r\n" for l in p.retr(i)[1]) for i in (1, 2)]
        quit_poplib(p)
        for i in (0, 1):
            self.assert_stored(full[i], bodies[i], user)
        plain = "pop3://%s:%d" % (HOST, self.srv.pop3_port)
        tls = "pop3s://%s:%d" % (HOST, self.srv.pop3s_port)
        for url, opts in ((plain, []), (plain, ["--ssl-reqd", "-k"]), (tls, ["-k"])):
            r = self.curl(url + "/", *opts)
            self.assertEqual(r.returncode, 0, (url, opts, r.stderr))
            self.assertEqual(r.stdout, listing, (url, opts))
            for i in (1, 2):
                r = self.curl(url + "/%d" % i, *opts)
                self.assertEqual(r.returncode, 0, (url, opts, r.stderr))
                self.assertEqual(r.stdout, full[i - 1], (url, opts, i))
        r = self.curl(plain + "/1", password="wrong-password")
        self.assertEqual(r.returncode, 67, r.stderr)  # CURLE_LOGIN_DENIED
        r = self.curl(plain + "/3")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(self.srv.mailbox_count(user), 2)


if __name__ == "__main__":
    prtest.main()
