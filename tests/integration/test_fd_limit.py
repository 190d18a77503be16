#!/usr/bin/env python3
"""Out of file descriptors: postroomd runs with a hard limit it cannot
raise, more clients connect than it has descriptors for. Those it cannot
accept wait in the kernel's backlog; the server must neither spin on the
failing accept nor lose them: once others leave, they are served."""
import os
import resource
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prtest  # noqa: E402
from prtest import HOST, Server  # noqa: E402

LIMIT = 128    # descriptors postroomd may have (soft = hard)
CLIENTS = 200  # more than it can hold


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def greeted(sock, timeout):
    """True once the 220 greeting has arrived on sock."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(100)
    except socket.timeout:
        return False
    return data.startswith(b"220 ")


class DescriptorLimitTest(unittest.TestCase):
    def setUp(self):
        self.srv = Server("fdlimit", extra={"server.limit_exempt_networks": "127.0.0.0/8"})
        self.srv.start(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                             (LIMIT, LIMIT)))
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        self.assertEqual(self.srv.stop(), 0)
        self.srv.cleanup()

    def test_waiting_clients_are_served_once_descriptors_free_up(self):
        for _ in range(CLIENTS):
            self.clients.append(socket.create_connection((HOST, self.srv.smtp_port), timeout=10))
        served, waiting = [], []
        for c in self.clients:
            # Once one waits (after a second's grace), every later one is
            # known at once: what could be accepted has been.
            (served if greeted(c, 0.01 if waiting else (1 if served else 10))
             else waiting).append(c)
        self.assertGreater(len(served), 0)
        self.assertGreater(len(waiting), 0, "all %d served under a limit of %d descriptors"
                           % (len(served), LIMIT))
        self.assertIn("Too many open files", self.srv.log_text())

        # While they wait it must not spin on accept (a spinning loop burns a
        # whole core: about 2 s of CPU in these 2 s).
        before = cpu_seconds(self.srv.proc.pid)
        time.sleep(2)
        used = cpu_seconds(self.srv.proc.pid) - before
        self.assertLess(used, 1.0, "postroomd used %.2f s of CPU in 2 s while out of "
                        "descriptors" % used)

        # Free descriptors: every waiting client gets its greeting.
        for c in served:
            c.sendall(b"QUIT\r\n")
            c.close()
            self.clients.remove(c)
        for c in waiting:
            self.assertTrue(greeted(c, 30), "a waiting client was never served")
            c.sendall(b"EHLO client.example.net\r\n")
            c.settimeout(30)
            self.assertTrue(c.recv(1000).startswith(b"250"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
