"""ctistat's report of what went wrong: functions of each class, error answers, requests never answered, the
slowest answers and biggest messages, the timeline, start time, addresses and who closed.  The real script
between a scripted client and server (text and --json), a replay, and unit tests of the pure parts."""

import datetime
import json
import os
import re
import signal
import socket
import tempfile
import unittest

from ctiproxy.filters import CLIENT, SERVER
from ctiproxy.pairing import MAX_WAITING
from ctiproxy.stats import (FIRST_ERRORS, NO_REQUEST, SPARK_WIDTH, TOP, ErrorAnswers, SessionStats, Timeline, TopN,
                            format_report, sparkline)
from tests.harness import Tool, oracle_message, recv_until_eof, run_tool, seeded_rng
from tests.test_faults import stat_counts
from tests.test_pairing import answer, request
from tests.test_stat import C, S, StatTestCase, Traffic, parse_report, split_reports

HUGE = b'x' * 5000
# Error answers of each shape, an answer before its request, two requests with one commandid, and names from
# the network that a terminal would obey (ESC, BEL, a right-to-left override).
SCRIPT = [
    (S, b'XiVO CTI Server Version 1.2.3\n'),
    (C, b'{"class": "login_id", "commandid": 1}\n'),
    (S, b'{"class": "login_id", "replyid": 1, "status": "ok"}\n'),                  # a normal answer
    (S, b'{"class": "getlist", "replyid": 3, "error_string": "early"}\n'),          # before its request
    (C, b'{"class": "getlist", "function": "updateconfig", "commandid": 3}\n'),     # never answered
    (C, b'{"class": "getlist", "function": "listid", "commandid": 7}\n'),           # commandid 7...
    (C, b'{"class": "getlist", "function": "updateconfig", "commandid": 7}\n'),     # ... twice: never answered
    (S, b'{"class": "getlist", "replyid": 7, "error_string": "unknown listname"}\n'),   # answers listid
    (C, b'{"class": "ipbxcommand", "commandid": 8}\n'),
    (S, b'{"class": "ipbxcommand", "replyid": 8, "status": "ko"}\n'),
    (C, b'{"class": "nonsense", "commandid": 9}\n'),
    (S, b'{"class": "error", "replyid": 9}\n'),
    (C, b'{"class": "keepalive", "commandid": 11}\n'),
    (S, b'{"class": "keepalive", "replyid": 11, "error_string": {"code": 3}}\n'),
    (C, b'{"class": "\\u001b[31mred", "function": "\\u202eevil", "commandid": "\\u001b]0;t\\u0007"}\n'),
    (S, b'{"class": "error", "error_string": "\\u001b[2Jwiped \\u202e"}\n'),       # answers nothing
    (C, b'{"class": "history", "commandid": 10}\n'),
    (S, b'{"class": "history", "replyid": 10, "history": "' + HUGE + b'"}\n'),
    (S, b'{"class": "getlist", "function": "updatestatus"}\n'),
]
ERRORS = {
    NO_REQUEST: {'count': 2, 'first': ['early', '\x1b[2Jwiped \u202e']},
    'getlist/listid': {'count': 1, 'first': ['unknown listname']},
    'ipbxcommand': {'count': 1, 'first': ['status ko']},
    'nonsense': {'count': 1, 'first': ['error']},
    'keepalive': {'count': 1, 'first': ['{"code": 3}']},
}
UNANSWERED = [('getlist', 'updateconfig', 3), ('getlist', 'updateconfig', 7),
              ('\x1b[31mred', '\u202eevil', '\x1b]0;t\x07')]
REPLIES = {'login_id': 1, 'getlist': 1, 'ipbxcommand': 1, 'nonsense': 1, 'keepalive': 1, 'history': 1}
FUNCTIONS = {C: {'getlist': {'updateconfig': 2, 'listid': 1}, '\x1b[31mred': {'\u202eevil': 1}},
             S: {'getlist': {'updatestatus': 1}}}
COUNTS = {side: stat_counts(b''.join(data for sender, data in SCRIPT if sender == side)) for side in (C, S)}
UNSAFE = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]')


