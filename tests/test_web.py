"""ctispy --web, server side, end to end: the real ctispy between a scripted client and server (or reading a
recording or a capture), and a client of its web view on loopback: sessions and rows, answer links and
marks, the event stream, the token and Host checks, the download, match queries."""

import datetime
import json
import os
import re
import select
import signal
import socket
import struct
import time
import unittest

from tests.harness import TIMEOUT, FolderTestCase, WebSpyProcess, close_session, recv_exactly, run_tool
from tests.test_capture_read import login_session

BANNER = b'XiVO CTI Server Version 1.2.3\n'
LOGIN = b'{"class": "login_id", "commandid": 1, "userlogin": "<script>alert(1)</script>"}\n'
LOGIN_ERROR = b'{"class": "login_id", "replyid": 1, "error_string": "</textarea>"}\n'
GETLIST = b'{"class": "getlist", "commandid": 2, "function": "listid"}\n'
GETLIST_ANSWER = b'{"class": "getlist", "replyid": 2, "list": ["<img src=x onerror=alert(1)>", "javascript:x"]}\n'
KEEPALIVE = b'{"class": "keepalive", "commandid": 3}\n'
TRAFFIC = [('server', BANNER), ('client', LOGIN), ('server', LOGIN_ERROR), ('client', GETLIST),
           ('server', GETLIST_ANSWER), ('client', KEEPALIVE)]

RECORDING = '\n'.join(json.dumps(record) for record in [
    {"time": "2026-11-27T13:01:02.000000+00:00", "session": 1, "event": "start", "client": "127.0.0.1:4000",
     "server": "xivo:5003"},
    {"time": "2026-11-27T13:01:02.050000+00:00", "session": 1, "direction": "server", "text": "Banner \udcff"},
    {"time": "2026-11-27T13:01:02.100000+00:00", "session": 1, "direction": "client",
     "message": json.loads(LOGIN)},
    {"time": "2026-11-27T13:01:02.200000+00:00", "session": 1, "direction": "server",
     "message": json.loads(LOGIN_ERROR)},
    {"time": "2026-11-27T13:01:02.300000+00:00", "session": 1, "direction": "client",
     "message": json.loads(GETLIST)},
    {"time": "2026-11-27T13:01:03.400000+00:00", "session": 1, "direction": "server",
     "message": json.loads(GETLIST_ANSWER)},
    {"time": "2026-11-27T13:01:03.500000+00:00", "session": 1, "direction": "client",
     "message": json.loads(KEEPALIVE)},
    {"time": "2026-11-27T13:01:04.000000+00:00", "session": 1, "event": "end", "closed_by": "client",
     "error": None},
    {"time": "2026-11-27T13:02:00.000000+00:00", "session": 2, "event": "start", "client": "127.0.0.1:4001",
     "server": "xivo:5003"},
    {"time": "2026-11-27T13:02:00.100000+00:00", "session": 2, "direction": "client",
     "message": {"class": "getlist", "commandid": 7}},
    {"time": "2026-11-27T13:02:01.000000+00:00", "session": 2, "event": "end", "closed_by": "server",
     "error": None},
]) + '\n'

# Rows of the recording's session 1: start notice, banner, login, its error answer, getlist, its answer,
# keepalive (never answered), end notice.
KINDS = ['notice', 'text', 'message', 'message', 'message', 'message', 'message', 'notice']
DIRECTIONS = [None, 'server', 'client', 'server', 'client', 'server', 'client', None]


def exchange_lines(test, client, server, traffic):
    """Send each line from its side and wait for it at the other: the tool sees them in this order."""
    for side, line in traffic:
        sender, receiver = (client, server) if side == 'client' else (server, client)
        sender.sendall(line)
        test.assertEqual(recv_exactly(receiver, len(line)), line)


def session_records(out, number):
    """The --json-lines records of one session, as the bytes of their lines."""
    return b''.join(line + b'\n' for line in out.split(b'\n') if line and json.loads(line)['session'] == number)


