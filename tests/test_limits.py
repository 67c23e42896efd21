"""Resource limits and loops: out of file descriptors the tool says so once, waits and recovers; a thread that
cannot start is one line per refused client; a tool pointed at itself is refused at start, and a server
connection that comes back to the tool ends the loop with one line."""

import io
import os
import re
import signal
import socket
import tempfile
import threading
import unittest

from ctiproxy.analysis import Analyzer
from ctiproxy.outputs import SpyOutput
from ctiproxy.relay import ListenAddress, Log, RelayServer, Upstream
from tests.harness import (TIMEOUT, Tool, closed_port, parse_spy_output, read_fd_until_all, recv_exactly,
                           recv_until_eof, run_tool, sigint_not_ignored, sigint_restored)

try:
    import resource
except ImportError:
    resource = None

setUpModule, tearDownModule = sigint_not_ignored, sigint_restored

FD_LIMIT = 64
CLIENTS = 80


class FileDescriptorLimitTest(unittest.TestCase):
    """ulimit -n 64 and 80 clients at once: one line, and every client is served as sessions end."""

    def test_says_it_once_and_serves_everyone(self):
        status, out, err = self.serve_all('ctispy', '--loop')
        self.assert_said_once('ctispy', status, err)
        shown = parse_spy_output(out.decode('utf-8'))
        self.assertEqual(len(shown), 2 * CLIENTS)

    def test_ctisave_waits_for_its_files_and_saves_everyone(self):
        """ctisave needs two files per session beyond its sockets: the sessions beyond the limit wait for
        them, and each session is saved in its own files."""
        with tempfile.TemporaryDirectory() as folder:
            client_path, server_path = os.path.join(folder, 'c'), os.path.join(folder, 's')
            status, out, err = self.serve_all('ctisave', '--loop', client_path, server_path)
            self.assert_said_once('ctisave', status, err)
            saved = {}
            for session in range(1, CLIENTS + 1):
                suffix = '.%d' % session if session > 1 else ''
                with open(client_path + suffix, 'rb') as client_file, open(server_path + suffix, 'rb') as server_file:
                    said = re.match(br'\{\n    "client": (\d+)\n\}\n\Z', client_file.read())
                    self.assertIsNotNone(said, session)
                    number = int(said.group(1))
                    self.assertEqual(server_file.read(), b'{\n    "server": %d\n}\n' % number)
                    saved[number] = session
            self.assertEqual(sorted(saved), list(range(CLIENTS)))
            self.assertEqual(sorted(os.listdir(folder)), sorted(
                ['c', 's'] + ['%s.%d' % (name, session) for name in 'cs' for session in range(2, CLIENTS + 1)]))

    def serve_all(self, *args):
        """Run the tool under the limit, connect CLIENTS clients at once, then serve each session to its end,
        one after another; return its exit status, stdout and stderr after the start line."""
        if not hasattr(resource, 'prlimit'):
            self.skipTest('no prlimit here')
        with Tool(args[0], *args[1:]) as tool:
            resource.prlimit(tool.process.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
            clients = {}
            for number in range(CLIENTS):
                client = tool.connect_client_only()       # the kernel's backlog takes them all
                client.sendall(b'{"client": %d}\n' % number)
                clients[number] = client
            said = read_fd_until_all(tool.process.stderr.fileno(), [b'until sessions end\n'])
            tool.listener.settimeout(TIMEOUT)
            while clients:                                 # serve each session to its end, one after another
                try:
                    server, _ = tool.listener.accept()
                except socket.timeout:                     # say what the tool said, not only that it waited
                    _, _, err = tool.stop(signal.SIGINT)
                    self.fail('no session reached the server for %d s (%d clients left); the tool said:\n%s'
                              % (TIMEOUT, len(clients), said.decode('utf-8', 'replace') + err[len(tool.start_line):]))
                line = b''
                while not line.endswith(b'\n'):
                    line += recv_exactly(server, 1)
                number = int(re.match(br'\{"client": (\d+)\}', line).group(1))
                server.sendall(b'{"server": %d}\n' % number)
                server.close()
                client = clients.pop(number)
                self.assertEqual(recv_until_eof(client), b'{"server": %d}\n' % number)
                client.close()
            status, out, err = tool.stop(signal.SIGINT)
        return status, out, said.decode('utf-8') + err[len(tool.start_line):]

    def assert_said_once(self, name, status, err):
        self.assertEqual(status, 0, err)
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertRegex(lines[0], r"^%s: cannot accept more clients: too many open files \(the tool's limit "
                                   r"is 64: ulimit -n\); new clients wait until sessions end$" % name)


class RecordedLog(Log):
    """The tool's log lines, kept."""

    def __init__(self):
        super().__init__('test')
        self.lines = []

    def say(self, text):
        self.lines.append(text)

    error = say


def relay_server(upstream_port=None, listen_port=0):
    """A RelayServer in this process on 127.0.0.1, showing into a buffer; return (server, log)."""
    log = RecordedLog()
    analyzer = Analyzer(SpyOutput(io.BytesIO()))
    upstream = Upstream('127.0.0.1', closed_port() if upstream_port is None else upstream_port)
    return RelayServer(ListenAddress('127.0.0.1', listen_port), upstream, analyzer, log), log


class ThreadLimitTest(unittest.TestCase):
    """A session's thread that cannot start (the limit of threads or memory): one line, the client closed,
    the tool goes on (thread stacks larger than the address space make the start fail for real)."""

    def test_one_line_per_refused_client(self):
        server, log = relay_server()
        try:
            for _ in range(2):
                client = socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT)
                previous = threading.stack_size(1 << 47)
                try:
                    server.handle_request()
                finally:
                    threading.stack_size(previous)
                self.assertEqual(recv_until_eof(client), b'')
                client.close()
            self.assertTrue(server.wait_sessions(timeout=0), 'a refused client is still counted as a session')
        finally:
            server.server_close()
        self.assertEqual(len(log.lines), 2, log.lines)
        for line in log.lines:
            self.assertRegex(line, r"^client 127\.0\.0\.1:\d+: cannot serve it: can't start new thread "
                                   r"\(the limit of threads or of memory is reached\)$")
        self.assertEqual(server.failures, 2)


