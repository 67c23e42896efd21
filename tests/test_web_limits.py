"""ctispy --web's bounds on its connections: beyond MAX_CONNECTIONS at once (event streams included) a new web
connection is closed at once, and the relay goes on relaying."""

import socket
import unittest
from unittest import mock

from ctiproxy.relay import Log
from ctiproxy.web import server as web_server
from ctiproxy.web.server import MAX_CONNECTIONS, WebServer
from ctiproxy.web.store import WebStore
from tests.harness import TIMEOUT, WebSpyProcess, recv_exactly


class ConnectionCapTest(unittest.TestCase):

    def test_beyond_the_cap_a_connection_is_closed_and_the_relay_relays(self):
        with WebSpyProcess('--loop') as spy:
            streams = []
            try:
                for _ in range(MAX_CONNECTIONS):        # each answered: each holds its place
                    streams.append(spy.web_events())
                    self.assertEqual(streams[-1].status, 200)
                extra = socket.create_connection(('127.0.0.1', spy.web_port), timeout=TIMEOUT)
                with extra:
                    extra.sendall(('GET /api/info?token=%s HTTP/1.1\r\nHost: %s\r\n\r\n'
                                   % (spy.token, spy.host)).encode())
                    try:
                        answer = extra.recv(1024)
                    except ConnectionResetError:
                        answer = b''
                    self.assertEqual(answer, b'', 'a connection beyond the cap was answered')
                client, server = spy.connect()
                with client, server:
                    client.sendall(b'{"class": "keepalive"}\n')
                    self.assertEqual(recv_exactly(server, 23), b'{"class": "keepalive"}\n')
                    server.sendall(b'{"class": "keepalive"}\n')
                    self.assertEqual(recv_exactly(client, 23), b'{"class": "keepalive"}\n')
            finally:
                for stream in streams:
                    stream.close()
            code, _, err = spy.stop()
            self.assertEqual(code, 0, err)


class HeadTimeoutTest(unittest.TestCase):
    """A connection that sends no request (or no next request) is closed after HEAD_TIMEOUT, not held for minutes:
    here in the process, with HEAD_TIMEOUT made short."""

    def test_a_silent_connection_is_closed(self):
        with mock.patch.object(web_server, 'HEAD_TIMEOUT', 0.3), mock.patch.object(web_server._Handler, 'timeout', 0.3):
            view = WebServer(WebStore(), ('127.0.0.1', 0), Log('ctispy', False))
            view.start()
            self.addCleanup(view.stop)
            with socket.create_connection(('127.0.0.1', view.port), timeout=TIMEOUT) as silent:
                self.assertEqual(silent.recv(1024), b'')
            with socket.create_connection(('127.0.0.1', view.port), timeout=TIMEOUT) as kept:
                kept.sendall(('GET /api/info?token=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n'
                              % (view.token, view.port)).encode())
                answer = b''
                while True:                 # the answer, then the connection closed: no second head came
                    data = kept.recv(65536)
                    if not data:
                        break
                    answer += data
                self.assertTrue(answer.startswith(b'HTTP/1.1 200'), answer[:100])


if __name__ == '__main__':
    unittest.main()