class WebTestCase(FolderTestCase):

    folder_prefix = 'cti-web-'

    def reading(self, data, *args, name='cti.jsonl'):
        """A ctispy --web reading data (a recording or capture), once it says it has read it all."""
        spy = WebSpyProcess(*args, read=self.write(name, data))
        self.addCleanup(spy.__exit__)
        spy.web_read_stderr_until('read to the end')
        return spy

    def assert_stopped_cleanly(self, spy, sig=signal.SIGINT):
        status, out, err = spy.stop(sig)
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        return out, err

    def assert_session_one_rows(self, rows):
        self.assertEqual([row['kind'] for row in rows], KINDS)
        self.assertEqual([row['dir'] for row in rows], DIRECTIONS)
        self.assertEqual([row['i'] for row in rows], list(range(len(KINDS))))
        self.assertEqual([row['class'] for row in rows],
                         [None, None, 'login_id', 'login_id', 'getlist', 'getlist', 'keepalive', None])
        self.assertEqual(rows[4]['function'], 'listid')
        # answers and requests linked both ways, with the reply time
        self.assertEqual((rows[2]['answer'], rows[3]['reply_to']), (3, 2))
        self.assertEqual((rows[4]['answer'], rows[5]['reply_to']), (5, 4))
        self.assertIsNotNone(rows[3]['reply_ms'])
        self.assertIsNone(rows[2]['reply_ms'])
        self.assertEqual([row['error'] for row in rows], [None, None, None, '</textarea>', None, None, None, None])
        self.assertEqual([row['unanswered'] for row in rows], [False] * 6 + [True, False])
        # hostile strings come back as they were, in JSON strings
        self.assertEqual(rows[2]['preview'], LOGIN.decode().strip())
        self.assertEqual(rows[5]['preview'], GETLIST_ANSWER.decode().strip())
        self.assertEqual(rows[5]['size'], len(GETLIST_ANSWER) - 1)


