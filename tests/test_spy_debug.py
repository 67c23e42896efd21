"""ctispy for debugging (issue 13): answers paired with their requests, error and slow answers, requests never
answered, --time, session tags and start/end notices with --loop, --oneline; live and from --read."""

import datetime
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import tests  # noqa: F401 (first: it puts cti-proxy/ on sys.path)
from ctiproxy.outputs import Clock, Mark, duration, mark_parts, microseconds
from ctiproxy.pairing import Reply, Request
from ctiproxy.recording import iso_time, record_time
from tests.harness import (HEADER, TIMEOUT, Tool, close_session, parse_spy_output, recv_exactly,
                           recv_until_eof, reset, run_tool, spy_marks, spy_notices, spy_on_a_terminal, tool_path)


def play(tool, steps):
    """One session through the tool, step by step in this order: ('client'|'server', bytes sent by that side,
    received whole by the other before the next step); the client then the server end it."""
    client, server = tool.connect()
    for side, data in steps:
        sender, receiver = (client, server) if side == 'client' else (server, client)
        sender.sendall(data)
        assert recv_exactly(receiver, len(data)) == data
    return client, server


def spy(test, steps, *args):
    """ctispy over one scripted session; return its stdout as text."""
    with Tool('ctispy', *args) as tool:
        client, server = play(tool, steps)
        close_session(test, client, server)
        status, out, err = tool.finish()
    test.assertEqual(status, 0, err)
    test.assertNotIn('Traceback', err)
    return out.decode('utf-8')


def line(**message):
    return json.dumps(message).encode() + b'\n'


def request(number, kind, **fields):
    return ('client', line(**dict({'class': kind, 'commandid': number}, **fields)))


def answer(number, kind, **fields):
    return ('server', line(**dict({'class': kind, 'replyid': number}, **fields)))


SAME_ID = [request(1, 'login_id'), request(1, 'getlist', function='updateconfig'), request(2, 'keepalive'),
           answer(1, 'login_id'), answer(1, 'getlist'), answer(1, 'getlist'), answer(2, 'keepalive')]

REPLY = r'reply to %s, \d+\.\d ms'


