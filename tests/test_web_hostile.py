"""The web view against a hostile neighbour: another local user's web server, opened in the same browser as the
view, must not learn the token (browsers keep cookies of 127.0.0.1 apart by host, not by port); a client
without the token must not hold the web connections by trickling its request's head."""

import http.server
import os
import select
import socket
import tempfile
import threading
import unittest
from unittest import mock

from ctiproxy.relay import Log
from ctiproxy.web import server as web_server
from ctiproxy.web.server import WebServer
from ctiproxy.web.store import WebStore
from tests.chromium import Chromium, chromium_path
from tests.harness import TIMEOUT, WebSpyProcess
from tests.test_web import RECORDING


class _Neighbour(http.server.BaseHTTPRequestHandler):
    """A page that loads an image from its own server; every request's headers are kept."""

    def do_GET(self):
        self.server.seen.append(str(self.headers))
        body = b'<html><body data-ready="1"><img id="i" src="/pixel.png"></body></html>'
        self.send_response(200)
        self.send_header('Content-Type', 'text/html')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@unittest.skipUnless(chromium_path(), 'chromium is not installed')
class NeighbourServerTest(unittest.TestCase):

    def setUp(self):
        temp = tempfile.TemporaryDirectory(prefix='web-hostile-')
        self.addCleanup(temp.cleanup)
        recording = os.path.join(temp.name, 'r.jsonl')
        with open(recording, 'w', encoding='utf-8') as file:
            file.write(RECORDING + '\n')
        self.spy = WebSpyProcess(read=recording)
        self.addCleanup(self.spy.stop)
        self.spy.web_read_stderr_until('read to the end')
        self.neighbour = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Neighbour)
        self.neighbour.seen = []
        thread = threading.Thread(target=self.neighbour.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(self.neighbour.server_close)
        self.addCleanup(self.neighbour.shutdown)
        self.browser = Chromium(temp.name)
        self.addCleanup(self.browser.close)

    def test_another_port_of_the_same_host_never_sees_the_token(self):
        self.browser.open(self.spy.url + '#session=1')
        self.browser.wait_for("document.querySelector('#rows .row') !== null")
        self.browser.open('http://127.0.0.1:%d/' % self.neighbour.server_address[1])
        self.browser.wait_for("document.getElementById('i').complete")
        self.assertGreaterEqual(len(self.neighbour.seen), 2)            # the page, then its image
        for headers in self.neighbour.seen:
            self.assertNotIn(self.spy.token, headers)

    def test_the_download_link_carries_the_token_itself(self):
        self.browser.open(self.spy.url + '#session=1')
        self.browser.wait_for("!document.getElementById('download').hidden")
        href = self.browser.evaluate("document.getElementById('download').href")
        self.assertTrue(href.endswith('/api/sessions/1/download?token=' + self.spy.token), href)
        found = self.browser.evaluate("fetch(%r).then(function (r) { return r.status; })" % href)
        self.assertEqual(found, 200)


class TrickledHeadTest(unittest.TestCase):
    """A client that sends its request's head a byte at a time, each within the socket timeout, must still have
    sent it all within HEAD_TIMEOUT: else 64 such clients, no token needed, hold every web connection."""

    def test_a_trickled_head_is_cut_at_its_deadline(self):
        with mock.patch.object(web_server, 'HEAD_TIMEOUT', 0.5), mock.patch.object(web_server._Handler, 'timeout', 0.5):
            view = WebServer(WebStore(), ('127.0.0.1', 0), Log('ctispy', False))
            view.start()
            self.addCleanup(view.stop)
            head = ('GET /api/info?token=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: %s\r\n\r\n'
                    % (view.token, view.port, 'x' * 200)).encode()
            with socket.create_connection(('127.0.0.1', view.port), timeout=TIMEOUT) as slow:
                closed_at = None
                for sent in range(len(head)):       # a byte every 0.05 s: 13 s for the whole head
                    try:
                        slow.sendall(head[sent:sent + 1])
                    except OSError:
                        closed_at = sent
                        break
                    readable, _, _ = select.select([slow], [], [], 0.05)
                    if readable and slow.recv(1024) == b'':
                        closed_at = sent
                        break
                self.assertIsNotNone(closed_at, 'the whole head came, a byte at a time, and was read')


if __name__ == '__main__':
    unittest.main()