def sent_messages(steps, side):
    """[(size, class)] of the JSON objects side sent, as ctistat frames them (the line without its newline)."""
    found = []
    for sender, data in steps:
        for line in data.split(b'\n')[:-1] if sender == side else ():
            message = oracle_message(line)
            if message is not None:
                found.append((len(line), message.get('class')))
    return found


def section(text, title):
    """The lines of the text report's section whose first line starts with title, up to the next blank line."""
    lines = text.split('\n')
    for index, line in enumerate(lines):
        if line.startswith(title):
            end = lines.index('', index)
            return lines[index:end]
    raise AssertionError('no section %r in %s' % (title, text))


def local_time(iso):
    """A report's time (ISO 8601 with its offset) as a timestamp."""
    moment = datetime.datetime.strptime(iso[:26], '%Y-%m-%dT%H:%M:%S.%f')
    offset = iso[26:]
    if not re.match(r'^[+-]\d\d:\d\d$', offset):
        raise AssertionError('no UTC offset in %r' % iso)
    sign = 1 if offset[0] == '+' else -1
    delta = datetime.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    return (moment - sign * delta).replace(tzinfo=datetime.timezone.utc).timestamp()


class StatReportLiveTest(StatTestCase):
    """The real ctistat between a scripted client and server."""

    def run_session(self, *options, steps=SCRIPT, server_closes=False):
        """One session; return (stdout text, traffic, the client's address 'host:port')."""
        with Tool('ctistat', *options) as tool:
            client, server = tool.connect()
            address = '127.0.0.1:%d' % client.getsockname()[1]
            traffic = Traffic(self, client, server, seeded_rng(self))
            traffic.play(steps)
            first, second = (server, client) if server_closes else (client, server)
            first.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(second), b'')
            second.close()
            self.assertEqual(recv_until_eof(first), b'')
            first.close()
            status, out, err = tool.finish()
            self.server_address = '127.0.0.1:%d' % tool.listener.getsockname()[1]
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        return out.decode('utf-8'), traffic, address

    def test_json_report(self):
        out, traffic, address = self.run_session('--json')
        report = json.loads(out)
        self.assertJsonReport(report)
        self.assertCounts(report, traffic, COUNTS, replies=REPLIES, unanswered=len(UNANSWERED))
        for side in (C, S):
            self.assertEqual(report[side]['functions'], FUNCTIONS[side])
        self.assertEqual(report['errors'], ERRORS)
        self.assertEqual([(row['class'], row['function'], row['commandid']) for row in report['unanswered_requests']],
                         UNANSWERED)
        self.assertEqual((report['client_address'], report['server_address']), (address, self.server_address))
        self.assertEqual(report['closed_by'], 'client')
        started = local_time(report['started'])
        times = [local_time(row['time']) for row in report['unanswered_requests']]
        self.assertEqual(times, sorted(times))
        self.assertTrue(started <= times[0] <= started + report['duration'], (started, times))
        self.assertSlowest(report)
        self.assertBiggest(report)
        self.assertTimeline(report)

    def assertSlowest(self, report):
        slowest = report['slowest']
        self.assertEqual(len(slowest), TOP)
        self.assertEqual([row['ms'] for row in slowest], sorted((row['ms'] for row in slowest), reverse=True))
        answered = {('login_id', None, 1), ('getlist', 'listid', 7), ('ipbxcommand', None, 8), ('nonsense', None, 9),
                    ('keepalive', None, 11), ('history', None, 10)}
        for row in slowest:
            self.assertIn((row['class'], row['function'], row['commandid']), answered)
            self.assertGreaterEqual(row['ms'], 0)
            local_time(row['time'])

    def assertBiggest(self, report):
        expected = sorted(((size, C) for size, _ in sent_messages(SCRIPT, C)), reverse=True)
        expected = sorted(expected + [(size, S) for size, _ in sent_messages(SCRIPT, S)], reverse=True)[:TOP]
        biggest = report['biggest']
        self.assertEqual([row['bytes'] for row in biggest], [size for size, _ in expected])
        self.assertEqual((biggest[0]['class'], biggest[0]['direction']), ('history', S))
        self.assertGreater(biggest[0]['bytes'], len(HUGE))

    def assertTimeline(self, report):
        timeline = report['timeline']
        self.assertGreater(timeline['bucket_seconds'], 0)
        for side in (C, S):
            counts = timeline[side]
            self.assertEqual(sum(counts), report[side]['messages'])
            self.assertTrue(1 <= len(counts) <= SPARK_WIDTH, counts)
            self.assertGreaterEqual(len(counts) * timeline['bucket_seconds'], report['duration'] - 1e-6)
        self.assertEqual(len(timeline[C]), len(timeline[S]))

    def test_text_report(self):
        """Every new field in the text, with the network's names escaped; 'invalid', as in --json."""
        out, traffic, address = self.run_session()
        self.assertIsNone(UNSAFE.search(out), 'a control character from the network reached the terminal')
        reports = split_reports(out)
        self.assertEqual(len(reports), 1, out)
        text = reports[0]
        report = parse_report(text)
        shown = {side: dict(COUNTS[side], classes={kind.replace('\x1b', '\\x1b'): count
                                                   for kind, count in COUNTS[side]['classes'].items()})
                 for side in (C, S)}
        self.assertCounts(report, traffic, shown, replies=REPLIES, unanswered=len(UNANSWERED))
        self.assertEqual(report[C]['functions'], {'getlist': {'updateconfig': 2, 'listid': 1},
                                                  '\\x1b[31mred': {'\\u202eevil': 1}})
        self.assertEqual(report[S]['functions'], FUNCTIONS[S])
        self.assertRegex(text.split('\n')[0], r'^Session #1, client %s, server %s, ' % (address, self.server_address))
        self.assertRegex(text, r'\nStarted \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d; the client closed it')
        self.assertEqual(section(text, 'Error answers'), [
            'Error answers: 6',
            '  (no request)          2  "early", "\\u001b[2Jwiped \\u202e"',
            '  getlist/listid        1  "unknown listname"',
            '  ipbxcommand           1  "status ko"',
            '  nonsense              1  "error"',
            '  keepalive             1  "{\\"code\\": 3}"'])
        never = section(text, 'Requests never answered')
        self.assertEqual(never[0], 'Requests never answered: 3')
        self.assertEqual([re.sub(r'^  \d\d:\d\d:\d\d\.\d{6}  ', '', line) for line in never[1:]], [
            'getlist/updateconfig  commandid 3', 'getlist/updateconfig  commandid 7',
            '\\x1b[31mred/\\u202eevil  commandid "\\u001b]0;t\\u0007"'])
        slowest = section(text, 'Slowest answers')
        self.assertEqual(len(slowest), 1 + TOP)
        for line in slowest[1:]:
            self.assertRegex(line, r'^ +\d+\.\d{3} ms  \S+  commandid \d+  \(asked \d\d:\d\d:\d\d\.\d{6}\)$')
        biggest = section(text, 'Biggest messages')
        self.assertEqual(len(biggest), 1 + TOP)
        self.assertRegex(biggest[1], r'^ +%d bytes  Server > Client  history  \(' % max(sent_messages(SCRIPT, S))[0])
        timeline = section(text, 'Messages per ')
        self.assertEqual(len(timeline), 3)
        for line, arrows in zip(timeline[1:], ('Client > Server', 'Server > Client')):
            match = re.match(r'^  %s \|([ \u2581-\u2588]+)\| peak \S+/s$' % arrows, line)
            self.assertTrue(match, line)
            self.assertLessEqual(len(match.group(1)), SPARK_WIDTH)

    def test_server_closes_first(self):
        out, _, _ = self.run_session('--json', steps=SCRIPT[:3], server_closes=True)
        self.assertEqual(json.loads(out)['closed_by'], 'server')
        out, _, _ = self.run_session(steps=SCRIPT[:3], server_closes=True)
        self.assertIn('; the server closed it', out)

    def test_the_tool_closes_the_sessions_open_at_its_stop(self):
        """--loop: the first session ends by itself (its server closes first); the second is open at Ctrl-C."""
        with Tool('ctistat', '--loop', '--json') as tool:
            client, server = tool.connect()
            Traffic(self, client, server, seeded_rng(self)).play(SCRIPT[:3])
            server.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(client), b'')
            client.close()
            early = tool.read_stdout_until(b'\n')
            client, server = tool.connect()
            Traffic(self, client, server, seeded_rng(self)).play(SCRIPT[:3])
            status, out, err = tool.stop(signal.SIGINT)
            client.close()
            server.close()
        self.assertEqual(status, 0, err)
        reports = [json.loads(line) for line in (early + out).decode('utf-8').splitlines()]
        self.assertEqual([(report['session'], report['closed_by']) for report in reports], [(1, 'server'), (2, 'tool')])
        with Tool('ctistat') as tool:
            client, server = tool.connect()
            Traffic(self, client, server, seeded_rng(self)).play(SCRIPT[:3])
            status, out, err = tool.stop(signal.SIGINT)
            client.close()
            server.close()
        self.assertIn('; the tool closed it (stopped by a signal)\n', out.decode('utf-8'))

    def test_many_unanswered_listed_in_json_and_the_first_in_text(self):
        steps = [(C, b''.join(b'{"class": "getlist", "commandid": %d}\n' % number for number in range(25)))]
        out, _, _ = self.run_session('--json', steps=steps)
        report = json.loads(out)
        self.assertEqual([row['commandid'] for row in report['unanswered_requests']], list(range(25)))
        out, _, _ = self.run_session(steps=steps)
        never = section(out, 'Requests never answered')
        self.assertEqual(len(never), 1 + 20 + 1, never)
        self.assertTrue(never[20].endswith('getlist  commandid 19'), never[20])
        self.assertEqual(never[21], '  and 5 more (--json lists them all)')