class PairingLiveTest(unittest.TestCase):

    def test_several_requests_of_one_commandid_oldest_first(self):
        out = spy(self, SAME_ID)
        marks = spy_marks(out)
        self.assertEqual(marks[:3], ['', '', ''])           # the requests
        self.assertRegex(marks[3], '^%s$' % REPLY % 'login_id')
        self.assertRegex(marks[4], '^%s$' % REPLY % 'getlist/updateconfig')
        self.assertEqual(marks[5], '')                      # a third answer to commandid 1: nothing waits for it
        self.assertRegex(marks[6], '^%s$' % REPLY % 'keepalive')
        self.assertEqual(spy_notices(out), [])              # every request answered

    def test_answers_before_any_request_pair_nothing(self):
        out = spy(self, [answer(5, 'login_id'), answer(6, 'getlist'), request(5, 'login_id')])
        self.assertEqual(spy_marks(out), ['', '', ''])
        notices = spy_notices(out)
        self.assertEqual(len(notices), 1, out)
        self.assertRegex(notices[0][1], r'^never answered: login_id \(commandid 5\), sent \d\d:\d\d:\d\d\.\d{6}$')

    def test_error_answers_of_each_shape(self):
        out = spy(self, [request(1, 'getlist', function='updateconfig'),
                         answer(1, 'getlist', error_string='unknown id'),
                         request(2, 'login_pass'), answer(2, 'login_pass', status='ko'),
                         request(3, 'nonsense'), answer(3, 'error', error_string='unknown class'),
                         ('server', line(**{'class': 'error'})),                 # no replyid: an error all the same
                         request(4, 'getlist'), answer(4, 'getlist', status='OK'),
                         ('server', line(**{'class': 'getlist', 'status': {'availstate': 'away'}}))])
        marks = [mark for mark in spy_marks(out) if mark]
        self.assertRegex(marks[0], '^%s  ERROR: unknown id$' % REPLY % 'getlist/updateconfig')
        self.assertRegex(marks[1], '^%s  ERROR: status ko$' % REPLY % 'login_pass')
        self.assertRegex(marks[2], '^%s  ERROR: unknown class$' % REPLY % 'nonsense')
        self.assertEqual(marks[3], 'ERROR: error')
        self.assertRegex(marks[4], '^%s$' % REPLY % 'getlist')     # status OK, and a status that is an object
        self.assertEqual(len(marks), 5, out)

    def test_slow(self):
        steps = [request(1, 'login_id'), answer(1, 'login_id')]
        self.assertRegex(spy_marks(spy(self, steps, '--slow', '0'))[1], '^%s  SLOW$' % REPLY % 'login_id')
        self.assertRegex(spy_marks(spy(self, steps, '--slow', '100000'))[1], '^%s$' % REPLY % 'login_id')

    def test_hidden_requests_still_pair_their_shown_answers(self):
        out = spy(self, SAME_ID, '--no-client')
        self.assertEqual(len(spy_marks(out)), 4)
        self.assertRegex(spy_marks(out)[0], REPLY % 'login_id')
        out = spy(self, SAME_ID, '--include', 'replyid=2')
        self.assertEqual([entry[1] for entry in parse_spy_output(out)], ['Server > Client'])
        self.assertRegex(spy_marks(out)[0], '^%s$' % REPLY % 'keepalive')
        out = spy(self, SAME_ID, '--strip', 'replyid', '--strip', 'commandid')     # strip comes after pairing
        self.assertRegex(spy_marks(out)[3], REPLY % 'login_id')

    def test_json_lines_reply_to_error_and_slow(self):
        out = spy(self, [request(1, 'getlist', function='listid'), answer(1, 'getlist', error_string='no'),
                         request(2, 'keepalive'), answer(2, 'keepalive'), request(3, 'never')],
                  '--json-lines', '--slow', '0')
        records = [json.loads(text) for text in out.splitlines()]
        answers = [record for record in records if record.get('direction') == 'server']
        self.assertEqual(answers[0]['reply_to']['class'], 'getlist')
        self.assertEqual(answers[0]['reply_to']['function'], 'listid')
        self.assertGreater(answers[0]['reply_to']['ms'], 0)
        self.assertEqual((answers[0]['error'], answers[0]['slow']), ('no', True))
        self.assertEqual(answers[1]['reply_to']['function'], None)
        self.assertNotIn('error', answers[1])
        unanswered = [record for record in records if record.get('event') == 'unanswered']
        self.assertEqual([record['request'] for record in unanswered],
                         [{'class': 'never', 'function': None, 'commandid': 3}])
        self.assertEqual(record_time(unanswered[0]['sent']), record_time(records[-2]['time']))
        self.assertNotIn('event', records[-2])

    def test_everything_from_the_network_escaped_in_the_header(self):
        out = spy(self, [request(1, 'a\x1b[31m\u202e', function='f\x07\n'),
                         answer(1, 'x', error_string='bad\x1b]0;title\x07\r\nline'),
                         request('\x1b', {'nested': '\x1b'}), answer('\x1b', 'y', status='k\x1bo')])
        self.assertNotIn('\x1b', out)
        self.assertNotIn('\x07', out)
        self.assertNotIn('\u202e', out)
        marks = [mark for mark in spy_marks(out) if mark]
        self.assertRegex(marks[0], r'^reply to a\\x1b\[31m\\u202e/f\\x07\\x0a, \d+\.\d ms  '
                                   r'ERROR: bad\\x1b\]0;title\\x07\\x0d\\x0aline$')
        self.assertRegex(marks[1], r'^reply to \{"nested": "\\u001b"\}, \d+\.\d ms  ERROR: status k\\x1bo$')

    def test_unanswered_commandid_and_class_escaped_in_the_notice(self):
        out = spy(self, [request('\x1b\u202e', '\x1b')])
        self.assertNotIn('\x1b', out)
        self.assertRegex(spy_notices(out)[0][1], r'^never answered: \\x1b \(commandid "\\u001b\\u202e"\), sent ')

    def test_error_in_colour_on_a_terminal_only(self):
        steps = [request(1, 'login_id'), answer(1, 'login_id', error_string='no')]
        got = spy_on_a_terminal(self, ['--slow', '0'], lambda tool: play(tool, steps), [b'ERROR'])
        self.assertIn('\x1b[1;31mERROR: no\x1b[0m', got)
        self.assertIn('\x1b[1;33mSLOW\x1b[0m', got)
        self.assertNotIn('\x1b', spy(self, steps, '--slow', '0'))          # a pipe: no colour


