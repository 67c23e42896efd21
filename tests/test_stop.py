"""Stopping with sessions open: nothing a session relayed goes missing from the output without the tool saying
so.  (test_faults.SignalTest stops the real tools; these pin the parts down in this process, where a session can
be held in the middle of its end.)"""

import io
import json
import signal
import socket
import threading
import unittest

from ctiproxy.analysis import Analyzer
from ctiproxy.events import SessionInfo
from ctiproxy.filters import CLIENT, SERVER
from ctiproxy.outputs import SpyOutput
from ctiproxy.relay import ListenAddress, Log, RelayServer, Upstream
from tests.harness import TIMEOUT, Tool, parse_spy_output, recv_exactly, recv_until_eof


class UnfinishedSessionTest(unittest.TestCase):
    """The tool ends before a session could report its end: what each side left after its last newline is
    still shown, as it is when the session ends."""

    def test_cut_lines_shown_at_the_end(self):
        out = io.BytesIO()
        analyzer = Analyzer(SpyOutput(out))
        session = SessionInfo(1, 1700000000.0)
        analyzer.start()
        analyzer.session_opened(session)
        analyzer.received(session, CLIENT, 1700000001.0, b'{"class": "login_id"}\n{"class": "cut c')
        analyzer.received(session, SERVER, 1700000001.5, b'{"class": "cut s')
        self.assertTrue(analyzer.finish(TIMEOUT))
        shown = [(direction, body) for _, direction, body in parse_spy_output(out.getvalue().decode('utf-8'))]
        self.assertEqual(shown, [('Client > Server', ['{"class": "login_id"}']),
                                 ('Client > Server', ['{"class": "cut c']),
                                 ('Server > Client', ['{"class": "cut s'])])


class HeldObserver(Analyzer):
    """An analysis whose direction_ended() waits until `release` is set: a session slow to end."""

    def __init__(self):
        super().__init__(SpyOutput(io.BytesIO()))
        self.relaying = threading.Event()
        self.release = threading.Event()

    def received(self, session, direction, when, data):
        super().received(session, direction, when, data)
        self.relaying.set()

    def direction_ended(self, session, direction):
        self.release.wait(TIMEOUT)
        super().direction_ended(session, direction)


class StopTest(unittest.TestCase):
    """abort_sessions() ends the relaying sessions and lets no other start; wait_relaying_sessions() tells
    whether they all ended."""

    def setUp(self):
        self.upstream = socket.socket()
        self.upstream.bind(('127.0.0.1', 0))
        self.upstream.listen(8)
        self.addCleanup(self.upstream.close)
        self.observer = HeldObserver()
        self.server = RelayServer(ListenAddress('127.0.0.1', 0), Upstream('127.0.0.1', self.upstream.getsockname()[1]),
                                  self.observer, Log('test'))
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.observer.release.set)

    def serve_one(self):
        """A client, accepted and relaying on its session's thread; return (client, server side)."""
        client = socket.create_connection(('127.0.0.1', self.server.port), timeout=TIMEOUT)
        self.addCleanup(client.close)
        self.server.handle_request()
        self.upstream.settimeout(TIMEOUT)
        server_side, _ = self.upstream.accept()
        self.addCleanup(server_side.close)
        return client, server_side

    def test_a_session_slow_to_end_is_reported(self):
        client, server_side = self.serve_one()
        client.sendall(b'{"class": "cut')
        self.assertTrue(self.observer.relaying.wait(TIMEOUT))
        self.server.abort_sessions()
        self.assertFalse(self.server.wait_relaying_sessions(0.05), 'a session held in its end counted as ended')
        self.observer.release.set()
        self.assertTrue(self.server.wait_relaying_sessions(TIMEOUT))
        self.assertEqual(recv_until_eof(client), b'')

    def test_no_session_starts_once_stopping(self):
        self.observer.release.set()
        self.server.abort_sessions()
        client, server_side = self.serve_one()
        self.assertEqual(recv_until_eof(client), b'')
        self.assertEqual(recv_until_eof(server_side), b'')
        self.assertTrue(self.server.wait_sessions(TIMEOUT))
        self.assertFalse(self.observer.relaying.is_set())
        self.assertIs(self.server.session_started(object()), False)


class ClosedByTheToolTest(unittest.TestCase):
    """A session open at a stop signal was closed by the tool: its end record names no side (before: the side
    whose end the tool's own abort happened to show first, at random)."""

    def test_end_record_of_a_stopped_session(self):
        for _ in range(3):
            with Tool('ctispy', '--loop', '--json-lines') as tool:
                client, server = tool.connect()
                client.sendall(b'{"class": "a", "commandid": 1}\n')
                self.assertEqual(recv_exactly(server, 31), b'{"class": "a", "commandid": 1}\n')
                status, out, err = tool.stop(signal.SIGINT)
                client.close()
                server.close()
            self.assertEqual(status, 0, err)
            ends = [record for record in map(json.loads, out.decode('utf-8').splitlines())
                    if record.get('event') == 'end']
            self.assertEqual([(end['closed_by'], end['error']) for end in ends], [(None, 'the tool stopped')])


if __name__ == '__main__':
    unittest.main()
