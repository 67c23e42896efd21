"""The web view against a hostile neighbour: another local user's web server, opened in the same browser as the
view, must not learn the token (browsers keep cookies of 127.0.0.1 apart by host, not by port)."""

import http.server
import os
import tempfile
import threading
import unittest

from tests.chromium import Chromium, chromium_path
from tests.harness import WebSpyProcess
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


if __name__ == '__main__':
    unittest.main()