class StatReportReplayTest(unittest.TestCase):
    """ctistat --read: the same report from a recording, which knows neither addresses nor who closed."""

    def test_replayed_session(self):
        records = [('client', {'class': 'getlist', 'function': 'listid', 'commandid': 1}),
                   ('server', {'class': 'getlist', 'replyid': 1, 'status': 'ko'}),
                   ('client', {'class': 'login_pass', 'commandid': 2})]
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'session.jsonl')
            with open(path, 'w') as recording:
                for number, (direction, message) in enumerate(records):
                    recording.write(json.dumps({'time': '2026-11-27T13:01:02.%06d' % (number * 1000), 'session': 1,
                                                'direction': direction, 'message': message}) + '\n')
            status, out, err = run_tool('ctistat', '--read', path, '--json')
            self.assertEqual(status, 0, err)
            text_status, text, err = run_tool('ctistat', '--read', path)
            self.assertEqual(text_status, 0, err)
        report = json.loads(out.decode('utf-8'))
        self.assertEqual((report['client_address'], report['server_address'], report['closed_by']), (None, None, None))
        self.assertTrue(report['started'].startswith('2026-11-27T13:01:02.000000'), report['started'])
        self.assertEqual(report['errors'], {'getlist/listid': {'count': 1, 'first': ['status ko']}})
        self.assertEqual(report['slowest'][0]['ms'], 1.0)
        self.assertEqual([row['class'] for row in report['unanswered_requests']], ['login_pass'])
        text = text.decode('utf-8')
        self.assertRegex(text, r'^Session #1, 0\.002 s\nStarted 2026-11-27 13:01:02\.000000[+-]\d\d:\d\d\n')


