"""A client on the tool's machine may come from the local port of one of the tool's own connections to the server
(Linux gives connections to different places the same local port): it is another connection, served, not a loop.

The end-to-end test runs in a network namespace of its own (unshare: a user and a network namespace, no privilege
needed where the system allows them), whose few ephemeral ports make the sharing certain; nothing outside changes."""

import errno
import fcntl
import json
import select
import shutil
import socket
import struct
import subprocess
import sys
import unittest

from ctiproxy.relay import OwnConnections
from tests.harness import ROOT, TIMEOUT, Tool, recv_exactly

EPHEMERAL_PORTS = (41000, 41015)        # the namespace's ip_local_port_range: few, so that connections share them
IN_NAMESPACE = '--in-namespace'


class OwnConnectionsTest(unittest.TestCase):
    """OwnConnections knows a connection by both its ends (real sockets on loopback)."""

    def setUp(self):
        self.listeners = []
        for _ in range(2):
            listener = socket.socket()
            listener.bind(('127.0.0.1', 0))
            listener.listen(4)
            self.addCleanup(listener.close)
            self.listeners.append(listener.getsockname())
        self.own = OwnConnections()
        self.sock = socket.socket()
        self.addCleanup(self.sock.close)
        self.own.add(self.sock)
        self.sock.connect(self.listeners[0])

    def test_the_connection_seen_from_its_other_end_is_own(self):
        self.assertTrue(self.own.owns(self.sock.getsockname(), self.listeners[0]))

    def test_a_client_from_the_same_port_to_elsewhere_is_another_connection(self):
        self.assertFalse(self.own.owns(self.sock.getsockname(), self.listeners[1]))

    def test_a_closed_connection_is_not_own(self):
        local = self.sock.getsockname()
        self.assertTrue(self.own.owns(local, self.listeners[0]))
        self.sock.close()
        self.assertFalse(self.own.owns(local, self.listeners[0]))

    def test_a_connection_not_yet_connected_is_known_once_connected(self):
        sock = socket.socket()
        self.addCleanup(sock.close)
        self.own.add(sock)
        self.assertFalse(self.own.owns(('127.0.0.1', 1), self.listeners[1]))    # not connected: nothing known yet
        sock.connect(self.listeners[1])
        self.assertTrue(self.own.owns(sock.getsockname(), self.listeners[1]))


class SharedPortTest(unittest.TestCase):
    """ctispy --loop in a namespace with 16 ephemeral ports: clients connect, each session's server connection held
    open, until a client comes from the local port of one of them; that client is relayed like the others."""

    def test_client_sharing_a_port_with_a_server_connection_is_relayed(self):
        if not sys.platform.startswith('linux') or shutil.which('unshare') is None:
            self.skipTest('needs Linux and unshare')
        done = subprocess.run(['unshare', '--user', '--map-root-user', '--net', sys.executable, '-m',
                               'tests.test_shared_ports', IN_NAMESPACE], cwd=ROOT, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=3 * TIMEOUT)
        said = done.stderr.decode('utf-8', 'replace').strip()
        if not done.stdout and said.startswith('unshare:'):
            self.skipTest('no user and network namespace here: %s' % said)
        self.assertTrue(done.stdout, said)
        result = json.loads(done.stdout.decode('utf-8'))
        if 'skip' in result:
            self.skipTest(result['skip'])
        self.assertIn(result['shared_port'], result['server_ports'])
        self.assertEqual(result['client_got'], '{"class": "welcome"}\n', result['stderr'])
        self.assertNotIn('came back', result['stderr'])


def loopback_up():
    """Bring the namespace's loopback interface up (SIOCGIFFLAGS, SIOCSIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack('16sh', b'lo', 0)
        flags = struct.unpack('16sh', fcntl.ioctl(sock, 0x8913, request))[1]
        fcntl.ioctl(sock, 0x8914, struct.pack('16sh', b'lo', flags | 0x1))


def relay_a_client_on_a_shared_port():
    """In the namespace: connect clients through ctispy --loop one at a time, holding each session's server
    connection, until a client's local port is one of theirs (the ports run out: it comes); relay a message each
    way for that client; return what happened."""
    try:
        loopback_up()
        with open('/proc/sys/net/ipv4/ip_local_port_range', 'w') as ports:
            ports.write('%d %d' % EPHEMERAL_PORTS)
    except OSError as error:
        return {'skip': 'cannot set up the namespace: %s' % error}
    with Tool('ctispy', '--loop') as tool:
        tool.listener.settimeout(TIMEOUT)
        held, server_ports = [], set()
        while True:
            try:
                client = tool.connect_client_only()
            except OSError as error:
                if error.errno != errno.EADDRNOTAVAIL:
                    raise
                return {'skip': 'the ports ran out: this system gives no two connections the same local port'}
            held.append(client)
            if client.getsockname()[1] in server_ports:
                break
            server, (_, port) = tool.listener.accept()
            held.append(server)
            server_ports.add(port)
        shared_port = client.getsockname()[1]
        client.sendall(b'{"class": "hello"}\n')
        got = b''
        # Refused, the client sees its end; relayed, the session connects to the server.
        if tool.listener in select.select([tool.listener, client], [], [], TIMEOUT)[0]:
            server, _ = tool.listener.accept()
            held.append(server)
            recv_exactly(server, len(b'{"class": "hello"}\n'))
            server.sendall(b'{"class": "welcome"}\n')
            got = recv_exactly(client, len(b'{"class": "welcome"}\n'))
        for sock in held:
            sock.close()
        status, _, err = tool.stop()
    return {'shared_port': shared_port, 'server_ports': sorted(server_ports),
            'client_got': got.decode('utf-8', 'replace'), 'stderr': err[len(tool.start_line):], 'status': status}


if __name__ == '__main__' and sys.argv[1:] == [IN_NAMESPACE]:
    sys.stdout.write(json.dumps(relay_a_client_on_a_shared_port()))
elif __name__ == '__main__':
    unittest.main()
