"""POP2 (RFC 937) against a real postroomd: off by default; when configured,
mail delivered with smtplib is read over a raw socket (HELO, READ, RETR with
exact octets, ACKS/ACKD/NACK, QUIT) and deletions are checked with the
`postroom mailbox show` CLI; a dropped connection deletes nothing; a failed
HELO closes the connection; shutdown closes an idle session."""
import smtplib
import socket
import time
import unittest

import prtest
from prtest import HOST, Server

PW = {"alice@example.test": "alice secret 1",  # a password with spaces
      "bob@example.test": "bob-secret-2",
      "carol@example.test": "carol-secret-3",
      "dave@example.test": "dave-secret-4"}


class Pop2:
    """A raw POP2 client: replies are lines, messages are counted octets."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""
        self.greeting = self.line()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed; buffered %r" % self.buf)
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def octets(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def size(self, text):
        """Send a command answered with =ccc; return ccc."""
        reply = self.cmd(text)
        assert reply.startswith("="), reply
        return int(reply[1:].split()[0])

    def retr(self, n):
        self.sock.sendall(b"RETR\r\n")
        return self.octets(n)

    def closed(self):
        """True once the server has closed the connection (and sent nothing more)."""
        try:
            return self.sock.recv(1) == b"" and self.buf == b""
        except ConnectionResetError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def deliver(port, rcpt, subject, body=b"hello\r\n"):
    msg = (b"From: sender@example.net\r\nTo: " + rcpt.encode() + b"\r\nSubject: " +
           subject.encode() + b"\r\n\r\n" + body)
    with smtplib.SMTP(HOST, port, timeout=30) as s:
        s.sendmail("sender@example.net", [rcpt], msg)


class Pop2Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        port = prtest.free_port()
        cls.srv = Server("pop2", extra={"pop2.listen": "%s:%d" % (HOST, port),
                                        "pop3.max_errors": "5"})
        cls.srv.pop2_port = port
        for addr, pw in PW.items():
            cls.srv.add_user(addr, pw)
        cls.srv.start()
        prtest.wait_port(port)

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text())
        cls.srv.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc

    def connect(self):
        c = Pop2(self.srv.pop2_port)
        self.addCleanup(c.close)
        self.assertEqual(c.greeting, "+ POP2 mail.example.test server ready")
        return c

    def count(self, addr):
        return self.srv.mailbox_count(addr)

    def test_read_retr_ackd_quit(self):
        addr = "alice@example.test"
        # Content that looks like protocol: POP2 sends octets, nothing is stuffed.
        deliver(self.srv.smtp_port, addr, "one", b"line\r\n..two dots\r\n=5\r\n#1\r\n+ OK\r\n")
        deliver(self.srv.smtp_port, addr, "two", b"x" * 70 + b"\r\n" * 3000)
        self.assertEqual(self.count(addr), 2)
        stored1 = self.srv.message(addr, 1)
        stored2 = self.srv.message(addr, 2)

        c = self.connect()
        self.assertEqual(c.cmd("HELO %s %s" % (addr, PW[addr])), "#2")
        n1 = c.size("READ")
        self.assertEqual(n1, len(stored1))
        self.assertEqual(c.retr(n1), stored1)
        n2 = c.size("ACKD")  # acknowledged and deleted: the next one's size
        self.assertEqual(n2, len(stored2))
        self.assertEqual(c.retr(n2), stored2)
        self.assertEqual(c.size("NACK"), n2)  # not received: the same again
        self.assertEqual(c.retr(n2), stored2)
        self.assertEqual(c.size("ACKS"), 0)  # kept; no more messages
        self.assertEqual(c.size("READ 1"), 0)  # deleted in this session
        self.assertEqual(c.size("read 2"), n2)
        # Nothing is deleted before QUIT.
        self.assertEqual(self.count(addr), 2)
        self.assertEqual(c.cmd("QUIT"), "+ OK")
        self.assertTrue(c.closed())
        self.assertEqual(self.count(addr), 1)
        self.assertEqual(self.srv.message(addr, 2), stored2)

        c = self.connect()
        self.assertEqual(c.cmd("HELO %s %s" % (addr, PW[addr])), "#1")
        self.assertEqual(c.size("READ"), n2)
        self.assertEqual(c.cmd("QUIT"), "+ OK")

    def test_dropped_connection_deletes_nothing(self):
        addr = "bob@example.test"
        deliver(self.srv.smtp_port, addr, "keep me")
        c = self.connect()
        self.assertEqual(c.cmd("HELO %s %s" % (addr, PW[addr])), "#1")
        n = c.size("READ")
        c.retr(n)
        self.assertEqual(c.size("ACKD"), 0)
        c.close()
        # The session ends and releases its lock; the mail is still there.
        deadline = time.time() + 10
        while True:
            c = self.connect()
            reply = c.cmd("HELO %s %s" % (addr, PW[addr]))
            if reply != "- Mailbox is locked by another session" or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(reply, "#1")
        self.assertEqual(self.count(addr), 1)
        # A second session on the same maildrop is refused while one holds it.
        other = self.connect()
        self.assertEqual(other.cmd("HELO %s %s" % (addr, PW[addr])),
                         "- Mailbox is locked by another session")
        self.assertTrue(other.closed())
        self.assertEqual(c.cmd("QUIT"), "+ OK")

    def test_failed_login_closes(self):
        c = self.connect()
        self.assertEqual(c.cmd("HELO carol@example.test wrong"), "- Invalid login or password")
        self.assertTrue(c.closed())
        self.assertIn("login failed for carol@example.test", self.srv.log_text())

    def test_errors_and_limits(self):
        c = self.connect()
        self.assertEqual(c.cmd("READ"), "- Send HELO user password first")
        self.assertEqual(c.cmd("FOLD " + "x" * 600), "- Line too long")
        self.assertEqual(c.cmd("HELO dave@example.test %s" % PW["dave@example.test"]), "#0")
        self.assertEqual(c.cmd("FOLD INBOX"), "#0")
        self.assertEqual(c.cmd("FOLD Archive"), "#0")
        self.assertEqual(c.cmd("RETR"), "- Send READ first")
        self.assertEqual(c.cmd("NOOP"), "- Unknown command")
        self.assertEqual(c.cmd("STAT"), "- Unknown command")
        # the fifth error ([pop3] max_errors = 5) ends the session
        self.assertEqual(c.line(), "- Too many errors")
        self.assertTrue(c.closed())


class Pop2ShutdownTest(unittest.TestCase):
    def test_shutdown_closes_idle_session(self):
        port = prtest.free_port()
        srv = Server("pop2stop", extra={"pop2.listen": "%s:%d" % (HOST, port)})
        try:
            srv.add_user("alice@example.test", PW["alice@example.test"])
            srv.start()
            prtest.wait_port(port)
            deliver(srv.smtp_port, "alice@example.test", "stays")
            c = Pop2(port)
            self.assertEqual(c.cmd("HELO alice@example.test %s" % PW["alice@example.test"]), "#1")
            c.retr(c.size("READ"))
            self.assertEqual(c.size("ACKD"), 0)
            srv.proc.send_signal(15)
            self.assertEqual(c.line(), "- Server shutting down")
            self.assertTrue(c.closed())
            c.close()
            self.assertEqual(srv.proc.wait(timeout=60), 0)
            srv.proc = None
            # Without QUIT the ACKD is not committed.
            self.assertEqual(srv.mailbox_count("alice@example.test"), 1)
        finally:
            srv.cleanup()


class Pop2OffByDefaultTest(unittest.TestCase):
    def test_nothing_listens(self):
        srv = Server("pop2off")
        try:
            srv.start()
            with self.assertRaises(ConnectionRefusedError):
                socket.create_connection((HOST, srv.pop2_port), timeout=5).close()
            self.assertNotIn("(pop2)", srv.log_text())
        finally:
            srv.cleanup()


if __name__ == "__main__":
    prtest.main()