class LiveTest(WebTestCase):
    """Between a scripted client and server."""

    def test_sessions_rows_and_the_event_stream_live(self):
        with WebSpyProcess('--loop') as spy:
            events = spy.web_events()
            self.addCleanup(events.close)
            self.assertEqual(events.status, 200)
            self.assertEqual(events.headers['content-type'], 'text/event-stream')
            self.assertEqual(events.next_event(), ('sessions', {'all': True, 'sessions': []}))
            client, server = spy.connect()
            exchange_lines(self, client, server, TRAFFIC[:3])
            events.wait_for_rows(1, 4)          # the start notice, banner, login, its answer
            rows = spy.web_json('/api/sessions/1/rows')['rows']
            self.assertEqual([row['kind'] for row in rows], KINDS[:4])
            self.assertEqual(rows[3]['reply_to'], 2)
            exchange_lines(self, client, server, TRAFFIC[3:])
            events.wait_for_rows(1, 7)          # new rows come as they are relayed
            sessions = spy.web_json('/api/sessions')['sessions']
            self.assertEqual(len(sessions), 1)
            self.assertEqual(sessions[0]['state'], 'open')
            close_session(self, client, server)
            while True:                          # the session's end comes as a sessions event
                name, data = events.next_event()
                self.assertIsNotNone(name, 'the stream ended early')
                if name == 'sessions' and data['sessions'] and data['sessions'][0]['state'] == 'closed':
                    break
            session = data['sessions'][0]
            self.assertEqual((session['number'], session['rows'], session['errors'], session['unanswered']),
                             (1, 8, 1, 1))
            self.assertEqual(session['messages'], {'client': 3, 'server': 3})
            self.assertEqual(session['end'], 'session #1 ended: the client closed')
            self.assertEqual(session['client'].split(':')[0], '127.0.0.1')
            self.assert_session_one_rows(spy.web_json('/api/sessions/1/rows?from=0&count=100')['rows'])
            info = spy.web_json('/api/info')
            self.assertEqual((info['tool'], info['source'], info['done']), ('ctispy', 'live', False))
            self.assertIn('listening on', info['what'])
            out, err = self.assert_stopped_cleanly(spy)
            while events.next_event()[0] is not None:             # the stream ends with the tool
                pass
        self.assertEqual(out, b'', 'the terminal stays quiet without an output form')
        self.assertEqual(len(err.splitlines()), 2, err)            # the web view's line, the relay's

    def test_the_event_stream_batches_many_rows(self):
        with WebSpyProcess('--loop') as spy:
            events = spy.web_events()
            self.addCleanup(events.close)
            client, server = spy.connect()
            line = b'{"class": "keepalive", "commandid": 1}\n'
            for _ in range(2000):           # 2000 segments, each a line
                client.sendall(line)
            self.assertEqual(recv_exactly(server, 2000 * len(line)), 2000 * line)
            seen = events.wait_for_rows(1, 2001)
            rows_events = [data for name, data in seen if name == 'rows']
            self.assertLess(len(rows_events), 200, 'a batch per 200 ms at most, not an event per row')
            totals = [data['total'] for data in rows_events]
            self.assertEqual(totals, sorted(set(totals)))
            close_session(self, client, server)
            self.assert_stopped_cleanly(spy)

    def test_without_loop_the_view_ends_with_the_session(self):
        with WebSpyProcess() as spy:
            events = spy.web_events()
            self.addCleanup(events.close)
            client, server = spy.connect()
            exchange_lines(self, client, server, TRAFFIC[:2])
            close_session(self, client, server)
            self.assertEqual(spy.process.wait(timeout=TIMEOUT), 0)
            while events.next_event()[0] is not None:
                pass

    def test_the_download_is_what_json_lines_writes(self):
        with WebSpyProcess('--loop', '--json-lines') as spy:
            client, server = spy.connect()
            exchange_lines(self, client, server, TRAFFIC)
            close_session(self, client, server)
            out = read_until(spy.process.stdout.fileno(), b'"event": "end"')
            status, headers, body = spy.web_request('/api/sessions/1/download')
            self.assertEqual(status, 200)
            self.assertEqual(headers['content-type'], 'application/x-ndjson')
            self.assertEqual(headers['content-disposition'], 'attachment; filename="cti-session-1.jsonl"')
            self.assertEqual(body, out)
            rest, err = self.assert_stopped_cleanly(spy)
            self.assertEqual(rest, b'')
        events = [json.loads(line).get('event') for line in body.splitlines()]
        self.assertEqual((events[0], events[-2], events[-1]), ('start', 'unanswered', 'end'))

    def test_filters_apply_to_the_view(self):
        with WebSpyProcess('--loop', '--no-server', '--include', 'class=login_id', '--strip', 'userlogin') as spy:
            client, server = spy.connect()
            events = spy.web_events()
            self.addCleanup(events.close)
            exchange_lines(self, client, server, TRAFFIC)
            events.wait_for_rows(1, 2)
            rows = spy.web_json('/api/sessions/1/rows')['rows']
            self.assertEqual([(row['kind'], row['dir'], row['class']) for row in rows],
                             [('notice', None, None), ('message', 'client', 'login_id')])
            detail = spy.web_json('/api/sessions/1/rows/1')
            self.assertEqual(detail['message'], {'class': 'login_id', 'commandid': 1})
            self.assertEqual(json.loads(detail['line']), detail['message'])
            info = spy.web_json('/api/info')
            self.assertEqual(info['filters'], '--include class=login_id --strip userlogin --no-server')
            close_session(self, client, server)
            self.assert_stopped_cleanly(spy)


def read_until(fd, needle):
    """Read a pipe until needle has come (bounded wait); return what was read."""
    got = b''
    deadline = time.monotonic() + TIMEOUT
    while needle not in got:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError('%r did not come: %r' % (needle, got[-300:]))
        data = os.read(fd, 65536)
        if not data:
            raise AssertionError('the output ended before %r: %r' % (needle, got[-300:]))
        got += data
    return got