# -- the pure parts --

class TopNTest(unittest.TestCase):

    def test_keeps_the_largest_earliest_first_among_equals(self):
        top = TopN(3)
        for value, item in [(5, 'a'), (1, 'b'), (9, 'c'), (5, 'd'), (7, 'e'), (5, 'f'), (2, 'g')]:
            top.add(value, item)
        self.assertEqual(top.largest(), ['c', 'e', 'a'])

    def test_bounded(self):
        top = TopN(TOP)
        for value in range(100000):
            top.add(value % 977, value)
        self.assertEqual(len(top), TOP)
        self.assertEqual(top.largest(), [976, 976 + 977, 976 + 2 * 977, 976 + 3 * 977, 976 + 4 * 977])


class TimelineTest(unittest.TestCase):

    def test_buckets_merge_pairwise_and_keep_every_message(self):
        timeline = Timeline(1000.0, width=4, bucket=1.0)
        for when in (1000.0, 1000.5, 1001.2, 1003.9):
            timeline.add(CLIENT, when)
        self.assertEqual((timeline.counts[CLIENT], timeline.bucket), ([2, 1, 0, 1], 1.0))
        timeline.add(SERVER, 1004.0)           # the fifth second: two seconds a bucket
        self.assertEqual((timeline.counts[CLIENT], timeline.counts[SERVER], timeline.bucket), ([3, 1], [0, 0, 1], 2.0))
        report = timeline.as_dict(1010.0)      # the session lasted 10 s: four seconds a bucket
        self.assertEqual(report, {'bucket_seconds': 4.0, CLIENT: [4, 0, 0], SERVER: [0, 1, 0]})

    def test_a_long_session_stays_within_its_width(self):
        timeline = Timeline(0.0)
        for second in range(0, 30 * 24 * 3600, 7):       # a month, a message every 7 s
            timeline.add(SERVER, float(second))
        report = timeline.as_dict(30 * 24 * 3600.0)
        self.assertLessEqual(len(timeline.counts[SERVER]), SPARK_WIDTH)
        self.assertEqual(len(report[SERVER]), len(report[CLIENT]))
        self.assertLessEqual(len(report[SERVER]), SPARK_WIDTH)
        self.assertEqual(sum(report[SERVER]), len(range(0, 30 * 24 * 3600, 7)))
        self.assertGreaterEqual(report['bucket_seconds'] * SPARK_WIDTH, 30 * 24 * 3600)

    def test_a_short_session_gets_short_buckets(self):
        timeline = Timeline(0.0)
        timeline.add(CLIENT, 0.010)
        report = timeline.as_dict(0.020)
        self.assertLess(report['bucket_seconds'], 0.001)
        self.assertEqual(sum(report[CLIENT]), 1)


