"""`postroom queue list|show|flush|retry|delete` (issue 5) beside a real
postroomd on the same store. The daemon relays for 127.0.0.1; its DNS is a
closed loopback port (prtest), so every attempt fails temporarily and the
mail stays queued; with retry_schedule = 1h the daemon tries again only when
the console says so. Cases: an empty queue, the first attempt's deferral in
the list, the header in show, retry of one message and flush of all (the
daemon's attempt count grows within seconds), delete without a bounce,
unknown and malformed IDs."""
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prtest  # noqa: E402
from prtest import Server  # noqa: E402

SENDER = "alice@example.test"
MSG_LINE = re.compile(r"^(\d+)  (\S+(?: \S+)?)  (\d+(?:\.\d)? (?:B|KiB|MiB))  <(.*)>")
RCPT_LINE = re.compile(r"^    (\S+)  (waiting|deferred|delivered|failed), (\d+) attempts?(.*)$")


def wait_for(what, cond, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def parse_list(text):
    """`queue list` output: {id: {"sender", "size", "rcpts": {addr: (state, attempts, rest)}}}."""
    msgs, cur = {}, None
    for line in text.splitlines():
        m = MSG_LINE.match(line)
        if m:
            cur = msgs[int(m.group(1))] = {"age": m.group(2), "size": m.group(3),
                                           "sender": m.group(4), "rcpts": {}}
            continue
        r = RCPT_LINE.match(line)
        if r:
            assert cur is not None, line
            cur["rcpts"][r.group(1)] = (r.group(2), int(r.group(3)), r.group(4))
    return msgs


class QueueCliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("queue-cli", extra={"smtp.relay_networks": "127.0.0.1/32",
                                             "outbound.retry_schedule": "1h"})
        cls.srv.add_user(SENDER, "alice-Secret-1")
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            print(cls.srv.log_text()[-4000:])
        cls.srv.cleanup()
        assert rc == 0, "postroomd exited %r on SIGTERM" % rc

    def queue(self, *args, check=True):
        return self.srv.cli("queue", *args, check=check)

    def listing(self):
        return parse_list(self.queue("list").stdout.decode())

    def send(self, rcpts, subject):
        body = ("From: Alice <%s>\r\nTo: %s\r\nSubject: %s\r\n"
                "Message-ID: <%s@example.test>\r\n\r\nhello\r\n"
                % (SENDER, ", ".join(rcpts), subject, subject.replace(" ", "."))).encode()
        self.srv.deliver(rcpts, body, sender=SENDER)

    def attempts(self, qid):
        """Attempts per recipient of one message, per `queue show`."""
        return {a: r[1] for a, r in parse_list(self.queue("show", str(qid)).stdout.decode())
                [qid]["rcpts"].items()}

    def wait_attempts(self, qid, n):
        wait_for("message %d tried %d times" % (qid, n),
                 lambda: all(v >= n for v in self.attempts(qid).values()), timeout=20)

    def test_queue_console(self):
        # Nothing queued yet.
        r = self.queue("list")
        self.assertEqual(r.stdout.decode().strip(), "queue is empty")
        self.assertIn("nothing to flush", self.queue("flush").stdout.decode())

        self.send(["bob@remote.test", "carol@other.test"], "school trip")
        self.send(["dave@remote.test"], "second one")

        # Each is tried at once, fails (DNS down) and waits an hour.
        def both_tried():
            msgs = self.listing()
            ok = len(msgs) == 2 and all(
                st == "deferred" and n >= 1 for m in msgs.values() for st, n, _ in
                m["rcpts"].values())
            return msgs if ok else None
        msgs = wait_for("both messages deferred", both_tried)
        first, second = sorted(msgs)
        m = msgs[first]
        self.assertEqual(m["sender"], SENDER)
        self.assertEqual(set(m["rcpts"]), {"bob@remote.test", "carol@other.test"})
        self.assertEqual(set(msgs[second]["rcpts"]), {"dave@remote.test"})
        state, n, rest = m["rcpts"]["bob@remote.test"]
        self.assertEqual(n, 1)
        self.assertRegex(rest, r"^, next try in (59m|1h), last reply: 4\d\d ")
        text = self.queue("list").stdout.decode()
        self.assertIn("2 messages in the queue, 3 recipients still to deliver", text)

        # Show: the block and the header as it will be sent.
        out = self.queue("show", str(first)).stdout.decode()
        self.assertIn("bob@remote.test  deferred, 1 attempt, next try in", out)
        self.assertRegex(out, r"(?m)^queued at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
        self.assertRegex(out, r"(?m)^Received: ")
        self.assertIn("\nSubject: school trip\n", out)
        self.assertIn("\nFrom: Alice <%s>\n" % SENDER, out)
        self.assertNotIn("hello", out)  # the body is not shown

        # Retry one message: the daemon tries it again within seconds;
        # the other one waits for its hour.
        r = self.queue("retry", str(first))
        self.assertIn("message %d due now" % first, r.stdout.decode())
        self.wait_attempts(first, 2)
        time.sleep(1.5)
        self.assertEqual(self.attempts(second), {"dave@remote.test": 1})
        self.assertRegex(parse_list(self.queue("list").stdout.decode())[first]["rcpts"]
                         ["bob@remote.test"][2], r"next try in (59m|1h)")

        # Flush: all of them.
        r = self.queue("flush")
        self.assertIn("3 recipients due now", r.stdout.decode())
        self.wait_attempts(second, 2)
        self.wait_attempts(first, 3)

        # Delete one: gone, and no bounce reaches the sender.
        r = self.queue("delete", str(first))
        self.assertIn("deleted from the queue", r.stdout.decode())
        msgs = self.listing()
        self.assertEqual(sorted(msgs), [second])
        self.assertNotRegex(self.queue("list").stdout.decode(), r"(?m)^%d  " % first)
        self.assertIn("1 message in the queue, 1 recipient still to deliver",
                      self.queue("list").stdout.decode())

        # A deleted or never-seen ID: exit 1 and a clear line.
        for args in (("show", str(first)), ("retry", str(first)), ("delete", str(first)),
                     ("show", "999999")):
            r = self.queue(*args, check=False)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("no message with ID %s in the queue" % args[1], r.stderr.decode())
            self.assertEqual(r.stdout, b"")
        # A malformed one, a missing one: command-line mistakes, exit 2.
        for args in (("show", "abc"), ("retry", "0"), ("delete", "12x")):
            r = self.queue(*args, check=False)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn("invalid queue ID '%s'" % args[1], r.stderr.decode())
        for args in (("show",), ("retry",), ("delete",), ("list", "1"), ("flush", "1"),
                     ("retry", "-1"), ("frobnicate",)):
            r = self.queue(*args, check=False)
            self.assertEqual(r.returncode, 2, args)

        # The last one deleted too: empty again, the daemon still fine.
        self.queue("delete", str(second))
        self.assertEqual(self.queue("list").stdout.decode().strip(), "queue is empty")
        self.assertEqual(self.srv.mailbox_count(SENDER), 0)

    def test_help_names_queue_commands(self):
        r = self.srv.cli("--help")
        text = r.stdout.decode()
        for cmd in ("queue list", "queue show ID", "queue flush", "queue retry ID",
                    "queue delete ID"):
            self.assertIn("  " + cmd + "\n", text)
        self.assertIn("WITHOUT a bounce", text)


if __name__ == "__main__":
    prtest.main()