class ReadTest(WebTestCase):
    """--read of a recording or a capture: the same view, served until Ctrl-C."""

    def test_a_recording(self):
        spy = self.reading(RECORDING)
        info = spy.web_json('/api/info')
        self.assertEqual((info['source'], info['done']), ('recording', True))
        self.assertTrue(info['what'].startswith('reading '))
        sessions = spy.web_json('/api/sessions')['sessions']
        self.assertEqual([(s['number'], s['state'], s['client'], s['server']) for s in sessions],
                         [(1, 'closed', '127.0.0.1:4000', 'xivo:5003'), (2, 'closed', '127.0.0.1:4001', 'xivo:5003')])
        self.assertEqual(datetime.datetime.fromisoformat(sessions[0]['opened_time']).timestamp(), 1795784462.0)
        self.assertEqual(sessions[0]['opened'], 1795784462.0)
        rows = spy.web_json('/api/sessions/1/rows?from=0&count=5000')['rows']
        self.assert_session_one_rows(rows)
        self.assertEqual(rows[3]['reply_ms'], 100.0)
        self.assertEqual(rows[1]['preview'], 'Banner \ufffd')
        self.assertEqual(spy.web_json('/api/sessions/1/rows?from=6&count=1')['rows'][0]['class'], 'keepalive')
        self.assertEqual(spy.web_json('/api/sessions/1/rows?from=99')['rows'], [])
        detail = spy.web_json('/api/sessions/1/rows/2')
        self.assertEqual(detail['line'], LOGIN.decode().strip())
        self.assertEqual(detail['message']['userlogin'], '<script>alert(1)</script>')
        self.assertEqual(detail['row']['answer'], 3)
        self.assertEqual(spy.web_json('/api/sessions/1/rows/1')['message'], None)
        timeline = spy.web_json('/api/sessions/1/timeline')
        self.assertEqual(timeline['per_second'], [{'t': 1795784462, 'client': 2, 'server': 2},
                                                  {'t': 1795784463, 'client': 1, 'server': 1}])
        self.assertEqual(timeline['replies'], [{'t': 1795784462.2, 'ms': 100.0, 'class': 'login_id'},
                                               {'t': 1795784463.4, 'ms': 1100.0, 'class': 'getlist'}])
        self.assertEqual(spy.web_json('/api/sessions/2/rows')['rows'][1]['unanswered'], True)
        self.assert_stopped_cleanly(spy, signal.SIGTERM)

    def test_bad_input_is_said_and_what_came_before_is_served(self):
        bad = RECORDING.replace('"session": 2, "direction"', '"session": 2,')    # line 10: no direction
        spy = WebSpyProcess(read=self.write('cti.jsonl', bad))
        self.addCleanup(spy.__exit__)
        spy.web_read_stderr_until('line 10')
        spy.web_read_stderr_until('what came before is read; the web view stays on')
        self.assertEqual([session['state'] for session in spy.web_json('/api/sessions')['sessions']],
                         ['closed', 'closed'])
        status, out, err = spy.stop()
        self.assertEqual(status, 1, err)

    def test_the_download_reads_back(self):
        path = self.write('cti.jsonl', RECORDING)
        status, expected, err = run_tool('ctispy', '--read', path, '--json-lines', '--loop')
        self.assertEqual(status, 0, err)
        spy = self.reading(RECORDING)
        for number in (1, 2):
            status, _, body = spy.web_request('/api/sessions/%d/download' % number)
            self.assertEqual(status, 200)
            self.assertEqual(body, session_records(expected, number))
            again = self.write('session%d.jsonl' % number, body)
            status, out, err = run_tool('ctispy', '--read', again, '--json-lines', '--loop')
            self.assertEqual((status, out), (0, body), err)
        self.assert_stopped_cleanly(spy)

    def test_the_terminal_shows_its_form_beside_the_view(self):
        path = self.write('cti.jsonl', RECORDING)
        for form in ('--oneline', '--pretty-print', '--json-lines'):
            status, expected, err = run_tool('ctispy', '--read', path, form, '--loop')
            spy = self.reading(RECORDING, form, '--loop')
            self.assertEqual(spy.web_json('/api/sessions')['sessions'][1]['rows'], 3)
            out, err = self.assert_stopped_cleanly(spy)
            self.assertEqual(out, expected, form)

    def test_a_capture(self):
        capture = login_session().pcap()
        spy = self.reading(capture, name='cti.pcap')
        self.assertEqual(spy.web_json('/api/info')['source'], 'capture')
        sessions = spy.web_json('/api/sessions')['sessions']
        self.assertEqual([(s['number'], s['messages']) for s in sessions], [(1, {'client': 2, 'server': 3})])
        rows = spy.web_json('/api/sessions/1/rows')['rows']
        messages = [row for row in rows if row['kind'] != 'notice']
        self.assertEqual([(row['dir'], row['class']) for row in messages],
                         [('server', None), ('client', 'login_id'), ('server', 'login_id'), ('client', 'getlist'),
                          ('server', 'getlist')])
        self.assertEqual(messages[2]['reply_to'], messages[1]['i'])
        self.assertEqual(messages[2]['reply_ms'], 1.0)
        status, expected, err = run_tool('ctispy', '--read', self.write('again.pcap', capture), '--json-lines',
                                         '--loop')
        self.assertEqual(spy.web_request('/api/sessions/1/download')[2], expected)
        self.assert_stopped_cleanly(spy)

    def test_match_queries(self):
        spy = self.reading(RECORDING)

        def match(query):
            status, headers, body = spy.web_request('/api/sessions/1/match?q=' + query)
            return status, json.loads(body.decode())

        self.assertEqual(match('class=login_id'), (200, {'session': 1, 'total': 8, 'indices': [2, 3]}))
        self.assertEqual(match('class=login_id+replyid=1')[1]['indices'], [3])
        self.assertEqual(match('class=login_id+class=getlist')[1]['indices'], [2, 3, 4, 5])
        self.assertEqual(match('-class=login_id')[1]['indices'], [0, 1, 4, 5, 6, 7])
        self.assertEqual(match('commandid=1')[1]['indices'], [2])         # as JSON: 1 is the number 1
        self.assertEqual(match('TEXTAREA')[1]['indices'], [3])            # free text, any case
        self.assertEqual(match('%3Cscript%3E')[1]['indices'], [2])
        self.assertEqual(match('-class=keepalive+ended')[1]['indices'], [7])
        self.assertEqual(match('%22session%20%231%22+started')[1]['indices'], [0])
        self.assertEqual(match('')[1]['indices'], list(range(8)))
        status, body = match('=x')
        self.assertEqual(status, 400)
        self.assertEqual(body, {'error': "expected KEY=VALUE, got '=x'"})
        self.assertEqual(match('a..b=x'), (400, {'error': "not a key path: 'a..b' (an empty key) in 'a..b=x'"}))
        status, body = match('%22unclosed')
        self.assertEqual(status, 400)
        self.assertIn('quotation', body['error'])
        self.assertEqual(spy.web_request('/api/sessions/9/match?q=a')[0], 404)
        self.assert_stopped_cleanly(spy)

    def test_the_event_stream_ends_when_the_tool_stops(self):
        spy = self.reading(RECORDING)
        events = spy.web_events()
        self.addCleanup(events.close)
        name, data = events.next_event()
        self.assertEqual((name, data['all'], len(data['sessions'])), ('sessions', True, 2))
        self.assertEqual(sorted(events.next_event()[1]['session'] for _ in range(2)), [1, 2])
        self.assert_stopped_cleanly(spy)
        while events.next_event()[0] is not None:
            pass

    def test_a_client_that_goes_away_mid_answer(self):
        big = json.dumps({"time": "2026-11-27T13:01:02.000000+00:00", "session": 1, "direction": "server",
                          "message": {"class": "big", "data": 'x' * 4000000}}) + '\n'
        spy = self.reading(big)
        for path in ('/api/sessions/1/download', '/api/sessions/1/rows/0', '/api/events'):
            sock = socket.create_connection(('127.0.0.1', spy.web_port), timeout=TIMEOUT)
            sock.sendall(('GET %s?token=%s HTTP/1.1\r\nHost: %s\r\n\r\n' % (path, spy.token, spy.host)).encode())
            self.assertTrue(sock.recv(100).startswith(b'HTTP/1.1 200'))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            sock.close()                    # a reset, mid-answer
        self.assertEqual(spy.web_json('/api/sessions')['sessions'][0]['rows'], 3)
        out, err = self.assert_stopped_cleanly(spy)
        self.assertEqual(len(err.splitlines()), 2, err)


