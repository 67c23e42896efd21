"""The web view (issue 16) as a hostile user tries it: requests and recordings made to break it."""

import gc
import json
import os
import socket
import threading
import tracemalloc
import unittest

from ctiproxy.analysis import Analysis
from ctiproxy.events import SessionInfo
from ctiproxy.filters import MessageFilter
from ctiproxy.web.store import WebStore

from tests.chromium import BrowserError, Chromium, chromium_path
from tests.harness import TIMEOUT
from tests.test_web import WebTestCase

RECORDING = '\n'.join(json.dumps(record) for record in [
    {"time": "2026-11-27T13:01:02.000000+00:00", "session": 1, "event": "start", "client": "127.0.0.1:4000",
     "server": "xivo:5003"},
    {"time": "2026-11-27T13:01:02.100000+00:00", "session": 1, "direction": "client",
     "message": {"class": "getlist", "commandid": 1}},
    {"time": "2026-11-27T13:01:03.000000+00:00", "session": 1, "event": "end", "closed_by": "client", "error": None},
]) + '\n'

# two records some eight thousand years apart: a capture's or a recording's times are what the file says
CENTURIES = '\n'.join(json.dumps(record) for record in [
    {"time": "0002-01-02T00:00:00+00:00", "session": 1, "event": "start", "client": "a:1", "server": "b:2"},
    {"time": "0002-01-02T00:00:01+00:00", "session": 1, "direction": "client",
     "message": {"class": "getlist", "commandid": 5}},
    {"time": "9999-12-30T00:00:00+00:00", "session": 1, "direction": "server",
     "message": {"class": "getlist", "replyid": 5}},
    {"time": "9999-12-30T00:00:01+00:00", "session": 1, "event": "end", "closed_by": "client", "error": None},
]) + '\n'


def raw_request(port, target):
    """The status line of a GET of target (bytes, sent as they are) with the right Host."""
    with socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT) as sock:
        sock.sendall(b'GET ' + target + b' HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n' % port)
        return sock.makefile('rb').readline()


class NumbersTest(WebTestCase):
    """Numbers in paths and queries are ASCII digits: anything else is a 400 or 404, never a 500 and a line
    on the tool's stderr."""

    def test_digits_that_int_refuses_are_not_numbers(self):
        spy = self.reading(RECORDING)
        token = spy.token.encode()
        for target, status in [(b'/api/sessions/1/rows?count=%C2%B2&token=' + token, 400),   # superscript two
                               (b'/api/sessions/1/rows?from=%D9%A3&token=' + token, 400),    # Arabic-Indic three
                               (b'/api/sessions/\xb2/rows?token=' + token, 404),
                               (b'/api/sessions/1/rows/\xb2?token=' + token, 404)]:
            self.assertEqual(raw_request(spy.web_port, target).split()[1], str(status).encode(), target)
        status, _, body = spy.web_request('/api/sessions/1/rows?count=' + '9' * 5000)
        self.assertEqual(status, 200, body)
        self.assertEqual(len(json.loads(body.decode())['rows']), 3)
        status, _, body = spy.web_request('/api/sessions/' + '9' * 5000 + '/rows')
        self.assertEqual(status, 404, body)
        _, err = self.assert_stopped_cleanly(spy)
        self.assertNotIn('cannot answer', err)


@unittest.skipUnless(chromium_path(), 'chromium is not installed (Debian: apt-get install chromium): '
                                      'the web view is not tested in a browser')
class TimelineSpanTest(WebTestCase):

    def test_a_recording_spanning_millennia_draws_its_timeline(self):
        """The page's timeline once looped over every second between a session's first and last times: a recording
        whose times lie thousands of years apart froze the page for good."""
        spy = self.reading(CENTURIES)
        browser = Chromium(os.path.join(self.folder))
        self.addCleanup(browser.close)
        watchdog = threading.Timer(TIMEOUT, browser.process.kill)     # a frozen page never answers: end it
        watchdog.start()
        self.addCleanup(watchdog.cancel)
        try:
            browser.open(spy.url + '#session=1')
            circles = browser.evaluate("document.querySelectorAll('#timeline svg circle').length")
        except BrowserError as error:
            self.fail('the page never showed the session: %s' % error)
        self.assertEqual(circles, 1)
        self.assert_stopped_cleanly(spy)


class MemoryAccountTest(unittest.TestCase):
    """The store's bound (about 1 GB) holds only if what it counts is what its rows and sessions take: it counted
    rows at less than half their size, and a short session at less than a third (a bound of 1 GB was 2 to 3.5 GB)."""

    def kept_and_traced(self, feed):
        store = WebStore()
        analysis = Analysis(store, MessageFilter())
        gc.collect()
        tracemalloc.start()
        try:
            feed(analysis)
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        return store.kept, traced

    def assert_counted(self, feed):
        kept, traced = self.kept_and_traced(feed)
        self.assertGreaterEqual(kept, 0.85 * traced, 'counted %d bytes of %d' % (kept, traced))

    def test_rows_one_a_second_are_counted_as_what_they_take(self):
        def feed(analysis):
            session = SessionInfo(1, 1795784462.0, ('127.0.0.1', 1), ('127.0.0.1', 2))
            analysis.session_opened(session)
            for index in range(20000):
                analysis.received(session, 'client' if index % 2 else 'server', session.opened + index,
                                  b'{"class":"keepalive","n":%d}\n' % index)
        self.assert_counted(feed)

    def test_short_sessions_are_counted_as_what_they_take(self):
        def feed(analysis):
            for number in range(1, 3001):
                when = 1795784462.0 + number
                session = SessionInfo(number, when, ('127.0.0.1', number), ('127.0.0.1', 2))
                analysis.session_opened(session)
                analysis.received(session, 'client', when, b'{"class":"keepalive"}\n')
                for side in ('client', 'server'):
                    analysis.direction_ended(session, side, when)
                analysis.session_closed(session, when)
        self.assert_counted(feed)


class QueryTest(WebTestCase):

    def test_a_query_of_thousands_of_words_is_refused(self):
        """Each word is looked for in every row: 10,000 of them (60 KB of URL) kept a thread of the tool busy for
        minutes on a session of 20,000 rows, long after the browser had given up."""
        spy = self.reading(RECORDING)
        status, _, body = spy.web_request('/api/sessions/1/match?q=' + '+'.join(['class'] * 10000))
        self.assertEqual(status, 400, body)
        self.assertIn('at most 64', json.loads(body.decode())['error'])
        self.assertEqual(spy.web_json('/api/sessions/1/match?q=' + '+'.join(['class'] * 64))['indices'], [1])
        self.assert_stopped_cleanly(spy)
