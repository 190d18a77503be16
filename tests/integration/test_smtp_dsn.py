"""The SMTP server's side of issue 5 with real parts on loopback only:
DSN (RFC 3461) and ETRN (RFC 1985) advertised and honoured, mail loops
refused (RFC 5321 6.3), and the per-user daily limit of outside recipients.
A dnsmasq (tests/integration/dnstest.py) gives MX records for test domains
whose MX hosts are other postroomd instances on 127.0.0.2 and 127.0.0.3.

Cases: NOTIFY=SUCCESS,FAILURE with ORCPT and ENVID on mail relayed to a
remote postroomd that refuses one recipient (the failure report in the
sender's mailbox carries Original-Envelope-Id and Original-Recipient, and
the remote's own "delivered" report for the other comes back to her);
NOTIFY=NEVER gives no report; a local NOTIFY=SUCCESS gives a "delivered"
report at once; bad DSN parameters get 501; ETRN from the relay network
makes deferred mail go at once (the retry schedule is an hour, so only ETRN
explains the delivery), is refused (459) outside it and says 251 when
nothing waits; 100 Received: fields get 554 5.4.6 and nothing is stored;
max_recipients_per_day = 3 refuses the fourth outside recipient with 450
4.7.1 and logs a warning."""
import os
import smtplib
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