ANY_HEADER = re.compile(r'^(?:\[#\d+\]|   ) (.+?) (Client > Server|Server > Client)(?:  (.*))?$')


def header_times(out):
    """The time each header of ctispy's default output shows, whatever its form."""
    return [match.group(1) for match in map(ANY_HEADER.match, out.split('\n')) if match]


def header_marks(out):
    """What each header says after its direction, whatever the form of its time."""
    return [match.group(3) or '' for match in map(ANY_HEADER.match, out.split('\n')) if match]


DURATION = r'^\d\d:\d\d:\d\d\.\d{6}$'


class TimeTest(unittest.TestCase):

    STEPS = [request(1, 'login_id'), answer(1, 'login_id'), request(2, 'keepalive'), answer(2, 'keepalive')]

    def test_each_form_live(self):
        started = time.time()
        shown = {form: header_times(spy(self, self.STEPS, '--time', form))
                 for form in ('clock', 'date', 'epoch', 'since-start', 'delta')}
        ended = time.time()
        for times in shown.values():
            self.assertEqual(len(times), 4)
        for clock in shown['clock']:
            self.assertRegex(clock, r'^\d\d:\d\d:\d\d\.\d{6}$')
        for date in shown['date']:
            moment = datetime.datetime.strptime(date, '%Y-%m-%d %H:%M:%S.%f').timestamp()
            self.assertTrue(started - 1 <= moment <= ended + 1, date)
        for epoch in shown['epoch']:
            self.assertRegex(epoch, r'^\d+\.\d{6}$')
            self.assertTrue(started - 1 <= float(epoch) <= ended + 1, epoch)
        for form in ('since-start', 'delta'):
            for value in shown[form]:
                self.assertRegex(value, DURATION)
        self.assertEqual(shown['since-start'], sorted(shown['since-start']))

    def test_default_is_clock(self):
        self.assertEqual(len(header_times(spy(self, self.STEPS))), 4)
        self.assertTrue(all(HEADER.match(text) for text in spy(self, self.STEPS).split('\n') if 'Server > ' in text))


# The same session recorded in the form of before (local time) and today's (with its UTC offset): read with
# TZ=UTC, 13:00 here is 13:00 local, and 15:00+02:00 is 13:00 UTC.
OLD_FORM = ['2026-11-27T13:00:00.000000', '2026-11-27T13:00:00.250000', '2026-11-27T13:00:01.500000']
NEW_FORM = ['2026-11-27T15:00:00.000000+02:00', '2026-11-27T15:00:00.250000+02:00',
            '2026-11-27T15:00:01.500000+02:00']
EXPECTED = {'clock': ['13:00:00.000000', '13:00:00.250000', '13:00:01.500000'],
            'date': ['2026-11-27 13:00:00.000000', '2026-11-27 13:00:00.250000', '2026-11-27 13:00:01.500000'],
            'epoch': ['1795784400.000000', '1795784400.250000', '1795784401.500000'],
            'since-start': ['00:00:00.000000', '00:00:00.250000', '00:00:01.500000'],
            'delta': ['00:00:00.000000', '00:00:00.250000', '00:00:01.250000']}


def recording(times):
    messages = [{'class': 'login_id', 'commandid': 1}, {'class': 'login_id', 'replyid': 1},
                {'class': 'getlist', 'commandid': 2}]
    return ''.join(json.dumps({'time': moment, 'session': 1, 'direction': 'client' if 'commandid' in message
                               else 'server', 'message': message}) + '\n'
                   for moment, message in zip(times, messages)).encode()


