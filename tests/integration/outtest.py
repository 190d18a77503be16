"""Shared base for the outbound tests (test_outbound.py, test_smtp_dsn.py):
postroomd instances that deliver to each other on loopback addresses, with
the DNS answers of a dnsmasq the subclass starts in setUpClass (cls.dns,
cls.port for every MX's port, cls.servers for the instances to stop)."""
import email
import email.policy
import os
import poplib
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prtest import HOST, Server  # noqa: E402


class OutboundCase(unittest.TestCase):
    dns = None
    port = None
    servers = []

    @classmethod
    def outbound(cls, **over):
        """[outbound] settings for a server of these tests: the test DNS, the
        MX port, fast retries; relaying for 127.0.0.1."""
        extra = {"smtp.relay_networks": "127.0.0.1/32", "pop3.allow_plaintext_auth": "yes",
                 "outbound.dns_servers": cls.dns.server, "outbound.port": str(cls.port),
                 "outbound.retry_schedule": "1s", "outbound.connect_timeout": "3s",
                 "outbound.command_timeout": "10s"}
        extra.update(over)
        return extra

    @classmethod
    def server(cls, name, domains, extra=None, mx_listen=(), users=()):
        """A started postroomd; users (address, password) exist before it
        listens, so no mail finds it without them."""
        extra = dict(extra or {})
        extra.setdefault("pop3.allow_plaintext_auth", "yes")
        srv = Server(name, extra=extra, domains=domains, mx_listen=mx_listen)
        cls.servers.append(srv)
        for user, password in users:
            srv.add_user(user, password)
        srv.start()
        return srv

    @classmethod
    def tearDownClass(cls):
        bad = []
        for srv in cls.servers:
            rc = srv.stop()
            if rc != 0:
                bad.append((srv.dir, rc))
                print(srv.log_text()[-4000:])
            srv.cleanup()
        if cls.dns:
            cls.dns.cleanup()
        assert not bad, "postroomd exited badly: %r" % bad

    def pop_messages(self, srv, user, password):
        """Every message in user's INBOX, parsed."""
        p = poplib.POP3(HOST, srv.pop3_port, timeout=30)
        try:
            p.user(user)
            p.pass_(password)
            n = len(p.list()[1])
            return [email.message_from_bytes(b"\r\n".join(p.retr(i + 1)[1]),
                                             policy=email.policy.compat32)
                    for i in range(n)]
        finally:
            p.quit()