class SparklineTest(unittest.TestCase):

    def test_levels(self):
        self.assertEqual(sparkline([0, 1, 4, 8, 2], 8), ' \u2581\u2584\u2588\u2582')
        self.assertEqual(sparkline([0, 0], 0), '  ')
        self.assertEqual(sparkline([1, 1000], 1000), '\u2581\u2588')     # one message still shows


class ErrorCountTest(unittest.TestCase):

    def test_error_answers_of_each_shape(self):
        stats = SessionStats(1, 0.0)
        stats.add_line(CLIENT, 0.0, request(1, 'login_id'))
        stats.add_line(CLIENT, 0.0, request(2, function='updateconfig'))
        stats.add_line(CLIENT, 0.0, request(3, 'ipbxcommand'))
        stats.add_line(CLIENT, 0.0, request(4, 'bogus'))
        stats.add_line(SERVER, 0.1, answer(1, 'login_id', error_string='user_not_found'))
        stats.add_line(SERVER, 0.2, answer(2, status='KO'))
        stats.add_line(SERVER, 0.3, answer(3, 'ipbxcommand', status='ok'))          # not an error
        stats.add_line(SERVER, 0.4, answer(4, 'error'))
        stats.add_line(SERVER, 0.5, {'class': 'error', 'error_string': 'not a JSON object'})
        stats.add_line(SERVER, 0.6, {'class': 'getlist', 'function': 'updatestatus', 'status': {'x': 1}})
        report = stats.report()
        self.assertEqual(report['errors'], {
            'login_id': {'count': 1, 'first': ['user_not_found']},
            'getlist/updateconfig': {'count': 1, 'first': ['status KO']},
            'bogus': {'count': 1, 'first': ['error']},
            NO_REQUEST: {'count': 1, 'first': ['not a JSON object']}})
        self.assertEqual(sum(row['count'] for row in report['replies'].values()), 4)

    def test_first_texts_kept_and_cut(self):
        errors = ErrorAnswers()
        for number in range(10):
            errors.add('getlist', 'e%d' % number + 'x' * (300 if number == 1 else 0))
        row = errors.as_dict()['getlist']
        self.assertEqual(row['count'], 10)
        self.assertEqual(len(row['first']), FIRST_ERRORS)
        self.assertEqual(row['first'][0], 'e0')
        self.assertTrue(row['first'][1].endswith('...') and len(row['first'][1]) < 300, row['first'][1])

    def test_same_commandid_and_answers_before_requests(self):
        stats = SessionStats(1, 0.0)
        stats.add_line(SERVER, 0.0, answer(5, error_string='too early'))     # nothing waits: no request
        stats.add_line(CLIENT, 1.0, request(5, function='listid'))
        stats.add_line(CLIENT, 2.0, request(5, function='updateconfig'))
        stats.add_line(SERVER, 3.0, answer(5))
        report = stats.report()
        self.assertEqual(list(report['errors']), [NO_REQUEST])
        self.assertEqual([(row['function'], row['ms']) for row in report['slowest']], [('listid', 2000.0)])
        self.assertEqual([row['function'] for row in report['unanswered_requests']], ['updateconfig'])