class SecurityTest(WebTestCase):
    """The token, the Host check, the headers."""

    def setUp(self):
        super().setUp()
        self.spy = self.reading(RECORDING)

    def tearDown(self):
        self.assert_stopped_cleanly(self.spy)

    def test_the_token_is_needed(self):
        spy = self.spy
        for path in ('/', '/api/info', '/api/sessions', '/api/events', '/api/sessions/1/download', '/nothing'):
            for query in ('', '?token=', '?token=wrong', '?token=' + spy.token[:-1]):
                status, headers, body = spy.web_request(path + query, token=False)
                self.assertEqual((status, headers['content-type']), (403, 'text/plain; charset=utf-8'), path + query)
                self.assertNotIn(b'session', body)
        status, _, _ = spy.web_request('/api/sessions', token=False,
                                       headers={'Cookie': 'ctiproxy_token=wrong; other=%s' % spy.token})
        self.assertEqual(status, 403)

    def test_no_cookie_holds_the_token(self):
        """Browsers send a cookie of 127.0.0.1 to its every port: the token is in each request's URL only."""
        spy = self.spy
        status, headers, body = spy.web_request('/')
        self.assertEqual((status, headers['content-type']), (200, 'text/html; charset=utf-8'))
        self.assertNotIn('set-cookie', headers)
        status, _, body = spy.web_request('/api/sessions', token=False,
                                          headers={'Cookie': 'ctiproxy_token=%s' % spy.token})
        self.assertEqual(status, 403)

    def test_the_host_is_checked(self):
        spy = self.spy
        port = spy.web_port
        for host in ('evil.example:%d' % port, 'evil.example', '127.0.0.1:%d' % (port + 1), '127.0.0.1',
                     'localhost.evil.example:%d' % port, '127.0.0.1:%d@evil.example' % port, '[::1'):
            status, _, _ = spy.web_request('/api/info', headers={'Host': host})
            self.assertEqual(status, 403, host)
        for host in ('127.0.0.1:%d' % port, 'localhost:%d' % port, 'LOCALHOST:%d' % port, '[::1]:%d' % port):
            status, _, _ = spy.web_request('/api/info', headers={'Host': host})
            self.assertEqual(status, 200, host)

    def test_headers_and_the_nonce(self):
        spy = self.spy
        nonces = []
        for _ in range(2):
            status, headers, body = spy.web_request('/')
            self.assertEqual(status, 200)
            policy = headers['content-security-policy']
            nonce = re.search(r"script-src 'self' 'nonce-([A-Za-z0-9_-]{16,})'", policy).group(1)
            self.assertIn("style-src 'self' 'nonce-%s'" % nonce, policy)
            for part in ("default-src 'none'", "connect-src 'self'", "base-uri 'none'", "form-action 'none'",
                         "frame-ancestors 'none'", "img-src 'self' data:"):
                self.assertIn(part, policy)
            self.assertNotIn(b'{{NONCE}}', body)
            self.assertIn(('nonce="%s"' % nonce).encode(), body)
            nonces.append(nonce)
        self.assertNotEqual(nonces[0], nonces[1])
        for path in ('/', '/api/sessions', '/api/sessions/9/rows', '/nothing'):
            status, headers, _ = spy.web_request(path)
            self.assertEqual((headers['x-content-type-options'], headers['referrer-policy'],
                              headers['cache-control']), ('nosniff', 'no-referrer', 'no-store'), path)
            self.assertIn('content-security-policy', headers)

    def test_errors(self):
        spy = self.spy
        for path in ('/nothing', '/api', '/api/sessions/1/nothing', '/api/sessions/x/rows'):
            self.assertEqual(spy.web_request(path)[0], 404, path)
        for path in ('/api/sessions/3/rows', '/api/sessions/1/rows/8', '/api/sessions/3/download',
                     '/api/sessions/3/timeline'):
            status, headers, body = spy.web_request(path)
            self.assertEqual((status, headers['content-type']), (404, 'application/json'), path)
            self.assertIn('error', json.loads(body.decode()))
        for path in ('/api/sessions/1/rows?from=x', '/api/sessions/1/rows?count=-1'):
            status, headers, body = spy.web_request(path)
            self.assertEqual(status, 400, path)
            self.assertIn('not a number', json.loads(body.decode())['error'])
        for method in ('POST', 'PUT', 'DELETE', 'OPTIONS'):
            status, headers, _ = spy.web_request('/api/sessions', method=method)
            self.assertEqual((status, headers['allow']), (405, 'GET, HEAD'), method)
        status, headers, body = spy.web_request('/api/sessions', method='HEAD')
        self.assertEqual((status, body), (200, b''))
        self.assertGreater(int(headers['content-length']), 0)
        self.assertEqual(spy.web_json('/api/sessions/1/rows?count=100000')['total'], 8)