class DsnTest(OutboundCase):

    @classmethod
    def setUpClass(cls):
        cls.port = free_port_on("127.0.0.2", "127.0.0.3", "127.0.0.4")
        cls.dns = Dnsmasq(
            "dsn",
            mx={"remote.test": [(10, "mx1.remote.test")],
                "later.test": [(10, "mx2.later.test")],
                "example.test": [(10, "mx.example.test")]},
            hosts={"mx1.remote.test": ["127.0.0.2"], "mx2.later.test": ["127.0.0.3"],
                   "mx.example.test": ["127.0.0.4"]})
        cls.dns.start()
        cls.servers = []
        try:
            # The remote MX: it refuses unknown users and sends its own
            # reports (to example.test, whose MX is cls.out on 127.0.0.4).
            cls.mx1 = cls.server("mx1", "remote.test", extra=cls.outbound(),
                                 mx_listen=["127.0.0.2:%d" % cls.port])
            cls.mx1.add_user("bob@remote.test", "pw-bob")
            cls.out = cls.server("out", "example.test", extra=cls.outbound(),
                                 mx_listen=["127.0.0.4:%d" % cls.port])
            cls.out.add_user(ALICE, ALICE_PW)
            cls.out.add_user("carl@example.test", "pw-carl")
        except Exception:
            cls.tearDownClass()
            raise

    def message(self, subject, rcpts, extra_headers=""):
        return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\n%s\r\n"
                "hello %s\r\n" % (ALICE, ", ".join(rcpts), subject, subject.replace(" ", "."),
                                  extra_headers, subject)).encode()

    def send(self, srv, rcpts, subject, mail_opts=(), rcpt_opts=None, sender=ALICE):
        """One transaction on srv's MX port from the relay network; rcpts
        maps address -> RCPT parameters. Returns the RCPT replies."""
        replies = {}
        with smtplib.SMTP(HOST, srv.smtp_port, timeout=60) as s:
            s.ehlo("client.example.test")
            code, text = s.mail(sender, list(mail_opts))
            self.assertEqual(code, 250, text)
            for a in rcpts:
                replies[a] = s.rcpt(a, list((rcpt_opts or {}).get(a, ())))
            code, text = s.data(self.message(subject, list(rcpts)))
            self.assertEqual(code, 250, text)
        return replies

    def reports(self, srv=None):
        """(message, delivery-status text) of every report in alice's mailbox."""
        out = []
        for m in self.pop_messages(srv or self.out, ALICE, ALICE_PW):
            if m.get_content_type() != "multipart/report":
                continue
            for part in m.walk():
                if part.get_content_type() == "message/delivery-status":
                    out.append((m, "".join(str(p) for p in part.get_payload())))
        return out

    def report_for(self, address, action, srv=None, timeout=30):
        def find():
            for m, text in self.reports(srv):
                if (("Final-Recipient: rfc822; " + address) in text
                        and ("Action: " + action) in text):
                    return m, text
            return None
        return wait_for("a %s report for %s" % (action, address), find, timeout)

    # ---- tests

    def test_ehlo_and_parameter_checks(self):
        with smtplib.SMTP(HOST, self.out.smtp_port, timeout=30) as s:
            code, text = s.ehlo("client.example.test")
            self.assertEqual(code, 250)
            self.assertTrue(s.has_extn("dsn"))
            self.assertTrue(s.has_extn("etrn"))
            self.assertEqual(s.docmd("MAIL FROM:<%s> RET=SOME" % ALICE)[0], 501)
            self.assertEqual(s.docmd("MAIL FROM:<%s> RET=HDRS ENVID=%s" % (ALICE, "x" * 101))[0],
                             501)
            self.assertEqual(s.docmd("MAIL FROM:<%s> RET=HDRS ENVID=ok+2B1" % ALICE)[0], 250)
            code, text = s.docmd("RCPT TO:<carl@example.test> NOTIFY=NEVER,SUCCESS")
            self.assertEqual(code, 501)
            self.assertTrue(text.startswith(b"5.5.4"), text)
            self.assertEqual(s.docmd("RCPT TO:<carl@example.test> NOTIFY=DELAY NOTIFY=DELAY")[0],
                             501)
            self.assertEqual(s.docmd("RCPT TO:<carl@example.test> ORCPT=carl@example.test")[0],
                             501)
            self.assertEqual(s.docmd("RCPT TO:<carl@example.test> ORCPT=rfc822;" + "x" * 500)[0],
                             501)
            self.assertEqual(s.docmd("RCPT TO:<carl@example.test> NOTIFY=FAILURE,DELAY "
                                     "ORCPT=rfc822;carl+40example.test")[0], 250)
            s.rset()

    def test_relayed_failure_and_remote_success(self):
        r = self.send(self.out, ["nosuch@remote.test", "bob@remote.test"], "relayed dsn",
                      mail_opts=["RET=HDRS", "ENVID=env-42+2Bx"],
                      rcpt_opts={"nosuch@remote.test": ["NOTIFY=SUCCESS,FAILURE",
                                                        "ORCPT=rfc822;NoSuch+40remote.test"],
                                 "bob@remote.test": ["NOTIFY=SUCCESS",
                                                     "ORCPT=rfc822;Bob+40remote.test"]})
        self.assertEqual(r["nosuch@remote.test"][0], 250)
        m, text = self.report_for("nosuch@remote.test", "failed")
        self.assertEqual(m["Return-Path"], "<>")
        self.assertIn("Original-Envelope-Id: env-42+x", text)
        self.assertIn("Original-Recipient: rfc822;NoSuch@remote.test", text)
        self.assertIn("Status: 5.1.1", text)
        self.assertNotIn("bob@remote.test", text)
        # RET=HDRS: the headers only
        self.assertFalse([p for p in m.walk() if p.get_content_type() == "message/rfc822"])
        # mx1 took NOTIFY=SUCCESS and ORCPT along and reported the delivery
        # itself, back through the MX of example.test (cls.out)
        m, text = self.report_for("bob@remote.test", "delivered")
        self.assertIn("Original-Recipient: rfc822;Bob@remote.test", text)
        self.assertIn("Original-Envelope-Id: env-42+x", text)

    def test_notify_never(self):
        self.send(self.out, ["ghost@remote.test"], "never",
                  rcpt_opts={"ghost@remote.test": ["NOTIFY=NEVER"]})
        wait_for("the failure", lambda: "<ghost@remote.test> failed" in self.out.log_text())
        time.sleep(1.5)  # a report would be made in the same transaction
        self.assertFalse([t for _, t in self.reports() if "ghost@remote.test" in t])

    def test_local_success(self):
        before = self.out.mailbox_count("carl@example.test")
        self.send(self.out, ["carl@example.test"], "local success", mail_opts=["ENVID=L1"],
                  rcpt_opts={"carl@example.test": ["NOTIFY=SUCCESS",
                                                   "ORCPT=rfc822;Carl+40example.test"]})
        self.assertEqual(self.out.mailbox_count("carl@example.test"), before + 1)
        # made before the 250: already there
        found = [(m, t) for m, t in self.reports()
                 if "Final-Recipient: rfc822; carl@example.test" in t]
        self.assertEqual(len(found), 1)
        m, text = found[0]
        self.assertIn("Action: delivered", text)
        self.assertIn("Status: 2.0.0", text)
        self.assertIn("Original-Envelope-Id: L1", text)
        self.assertIn("Original-Recipient: rfc822;Carl@example.test", text)
        self.assertEqual(m["Auto-Submitted"], "auto-replied")

    def test_etrn(self):
        # An hour between retries: only ETRN can make the mail go soon.
        slow = self.server("slow", "example.test",
                           extra=self.outbound(**{"outbound.retry_schedule": "1h"}))
        with smtplib.SMTP(HOST, slow.smtp_port, timeout=60) as s:
            s.ehlo("client.example.test")
            s.sendmail(ALICE, ["dora@later.test"], self.message("etrn", ["dora@later.test"]))
        wait_for("a deferral", lambda: "<dora@later.test> deferred" in slow.log_text())
        mx2 = self.server("mx2", "later.test", mx_listen=["127.0.0.3:%d" % self.port])
        mx2.add_user("dora@later.test", "pw-dora")
        time.sleep(2)
        self.assertEqual(mx2.mailbox_count("dora@later.test"), 0)
        # not from outside the relay network
        with smtplib.SMTP(HOST, slow.smtp_port, timeout=30,
                          source_address=("127.0.0.9", 0)) as s:
            s.ehlo("client.example.test")
            code, text = s.docmd("ETRN later.test")
            self.assertEqual(code, 459, text)
        with smtplib.SMTP(HOST, slow.smtp_port, timeout=30) as s:
            s.ehlo("client.example.test")
            code, text = s.docmd("ETRN nothing.test")
            self.assertEqual(code, 251, text)
            code, text = s.docmd("ETRN #later")
            self.assertEqual(code, 458, text)
            code, text = s.docmd("ETRN @Later.Test")
            self.assertEqual(code, 250, text)
            self.assertIn(b"later.test", text)
        wait_for("the delivery after ETRN", lambda: mx2.mailbox_count("dora@later.test") == 1,
                 timeout=20)
        self.assertIn("ETRN later.test", slow.log_text())

    def test_mail_loop(self):
        before = self.out.mailbox_count("carl@example.test")
        hops = "".join("Received: from h%d.test by h%d.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                       % (i, i + 1) for i in range(100))
        with smtplib.SMTP(HOST, self.out.smtp_port, timeout=30) as s:
            s.ehlo("client.example.test")
            with self.assertRaises(smtplib.SMTPDataError) as cm:
                s.sendmail("x@elsewhere.test", ["carl@example.test"],
                           self.message("loop", ["carl@example.test"], hops))
            self.assertEqual(cm.exception.smtp_code, 554)
            self.assertTrue(cm.exception.smtp_error.startswith(b"5.4.6"), cm.exception)
            # 99 is fine
            s.sendmail("x@elsewhere.test", ["carl@example.test"],
                       self.message("no loop", ["carl@example.test"],
                                    "".join(hops.splitlines(True)[1:])))
        self.assertEqual(self.out.mailbox_count("carl@example.test"), before + 1)

    def test_daily_limit(self):
        lim = self.server("limit", "example.test",
                          extra={"outbound.max_recipients_per_day": "3",
                                 "smtp.allow_plaintext_auth": "yes"})
        lim.add_user(ALICE, ALICE_PW)
        lim.add_user("carl@example.test", "pw-carl")

        def session(rcpts):
            with smtplib.SMTP(HOST, lim.submission_port, timeout=30) as s:
                s.ehlo("client.example.test")
                s.login(ALICE, ALICE_PW)
                self.assertEqual(s.mail(ALICE)[0], 250)
                codes = [s.rcpt(a)[0] for a in rcpts]
                if 250 in codes:
                    self.assertEqual(s.data(self.message("limit", rcpts))[0], 250)
                return codes

        self.assertEqual(session(["r1@far.test", "r2@far.test"]), [250, 250])
        self.assertEqual(session(["r3@far.test", "r4@far.test", "carl@example.test"]),
                         [250, 450, 250])
        with smtplib.SMTP(HOST, lim.submission_port, timeout=30) as s:
            s.ehlo("client.example.test")
            s.login(ALICE, ALICE_PW)
            s.mail(ALICE)
            code, text = s.rcpt("r5@far.test")
            self.assertEqual(code, 450)
            self.assertTrue(text.startswith(b"4.7.1"), text)
        log = lim.log_text()
        self.assertEqual(log.count("reached [outbound] max_recipients_per_day (3)"), 1)


if __name__ == "__main__":
    prtest.main()