def replay_utc(data, *args):
    """ctispy --read - with TZ=UTC; return (status, stdout text, stderr text)."""
    done = subprocess.run([sys.executable, tool_path('ctispy'), '--read', '-'] + list(args), input=data,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT,
                          env=dict(os.environ, TZ='UTC'))
    return done.returncode, done.stdout.decode('utf-8'), done.stderr.decode('utf-8')


class TimeFromRecordingTest(unittest.TestCase):

    def test_each_form_from_either_form_of_recording(self):
        for name, times in (('old', OLD_FORM), ('new', NEW_FORM)):
            for form, expected in EXPECTED.items():
                with self.subTest(recording=name, form=form):
                    status, out, err = replay_utc(recording(times), '--time', form)
                    self.assertEqual(status, 0, err)
                    self.assertEqual(header_times(out), expected)
                    self.assertEqual(header_marks(out), ['', 'reply to login_id, 250.0 ms', ''])
                    sent = {'delta': EXPECTED['since-start'][2]}.get(form, expected[2])
                    self.assertEqual(spy_notices(out), [(None, 'never answered: getlist (commandid 2), sent %s'
                                                         % sent)])

    def test_json_lines_rewrites_either_form_with_the_offset(self):
        for times in (OLD_FORM, NEW_FORM):
            status, out, err = replay_utc(recording(times), '--json-lines')
            self.assertEqual(status, 0, err)
            records = [json.loads(text) for text in out.splitlines()]
            self.assertEqual([record['time'] for record in records[:3]],
                             ['2026-11-27T13:00:00.000000+00:00', '2026-11-27T13:00:00.250000+00:00',
                              '2026-11-27T13:00:01.500000+00:00'])
            self.assertEqual(records[1]['reply_to'], {'class': 'login_id', 'function': None, 'ms': 250.0})
            self.assertEqual(records[3]['event'], 'unanswered')
            status, again, err = replay_utc(out.encode(), '--json-lines')       # a replay of a replay: the same
            self.assertEqual((status, again), (0, out), err)


class EventRecordTest(unittest.TestCase):
    """Records of events: one of a later version is skipped, one that is not a string is a bad line."""

    def test_unknown_event_skipped_bad_event_said(self):
        first = recording(OLD_FORM)
        later = json.dumps({'time': OLD_FORM[2], 'session': 1, 'event': 'resumed', 'by': 'x'}).encode() + b'\n'
        status, out, err = replay_utc(first + later)
        self.assertEqual((status, err), (0, ''))
        self.assertEqual(len(header_times(out)), 3)
        bad = json.dumps({'time': OLD_FORM[2], 'session': 1, 'event': 5}).encode() + b'\n'
        status, out, err = replay_utc(first + bad)
        self.assertEqual((status, err), (1, 'ctispy: stdin, line 4: "event" must be a string\n'))

    def test_start_and_end_records_tell_the_replayed_session(self):
        events = [{'time': OLD_FORM[0], 'session': 1, 'event': 'start', 'client': '10.0.0.1:4000',
                   'server': 'xivo:5003\x1b'},
                  {'time': OLD_FORM[2], 'session': 1, 'event': 'end', 'closed_by': 'server', 'error': None}]
        data = json.dumps(events[0]).encode() + b'\n' + recording(OLD_FORM) + json.dumps(events[1]).encode() + b'\n'
        status, out, err = replay_utc(data, '--loop')
        self.assertEqual((status, err), (0, ''))
        self.assertEqual([text for _, text in spy_notices(out) if 'session' in text],
                         ['session #1 started: client 10.0.0.1:4000, server xivo:5003\\x1b',
                          'session #1 ended: the server closed'])