class BoundsTest(unittest.TestCase):

    def test_a_long_session_keeps_bounded_tops_and_timeline(self):
        """200,000 requests and answers over a day: the tops and the timeline stay the same size."""
        stats = SessionStats(1, 0.0)
        for number in range(200000):
            when = number * 0.432
            stats.add_line(CLIENT, when, request(number, function='listid'), size=40 + number % 1000)
            stats.add_line(SERVER, when + (number % 333) / 1000, answer(number), size=30)
        stats.ended = 200000 * 0.432
        self.assertEqual((len(stats.slowest), len(stats.biggest)), (TOP, TOP))
        self.assertTrue(all(len(counts) <= SPARK_WIDTH for counts in stats.timeline.counts.values()))
        self.assertLessEqual(stats.pairing.kept, MAX_WAITING)
        report = stats.report()
        self.assertEqual([row['bytes'] for row in report['biggest']], [1039] * TOP)
        self.assertEqual(sum(report['timeline'][CLIENT]), 200000)

    def test_json_report_is_strict_json(self):
        """A commandid of NaN or Infinity (which Python's json reads) is listed as its text."""
        stats = SessionStats(1, 0.0)
        for number in (float('nan'), float('inf'), -1.5):
            stats.add_line(CLIENT, 0.0, request(number))
        listed = json.loads(json.dumps(stats.report(), allow_nan=False))['unanswered_requests']
        self.assertEqual([row['commandid'] for row in listed], ['NaN', 'Infinity', -1.5])

    def test_timeline_text(self):
        stats = SessionStats(1, 0.0)
        for when in (0.0, 0.01, 0.01, 0.2):
            stats.add_line(SERVER, when, answer(1), size=20)
        stats.ended = 0.25
        lines = section(format_report(stats.report()), 'Messages per ')
        # 0.25 s in buckets of 1/256 s would take 65 > SPARK_WIDTH: 33 of 1/128 s
        self.assertEqual(lines[0], 'Messages per 1/128 s, from start to end (\u2588 = 2)')
        self.assertEqual(lines[1], '  Client > Server |%s| peak 0/s' % (' ' * 33))
        self.assertEqual(lines[2], '  Server > Client |\u2584\u2588%s\u2584%s| peak 256/s' % (' ' * 23, ' ' * 7))

    def test_text_report_escapes_the_network(self):
        stats = SessionStats(1, 0.0)
        stats.add_line(CLIENT, 0.0, request('\x9b2J', '\x1b[1mbold', function='\u2066x'), size=50)
        stats.add_line(SERVER, 0.1, answer('\x9b2J', '\x1b[1mbold', error_string='\x07\u202e'), size=50)
        stats.add_line(CLIENT, 0.2, request(2, '\u202ekind', function='\x1bf'), size=50)
        stats.ended = 1.0
        text = format_report(stats.report(), 'client \x1b[2J')
        self.assertIsNone(UNSAFE.search(text), text)
        self.assertIn('\\x1b[1mbold/\\u2066x', text)
        self.assertIn('"\\u0007\\u202e"', text)
        self.assertIn('commandid "\\u009b2J"', text)
        self.assertIn('\\u202ekind/\\x1bf  commandid 2', text)


if __name__ == '__main__':
    unittest.main()