class StartTest(WebTestCase):
    """--web's address: taken, not loopback, not an address."""

    def test_a_taken_port_is_one_line_before_anything(self):
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(('127.0.0.1', 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        status, out, err = run_tool('ctispy', '127.0.0.1', '--listen-port', '0', '--web', '127.0.0.1:%d' % port)
        self.assertEqual(status, 1)
        self.assertEqual(err.splitlines(), ['ctispy: cannot serve the web view on 127.0.0.1:%d: Address already '
                                            'in use' % port])
        status, out, err = run_tool('ctispy', '--read', self.write('cti.jsonl', RECORDING), '--web',
                                    '127.0.0.1:%d' % port, '--json-lines')
        self.assertEqual((status, out), (1, b''))
        self.assertEqual(len(err.splitlines()), 1, err)

    def test_not_an_address(self):
        for value in ('nowhere', '127.0.0.1:99999', '[::1', '127.0.0.1:'):
            status, out, err = run_tool('ctispy', '--read', self.write('cti.jsonl', RECORDING), '--web', value)
            self.assertEqual(status, 2, value)
            self.assertIn('--web', err.splitlines()[-1])
        status, out, err = run_tool('ctispy', '--read', self.write('cti.jsonl', RECORDING),
                                    '--web', 'no-such-host.invalid:8030')
        self.assertEqual(status, 1)
        self.assertIn('cannot serve the web view on no-such-host.invalid:8030', err)

    def test_all_interfaces_warns_and_checks_hosts(self):
        spy = WebSpyProcess(read=self.write('cti.jsonl', RECORDING), web='0.0.0.0:0')
        self.addCleanup(spy.__exit__)
        warning = spy.web_read_stderr_until('warning')
        self.assertIn('anyone who can reach it and has the token', warning)
        self.assertTrue(spy.url.startswith('http://127.0.0.1:'))
        spy.web_read_stderr_until('read to the end')
        port = spy.web_port
        for host, expected in (('127.0.0.1:%d' % port, 200), ('localhost:%d' % port, 200),
                               ('192.0.2.7:%d' % port, 200), ('evil.example:%d' % port, 403)):
            self.assertEqual(spy.web_request('/api/info', headers={'Host': host})[0], expected, host)
        self.assert_stopped_cleanly(spy)

    def test_help_shows_the_option_and_an_example(self):
        status, out, err = run_tool('ctispy', '--help')
        self.assertEqual(status, 0)
        self.assertIn(b'--web [[ADDR:]PORT]', out)
        self.assertIn(b'ctispy xivo-new --web ', out)


if __name__ == '__main__':
    unittest.main()