class LoopTest(unittest.TestCase):
    """With --loop: every header tagged from the first message on, each session's start and end noted."""

    def run_overlapping(self, *args):
        """Two sessions at once (the first closed by its client, the second by its server), then a third
        reset by its client; return (stdout text, [(client address, server address)] of the first two)."""
        with Tool('ctispy', '--loop', *args) as tool:
            upstream = '127.0.0.1:%d' % tool.listener.getsockname()[1]
            first = play(tool, [request(1, 'login_id')])
            second = play(tool, [request(1, 'login_id'), answer(1, 'login_id')])
            keepalive = line(**{'class': 'keepalive'})
            for client, server in (first, second):
                client.sendall(keepalive)
                recv_exactly(server, len(keepalive))
            peers = [('127.0.0.1:%d' % pair[0].getsockname()[1], upstream) for pair in (first, second)]
            close_session(self, *first)
            second[1].shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(second[0]), b'')
            second[0].close()
            self.assertEqual(recv_until_eof(second[1]), b'')
            second[1].close()
            json_lines = '--json-lines' in args
            # the second session's end is shown before the stop can come (both sides closing is not its end yet)
            seen = tool.read_stdout_until(b'"session": 2, "event": "end"' if json_lines else b'session #2 ended')
            third = play(tool, [request(9, 'x')])
            reset(third[0])
            recv_until_eof_quietly(third[1])
            seen += tool.read_stdout_until(b'"session": 3, "event": "end"' if json_lines else b'session #3 ended')
            status, rest, err = tool.stop()
        self.assertEqual(status, 0, err)
        return (seen + rest).decode('utf-8'), peers

    def test_tags_and_notices(self):
        out, peers = self.run_overlapping()
        entries = parse_spy_output(out)
        self.assertEqual(sorted(tag for tag, _, _ in entries), ['1', '1', '2', '2', '2', '3'])
        notices = spy_notices(out)
        starts = [(tag, text) for tag, text in notices if 'started' in text]
        self.assertEqual(starts[:2], [(str(number), 'session #%d started: client %s, server %s' % ((number,) + pair))
                                      for number, pair in enumerate(peers, 1)])
        self.assertEqual(starts[2][0], '3')
        ends = dict((tag, text) for tag, text in notices if 'ended' in text)     # in the order the sessions ended
        self.assertEqual(sorted(ends), ['1', '2', '3'])
        self.assertEqual((ends['1'], ends['2']), ('session #1 ended: the client closed',
                                                  'session #2 ended: the server closed'))
        self.assertRegex(ends['3'], r'^session #3 ended: client connection failed: ')
        unanswered = [(tag, text) for tag, text in notices if 'never answered' in text]
        self.assertEqual([tag for tag, _ in unanswered], ['1', '3'])
        self.assertRegex(unanswered[0][1], r'^never answered: login_id \(commandid 1\), sent \d\d:\d\d:\d\d\.\d{6}$')
        lines = out.split('\n')
        for number in '123':                # each session's start before its first message, its end after its last
            own = [index for index, text in enumerate(lines) if text.startswith('[#%s] ' % number)]
            self.assertIn('started', lines[own[0]])
            self.assertIn('ended', lines[own[-1]])
        self.assertTrue(all(HEADER.match(text).group(1) for text in lines if HEADER.match(text)))

    def test_a_session_open_when_the_tool_stops(self):
        with Tool('ctispy', '--loop') as tool:
            client, server = play(tool, [request(1, 'login_id')])
            seen = tool.read_stdout_until(b'login_id')
            status, rest, err = tool.stop()
            client.close()
            server.close()
        self.assertEqual(status, 0, err)
        notices = [text for _, text in spy_notices((seen + rest).decode('utf-8'))]
        self.assertEqual(notices[-2:], [notices[-2], 'session #1 ended: the tool stopped'])
        self.assertTrue(notices[-2].startswith('never answered: login_id (commandid 1)'), notices)

    def test_json_lines_records_read_back(self):
        out, peers = self.run_overlapping('--json-lines')
        records = [json.loads(text) for text in out.splitlines()]
        events = [(record['session'], record['event']) for record in records if 'event' in record]
        self.assertEqual(sorted(events), [(1, 'end'), (1, 'start'), (1, 'unanswered'), (2, 'end'), (2, 'start'),
                                          (3, 'end'), (3, 'start'), (3, 'unanswered')])
        by_event = {(record['session'], record['event']): record for record in records if 'event' in record}
        for number, pair in enumerate(peers, 1):
            self.assertEqual((by_event[number, 'start']['client'], by_event[number, 'start']['server']), pair)
        self.assertEqual((by_event[1, 'end']['closed_by'], by_event[1, 'end']['error']), ('client', None))
        self.assertEqual(by_event[2, 'end']['closed_by'], 'server')
        self.assertRegex(by_event[3, 'end']['error'], '^client connection failed')
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'loop.jsonl')
            with open(path, 'w', encoding='utf-8') as file:
                file.write(out)
            status, replayed, err = run_tool('ctispy', '--read', path, '--loop')
            self.assertEqual((status, err), (0, ''))
            notices = [text for _, text in spy_notices(replayed.decode('utf-8'))]
            self.assertIn('session #1 started: client %s, server %s' % peers[0], notices)
            self.assertIn('session #2 ended: the server closed', notices)
            self.assertEqual(len([text for text in notices if 'never answered' in text]), 2)
            status, again, err = run_tool('ctispy', '--read', path, '--json-lines', '--loop')
            self.assertEqual((status, again.decode('utf-8')), (0, out), err)
            for tool, extra in (('ctistat', []), ('ctisave', [os.path.join(folder, 'c'), os.path.join(folder, 's')])):
                status, _, err = run_tool(tool, '--read', path, *extra)
                self.assertEqual((status, err), (0, ''), tool)