class SelfRelayAtStartTest(unittest.TestCase):
    """The server's address is the tool's own listening address: one line, exit 1, before listening."""

    def test_refused(self):
        port = str(closed_port())
        cases = [('127.0.0.1', ()), ('localhost', ()), ('0.0.0.0', ()), ('127.0.0.2', ()),
                 ('127.0.0.1', ('--listen-addr', '127.0.0.1')), ('localhost', ('--listen-addr', '127.0.0.1')),
                 ('0.0.0.0', ('--listen-addr', '127.0.0.1')), ('::ffff:127.0.0.1', ('--listen-addr', '127.0.0.1'))]
        for host, listen in cases:
            with self.subTest(host=host, listen=listen):
                status, out, err = run_tool('ctispy', host, '--port', port, '--listen-port', port, '--loop', *listen)
                self.assertEqual(status, 1, err)
                self.assertEqual(out, b'')
                self.assertEqual(len(err.splitlines()), 1, err)
                shown = '[%s]' % host if ':' in host else host      # an IPv6 address is shown in brackets
                self.assertRegex(err, r'^ctispy: the server %s:%s is the tool itself, which listens on port %s of '
                                      % (re.escape(shown), port, port))

    def test_same_port_elsewhere_is_fine(self):
        """Listening on 127.0.0.1 only, the same port of 127.0.0.2 is not the tool."""
        port = closed_port()
        with Tool('ctispy', server=False, host='127.0.0.2', port=port) as tool:
            self.assertIn('listening on', tool.start_line)
            status, _, err = tool.stop(signal.SIGINT)
        self.assertEqual(status, 0, err)


class SelfRelayAtRunTest(unittest.TestCase):
    """A session's server connection comes back to the tool (what the start could not see): the tool refuses
    it with one line, and the loop ends: one session, not one per file descriptor."""

    def test_loop_ended_with_one_line(self):
        port = closed_port()
        server, log = relay_server(upstream_port=port, listen_port=port)   # no start check: that is the CLI's
        serving = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
        serving.start()
        try:
            client = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
            client.sendall(b'{"class": "hello"}\n')
            self.assertEqual(recv_until_eof(client), b'')          # the server side came back, refused
            client.close()
            self.assertTrue(server.wait_sessions(timeout=TIMEOUT))
        finally:
            server.shutdown()
            server.server_close()
            serving.join(TIMEOUT)
        self.assertEqual(len(log.lines), 1, log.lines)
        self.assertRegex(log.lines[0], r'^client 127\.0\.0\.1:\d+: the connection to server 127\.0\.0\.1:%d came back '
                                       r'to the tool itself \(it listens on port %d of 127\.0\.0\.1\): refused, to end '
                                       r'the loop$' % (port, port))
        self.assertEqual(server.new_session_number(), 2, 'more than one session was started')


if __name__ == '__main__':
    unittest.main()
