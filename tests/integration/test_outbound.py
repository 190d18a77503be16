"""Outbound delivery (issue 5) with real parts on loopback only: a dnsmasq
(tests/integration/dnstest.py) answers MX, A and null-MX records for test
domains whose MX hosts are other postroomd instances listening on 127.0.0.2
and 127.0.0.3; the postroomd under test relays mail from its relay network
to them. Cases: delivery via MX, the primary MX refusing connections (the
secondary takes it), one message for two domains split per destination, a
4xx (the remote user over quota) then success on a retry, a 5xx giving a
DSN (RFC 3464) in the local sender's mailbox, null MX and NXDOMAIN bounces,
expiry after max_queue_lifetime, a bounce that cannot be delivered making
no further bounce, a smarthost with STARTTLS and AUTH, and SIGKILL during
queue runs (after a restart every recipient arrives)."""
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prtest  # noqa: E402
from dnstest import Dnsmasq  # noqa: E402
from outtest import OutboundCase  # noqa: E402
from prtest import HOST  # noqa: E402

ALICE, ALICE_PW = "alice@example.test", "alice-Secret-1"


free_port_on, wait_for = prtest.free_port_on, prtest.wait_for
queue_rows, stored_messages = prtest.queue_rows, prtest.stored_messages


class OutboundTest(OutboundCase):
    PORT = None

    @classmethod
    def setUpClass(cls):
        cls.port = free_port_on("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.7")
        cls.dns = Dnsmasq(
            "outbound",
            mx={"remote.test": [(10, "mx1.remote.test"), (20, "mx2.remote.test")],
                "other.test": [(10, "mx2.remote.test")],
                "down.test": [(10, "dead.down.test"), (20, "mx2.remote.test")],
                "crash.test": [(10, "mx3.crash.test")],
                "slow.test": [(10, "mx.slow.test")],
                "loop.test": [(10, "mail.example.test"), (20, "mx2.remote.test")],
                "backup.test": [(5, "mx2.remote.test"), (10, "mail.example.test")]},
            hosts={"mx1.remote.test": ["127.0.0.2"], "mx2.remote.test": ["127.0.0.3"],
                   "dead.down.test": ["127.0.0.4"], "mx3.crash.test": ["127.0.0.5"],
                   "mail.example.test": ["127.0.0.6"], "mx.slow.test": ["127.0.0.7"]},
            null_mx=["nullmx.test"], nxdomain=["nx.test"], servfail=["servfail.test"])
        cls.dns.start()
        cls.servers = []
        try:
            cls.mx1 = cls.server("mx1", "remote.test", mx_listen=["127.0.0.2:%d" % cls.port])
            cls.mx2 = cls.server("mx2", "remote.test, other.test, down.test, backup.test",
                                 mx_listen=["127.0.0.3:%d" % cls.port])
            for u in ("bob@remote.test", "erin@remote.test", "frank@remote.test"):
                cls.mx1.add_user(u, "pw-" + u)
            for u in ("carol@other.test", "dave@down.test", "bob@remote.test",
                      "bea@backup.test", "outsider@other.test"):
                cls.mx2.add_user(u, "pw-" + u)
            cls.out = cls.server("out", "example.test", extra=cls.outbound())
            cls.out.add_user(ALICE, ALICE_PW)
        except Exception:
            cls.tearDownClass()
            raise

    def send(self, rcpts, subject, sender=ALICE, srv=None):
        body = ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\n\r\n"
                "hello %s\r\n" % (sender or "MAILER-DAEMON", ", ".join(rcpts), subject,
                                  subject.replace(" ", "."), subject)).encode()
        (srv or self.out).deliver(rcpts, body, sender=sender)

    def arrived(self, srv, user, n, timeout=30):
        wait_for("%d messages for %s" % (n, user), lambda: srv.mailbox_count(user) >= n,
                 timeout=timeout)

    def dsns(self, srv=None):
        """The delivery status reports in alice's mailbox."""
        srv = srv or self.out
        msgs = self.pop_messages(srv, ALICE, ALICE_PW)
        return [m for m in msgs if m.get_content_type() == "multipart/report"]

    def dsn_for(self, address, srv=None, timeout=30):
        """The report naming address: (message, its delivery-status text)."""
        def find():
            for m in self.dsns(srv):
                for part in m.walk():
                    if part.get_content_type() == "message/delivery-status":
                        text = "".join(str(p) for p in part.get_payload())
                        if ("Final-Recipient: rfc822; " + address) in text:
                            return m, text
            return None
        return wait_for("a DSN for " + address, find, timeout)

    def test_delivery_via_mx(self):
        before = self.mx1.mailbox_count("bob@remote.test")
        self.send(["bob@remote.test"], "via mx")
        self.arrived(self.mx1, "bob@remote.test", before + 1)
        wait_for("an empty queue", lambda: queue_rows(self.out) == 0)
        self.assertIn("delivered via mx1.remote.test[127.0.0.2]", self.out.log_text())

    def test_address_literal(self):
        # user@[127.0.0.2]: that host directly, no DNS (RFC 5321 4.1.3).
        # mx1 there takes no mail for a literal (it would be relaying), and
        # its refusal in the report shows the message got there.
        self.send(["bob@[127.0.0.2]"], "literal")
        _, text = self.dsn_for("bob@[127.0.0.2]")
        self.assertIn("Remote-MTA: dns; [127.0.0.2]\n", text.replace("\r\n", "\n"))
        self.assertIn("Diagnostic-Code: smtp; 550 5.7.1", text)  # relay denied there

    def test_secondary_when_primary_refuses(self):
        self.send(["dave@down.test"], "secondary")
        self.arrived(self.mx2, "dave@down.test", 1)
        self.assertIn("dead.down.test[127.0.0.4]", self.out.log_text())  # tried first

    def test_two_domains_split(self):
        b1 = self.mx1.mailbox_count("bob@remote.test")
        c2 = self.mx2.mailbox_count("carol@other.test")
        self.send(["bob@remote.test", "carol@other.test"], "split")
        self.arrived(self.mx1, "bob@remote.test", b1 + 1)
        self.arrived(self.mx2, "carol@other.test", c2 + 1)
        # each destination got only its own recipient
        self.assertEqual(self.mx2.mailbox_count("bob@remote.test"), 0)

    def test_5xx_bounces_to_local_sender(self):
        self.send(["nosuch@remote.test", "bob@remote.test"], "five hundred")
        m, text = self.dsn_for("nosuch@remote.test")
        self.assertEqual(m["Return-Path"], "<>")
        self.assertIn("MAILER-DAEMON@mail.example.test", m["From"])
        self.assertEqual(m["Auto-Submitted"], "auto-replied")
        self.assertIn("Action: failed", text)
        self.assertIn("Status: 5.1.1", text)
        self.assertIn("Remote-MTA: dns; mx1.remote.test[127.0.0.2]", text)
        self.assertIn("Diagnostic-Code: smtp; 550 5.1.1", text)
        self.assertNotIn("bob@remote.test", text)  # delivered: not reported
        original = [p for p in m.walk() if p.get_content_type() == "message/rfc822"]
        self.assertEqual(len(original), 1)
        self.assertIn("Subject: five hundred", str(original[0]))

    def test_null_mx_and_nxdomain_bounce(self):
        self.send(["someone@nullmx.test"], "null mx")
        _, text = self.dsn_for("someone@nullmx.test")
        self.assertIn("Status: 5.1.10", text)
        self.send(["someone@nx.test"], "nx")
        _, text = self.dsn_for("someone@nx.test")
        self.assertIn("Status: 5.1.2", text)

    def over_quota(self, user):
        """Make the remote answer 452 4.2.2 (mailbox full for now) for user:
        900 octets in the mailbox, a quota of 1000."""
        self.mx1.deliver(user, b"Subject: filler\r\n\r\n" + b"x" * 870 + b"\r\n")
        self.mx1.cli("user", "quota", user, "1000")

    def test_srs_forwarding_and_bounce_back(self):
        # An alias forwards outside: the copy's sender is SRS at our domain.
        self.out.cli("alias", "add", "fwd@example.test", "bob@remote.test")
        before = self.mx1.mailbox_count("bob@remote.test")
        self.send(["fwd@example.test"], "forwarded", sender="outsider@other.test")
        self.arrived(self.mx1, "bob@remote.test", before + 1)
        msgs = self.pop_messages(self.mx1, "bob@remote.test", "pw-bob@remote.test")
        fwd = [m for m in msgs if m["Subject"] == "forwarded"][0]
        rp = fwd["Return-Path"]
        self.assertRegex(rp, r"^<SRS0=[^=]{4}=[A-Z2-7]{2}=other\.test=outsider@example\.test>$")
        srs = rp[1:-1]
        # Its bounce comes back from anyone (127.0.0.9 is no relay client)
        # and goes on to the original sender.
        with prtest.smtplib.SMTP(HOST, self.out.smtp_port, timeout=30,
                                 source_address=("127.0.0.9", 0)) as s:
            s.ehlo("mx.elsewhere.test")
            s.mail("<>")
            self.assertEqual(s.rcpt(srs)[0], 250)
            forged = srs[:5] + ("a" if srs[5] != "a" else "b") + srs[6:]
            code, text = s.rcpt(forged)
            self.assertEqual(code, 550)
            self.assertIn(b"SRS", text)
            self.assertEqual(s.rcpt("SRS0=junk@example.test")[0], 550)
            s.data(b"Subject: bounce of forwarded\r\n\r\nreturned\r\n")
        self.arrived(self.mx2, "outsider@other.test", 1)
        # our own users' mail keeps its sender
        self.send(["bob@remote.test"], "own sender")
        self.arrived(self.mx1, "bob@remote.test", before + 2)
        msgs = self.pop_messages(self.mx1, "bob@remote.test", "pw-bob@remote.test")
        own = [m for m in msgs if m["Subject"] == "own sender"][0]
        self.assertEqual(own["Return-Path"], "<%s>" % ALICE)

    def test_mx_pointing_at_us(self):
        # We are the best MX of loop.test: delivering to a worse one would
        # send it back; RFC 5321 5.1 says a loop, not mx2.
        self.send(["x@loop.test"], "loop")
        _, text = self.dsn_for("x@loop.test")
        self.assertIn("Status: 5.4.6", text)
        self.assertIn("loops back to myself", text)
        # We are a worse MX of backup.test: the better one takes it.
        self.send(["bea@backup.test"], "backup")
        self.arrived(self.mx2, "bea@backup.test", 1)

    def test_delay_warning_once(self):
        srv = self.server("delay", "example.test", users=[(ALICE, ALICE_PW)],
                          extra=self.outbound(**{"outbound.delay_warning_time": "2s"}))
        self.mx1.add_user("gus@remote.test", "pw-gus")
        self.over_quota("gus@remote.test")
        self.send(["gus@remote.test"], "slow one", srv=srv)
        m, text = self.dsn_for("gus@remote.test", srv=srv)
        self.assertIn("Action: delayed", text)
        self.assertIn("Status: 4.2.2", text)
        self.assertIn("Will-Retry-Until:", text)
        self.assertIn("Delayed Mail", m["Subject"])
        # headers only for a delay, never the whole message again
        self.assertEqual([p for p in m.walk() if p.get_content_type() == "message/rfc822"], [])
        self.mx1.cli("user", "quota", "gus@remote.test", "0")
        self.arrived(self.mx1, "gus@remote.test", 2)
        wait_for("an empty queue", lambda: queue_rows(srv) == 0)
        self.assertEqual(len(self.dsns(srv)), 1)  # one warning, and no more

    def test_one_connection_per_destination_reused(self):
        # max_connections_per_destination = 1: twenty messages for one
        # domain go one after the other, over a connection kept open.
        srv = self.server("limits", "example.test", extra=self.outbound(**{
            "outbound.max_connections_per_destination": "1"}))
        before_conn = self.mx2.log_text().count("connect from [127.0.0.1]")
        before = self.mx2.mailbox_count("carol@other.test")
        with prtest.smtplib.SMTP(HOST, srv.smtp_port, timeout=60) as s:
            for i in range(20):
                s.sendmail(ALICE, ["carol@other.test"], b"Subject: burst %d\r\n\r\nx\r\n" % i)
        self.arrived(self.mx2, "carol@other.test", before + 20)
        sessions = self.mx2.log_text().count("connect from [127.0.0.1]") - before_conn
        self.assertIn(sessions, (1, 2))  # 2 only if the burst paused over a second
        self.assertGreaterEqual(srv.log_text().count("smtp client > RSET"), 18)

    def test_slow_destination_does_not_hold_up_others(self):
        # slow.test's MX takes connections and never says a word: each
        # attempt there ties a connection up for command_timeout. A backlog
        # of 60 messages for it must not keep mail for others waiting.
        silent = socket.socket()
        silent.bind(("127.0.0.7", self.port))
        silent.listen(256)
        try:
            srv = self.server("fair", "example.test", extra=self.outbound(**{
                "outbound.max_connections": "2",
                "outbound.max_connections_per_destination": "1",
                "outbound.command_timeout": "60s"}))
            with prtest.smtplib.SMTP(HOST, srv.smtp_port, timeout=60) as s:
                for i in range(60):
                    s.sendmail(ALICE, ["x%d@slow.test" % i], b"Subject: slow\r\n\r\nx\r\n")
            wait_for("the first slow attempt", lambda: "slow.test" in srv.log_text())
            before = self.mx1.mailbox_count("bob@remote.test")
            start = time.time()
            self.send(["bob@remote.test"], "not held up", srv=srv)
            # well before the first silent session times out (60 s)
            self.arrived(self.mx1, "bob@remote.test", before + 1, timeout=30)
            self.assertLess(time.time() - start, 30)
        finally:
            silent.close()

    def test_dns_servfail_defers(self):
        srv = self.server("servfail", "example.test", extra=self.outbound())
        self.send(["x@servfail.test"], "servfail", srv=srv)
        wait_for("two deferrals", lambda: srv.log_text().count("<x@servfail.test> deferred") >= 2)
        self.assertIn("451 4.4.3 DNS lookup for servfail.test failed", srv.log_text())
        self.assertNotIn("<x@servfail.test> failed", srv.log_text())
        self.assertEqual(queue_rows(srv), 1)

    def test_4xx_then_success_on_retry(self):
        self.over_quota("erin@remote.test")
        self.send(["erin@remote.test"], "retry me")
        wait_for("a deferral", lambda: "<erin@remote.test> deferred" in self.out.log_text())
        self.assertIn("452 4.2.2", self.out.log_text())
        self.assertEqual(self.mx1.mailbox_count("erin@remote.test"), 1)  # the filler
        self.mx1.cli("user", "quota", "erin@remote.test", "0")
        self.arrived(self.mx1, "erin@remote.test", 2)
        wait_for("an empty queue", lambda: queue_rows(self.out) == 0)

    def test_expiry_and_undeliverable_bounce(self):
        # A server that gives up after 3 s; frank stays over quota.
        srv = self.server("expire", "example.test",
                          extra=self.outbound(**{"outbound.max_queue_lifetime": "3s"}))
        srv.add_user(ALICE, ALICE_PW)
        self.over_quota("frank@remote.test")
        self.send(["frank@remote.test"], "expire", srv=srv)
        _, text = self.dsn_for("frank@remote.test", srv=srv)
        self.assertIn("Action: failed", text)
        self.assertIn("Status: 5.2.2", text)  # the 452 4.2.2, made permanent
        self.assertIn("gave up", text)
        # A bounce that cannot be delivered (its sender's domain does not
        # exist) fails in turn and makes no bounce of its own.
        self.send(["nosuch@remote.test"], "no way back", sender="ghost@nx.test", srv=srv)
        wait_for("the bounce to fail",
                 lambda: "<ghost@nx.test> failed" in srv.log_text())
        wait_for("an empty queue", lambda: queue_rows(srv) == 0)
        time.sleep(1.5)
        self.assertEqual(queue_rows(srv), 0)
        self.assertEqual(srv.log_text().count("failed"), 3)  # frank, nosuch, the bounce

    def test_smarthost_starttls_auth(self):
        # The relay: a postroomd named localhost (its self-signed
        # certificate names that host), reached on its submission port.
        # The relay lets an authenticated user send only as herself: the
        # school's account there is alice's address.
        relay = self.server("relay", "relay.test, example.test",
                            extra={"server.hostname": "localhost"})
        relay.add_user(ALICE, "relay-Secret-9")
        relay.add_user("pat@relay.test", "pw-pat")
        pw = os.path.join(relay.dir, "relay.pw")
        with open(pw, "w") as f:
            f.write("relay-Secret-9\n")
        srv = self.server("viarelay", "example.test", extra=self.outbound(**{
            "outbound.smarthost": "localhost:%d" % relay.submission_port,
            "outbound.smarthost_tls": "starttls",
            "outbound.smarthost_auth_user": ALICE,
            "outbound.smarthost_password_file": pw,
            "outbound.smarthost_ca_file": os.path.join(relay.data_dir, "tls", "cert.pem")}))
        self.send(["pat@relay.test"], "via relay", srv=srv)
        self.arrived(relay, "pat@relay.test", 1)
        log = relay.log_text()
        self.assertIn("auth", log)  # accepted ... auth (an authenticated submission)
        self.assertIn("TLS", log)

    def test_sigkill_during_queue_runs(self):
        # 200 messages wait in the queue while their MX (mx3) is down; it
        # comes up, and postroomd is killed as soon as the first arrive.
        n = 200
        port = self.port
        srv = self.server("crash", "example.test", extra=self.outbound())
        pad = "x" * 76 + "\r\n"
        with prtest.smtplib.SMTP(HOST, srv.smtp_port, timeout=60) as s:
            for i in range(n):
                s.sendmail(ALICE, ["zoe@crash.test"],
                           ("Subject: crash %d\r\n\r\n%s" % (i, pad * 300)).encode())
        wait_for("the first deferrals", lambda: "<zoe@crash.test> deferred" in srv.log_text())
        mx3 = self.server("mx3", "crash.test", mx_listen=["127.0.0.5:%d" % port],
                          users=[("zoe@crash.test", "pw-zoe")])
        stored = lambda: stored_messages(mx3)  # noqa: E731
        wait_for("deliveries to start", lambda: stored() > 0, timeout=30)
        srv.kill9()
        at_kill = stored()
        self.assertLess(at_kill, n, "the kill came after the queue had emptied")
        srv.start()
        try:
            wait_for("every message", lambda: stored() >= n, timeout=60)
        except AssertionError:
            print("at kill %d, now %d" % (at_kill, stored()))
            print("\n".join(line for line in srv.log_text().splitlines()
                            if "queue" in line)[-5000:])
            raise
        wait_for("an empty queue", lambda: queue_rows(srv) == 0)
        msgs = self.pop_messages(mx3, "zoe@crash.test", "pw-zoe")
        subjects = [m["Subject"] for m in msgs]
        self.assertEqual(set(subjects), {"crash %d" % i for i in range(n)})
        # duplicates only from the crash window (a 250 not yet recorded):
        # at most one per connection under way (max_connections_per_destination 4)
        self.assertLessEqual(len(subjects) - n, 4)

if __name__ == "__main__":
    unittest.main(verbosity=2)