def recv_until_eof_quietly(sock):
    try:
        recv_until_eof(sock)
    except OSError:
        pass
    sock.close()


ONELINE = re.compile(r'^(\d\d:\d\d:\d\d\.\d{6}) (?:\[#(\d+)\] )?(C>S|S>C) (.*)$')
ONELINE_STEPS = [('server', b'XiVO CTI Server Version 1.2.3\n'), request(1, 'login_id', userlogin='alice'),
                 answer(1, 'login_id', sessionid='s', timenow=1), request(2, 'getlist', function='listid'),
                 answer(2, 'getlist', function='listid', error_string='unknown'), request(3, 'keepalive')]


class OnelineTest(unittest.TestCase):

    def oneline(self, *args):
        """[(tag, direction, body, mark)] of each message line, and the other lines."""
        shown, others = [], []
        for text in spy(self, ONELINE_STEPS, '--oneline', *args).splitlines():
            match = ONELINE.match(text)
            if match:
                body, _, mark = match.group(4).partition('  # ')
                shown.append((match.group(2), match.group(3), body, mark))
            else:
                others.append(text)
        return shown, others

    def test_every_message_on_one_line(self):
        shown, others = self.oneline()
        self.assertEqual([(tag, direction) for tag, direction, _, _ in shown],
                         [(None, 'S>C'), (None, 'C>S'), (None, 'S>C'), (None, 'C>S'), (None, 'S>C'), (None, 'C>S')])
        self.assertEqual(shown[0][2], 'XiVO CTI Server Version 1.2.3')
        self.assertEqual(json.loads(shown[1][2]), {'class': 'login_id', 'commandid': 1, 'userlogin': 'alice'})
        self.assertRegex(shown[2][3], '^%s$' % REPLY % 'login_id')
        self.assertRegex(shown[4][3], '^%s, ERROR: unknown$' % REPLY % 'getlist/listid')
        self.assertEqual(len(others), 1)
        self.assertRegex(others[0], r'^\d\d:\d\d:\d\d\.\d{6} -- never answered: keepalive \(commandid 3\), sent ')

    def test_with_every_filter(self):
        cases = [(['--include', 'class=login_id'], ['C>S', 'S>C'], None),
                 (['--exclude', 'class=login_id'], ['S>C', 'C>S', 'S>C', 'C>S'], None),
                 (['--strip', 'userlogin', '--strip', 'timenow'], ['S>C', 'C>S', 'S>C', 'C>S', 'S>C', 'C>S'], None),
                 (['--no-client'], ['S>C', 'S>C', 'S>C'], None),
                 (['--no-server'], ['C>S', 'C>S', 'C>S'], None),
                 (['--time', 'since-start', '--slow', '0'], ['S>C', 'C>S', 'S>C', 'C>S', 'S>C', 'C>S'], None)]
        for args, directions, tag in cases:
            with self.subTest(args=args):
                shown, _ = self.oneline(*args)
                self.assertEqual([direction for _, direction, _, _ in shown], directions)
                self.assertTrue(all(entry[0] == tag for entry in shown))
                messages = [json.loads(body) for _, _, body, _ in shown if body.startswith('{')]
                if '--strip' in args:
                    self.assertFalse([message for message in messages
                                      if 'userlogin' in message or 'timenow' in message])
                if '--no-client' in args:
                    self.assertRegex(shown[1][3], REPLY % 'login_id')
                if '--slow' in args:
                    self.assertIn('SLOW', shown[2][3])

    def test_oneline_with_loop_tags_each_line(self):
        with Tool('ctispy', '--loop', '--oneline') as tool:
            client, server = play(tool, ONELINE_STEPS[:3])
            close_session(self, client, server)
            seen = tool.read_stdout_until(b'ended')
            status, rest, err = tool.stop()
        self.assertEqual(status, 0, err)
        lines = (seen + rest).decode('utf-8').splitlines()
        self.assertRegex(lines[0], r'^\d\d:\d\d:\d\d\.\d{6} \[#1\] -- session #1 started: client 127\.0\.0\.1:\d+, ')
        self.assertEqual([ONELINE.match(text).group(2) for text in lines[1:4]], ['1', '1', '1'])
        self.assertRegex(lines[4], r'^\d\d:\d\d:\d\d\.\d{6} \[#1\] -- session #1 ended: the client closed$')

    def test_incompatible_options_are_usage_errors(self):
        for args in (['--oneline', '--pretty-print'], ['--oneline', '--raw'], ['--oneline', '--json-lines'],
                     ['--json-lines', '--time', 'delta'], ['--raw', '--slow', '5'], ['--slow', 'fast'],
                     ['--slow', '-1'], ['--time', 'noon']):
            with self.subTest(args=args):
                status, out, err = run_tool('ctispy', 'xivo', *args)
                self.assertEqual((status, out), (2, b''), err)
                self.assertNotIn('Traceback', err)
                self.assertTrue(err.strip().splitlines()[-1].startswith('ctispy: error: '), err)


class PureTest(unittest.TestCase):
    """The I/O-free parts: times shown, durations, header marks."""

    class Session:
        number = 1
        opened = 1000.0

    def test_clock_forms(self):
        session = self.Session()
        self.assertEqual(Clock('epoch').stamp(session, 1000.25), '1000.250000')
        self.assertEqual(Clock('since-start').stamp(session, 1000 + 3723.5), '01:02:03.500000')
        delta = Clock('delta')
        self.assertEqual([delta.stamp(session, when) for when in (1000.5, 1001.0, 1000.999)],
                         ['00:00:00.500000', '00:00:00.500000', '-00:00:00.001000'])
        self.assertEqual(delta.stamp(session, 1002.0, message=False), '00:00:01.001000')
        self.assertEqual(delta.stamp(session, 1002.5), '00:00:01.501000')      # a notice does not move it
        self.assertEqual(duration(100 * 3600 * 1000000), '100:00:00.000000')

    def test_microseconds_as_recordings_keep_them(self):
        for when in (1795784400.0000005, 1795784400.1234565, 1795784400.9999996, 1.5e-6):
            self.assertEqual(microseconds(when), microseconds(record_time(iso_time(when))))
            self.assertEqual(microseconds(when) % 1000000, datetime.datetime.fromtimestamp(when).microsecond)

    def test_mark_parts(self):
        reply = Reply(Request('getlist', 'listid', 1, 0.0), 12.04)
        self.assertEqual(mark_parts(Mark(reply, None, False)), ['reply to getlist/listid, 12.0 ms'])
        self.assertEqual(mark_parts(Mark(reply, 'x' * 300, True)),
                         ['reply to getlist/listid, 12.0 ms', 'SLOW', 'ERROR: ' + 'x' * 200 + '...'])
        self.assertEqual(mark_parts(Mark(None, '\x1b', False), colour=True), ['\x1b[1;31mERROR: \\x1b\x1b[0m'])


if __name__ == '__main__':
    unittest.main()
