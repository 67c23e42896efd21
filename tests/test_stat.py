"""End-to-end tests of ctistat: the real script between a scripted client and server, its reports checked
against the traffic the test sent."""

import json
import re
import signal
import socket
import unittest

from tests.harness import Tool, close_session, random_cuts, recv_exactly, seeded_rng

C, S = 'client', 'server'

# A session, step by step: (side, bytes).  Each step is wholly received by the other side before the next.
# A request is always followed by another step of the client before its answer (and an answer sent early, by
# another step of the server before the request), so that these counts hold even if the relay queued a chunk
# for the analysis only after forwarding it; test_answer_right_after_its_request checks the tight case.
SCRIPT = [
    (S, b'XiVO CTI Server Version 1.2.3\n'),                                        # not JSON
    (C, b'{"class": "login_id", "commandid": 1, "userlogin": "alice"}\n'),          # request 1
    (C, b'{"class": "getlist", "commandid": 2, "function": "listid", "tid": "17"}\r\n'),   # request 2
    (S, b'{"class": "login_id", "replyid": 1, "sessionid": "4c9a", "timenow": 1.5}\n'),   # answers 1
    (C, b'{"class": "getlist", "commandid": 3, "function": "updateconfig"}\n'),     # request 3
    (S, b'{"class": "getlist", "replyid": 2, "timenow": 1.6}\n'),                   # answers 2
    (S, b'{"class": "getlist", "replyid": 2, "timenow": 1.7}\n'),                   # answers nothing: 2 is done
    (C, b'{"class": "keepalive"}\n'),                                               # not a request
    (S, b'{"class": "getlist", "replyid": 3, "status": {"name": "H\xc3\xa9l\xc3\xa8ne \xf0\x9f\x98\x80"}}\n'),
    (C, b'not JSON from the client\n'),
    (C, b'{"class": "login_pass", "commandid": 4, "password": "x"}\n'),            # never answered
    (S, b'{"class": "getlist", "function": "updatestatus", "tid": 17}\n'),         # an event
    (S, b'{"class": "login_id", "replyid": 99}\n'),                                 # answers nothing
    (C, b'{"class": "keepalive", "commandid": 5}\n'),                               # request 5
    (S, b'{"class": "broken", \n'),                                                 # not JSON
    (C, b'{"class": "keepalive"}\n'),
    (S, b'{"class": "ack", "replyid": 5}\n'),                                       # answers 5 (a keepalive)
    (S, b'\xff\xfe not UTF-8\n'),                                                   # not JSON
]
EXPECTED = {
    C: {'messages': 7, 'invalid': 1, 'classes': {'keepalive': 3, 'getlist': 2, 'login_id': 1, 'login_pass': 1},
        'functions': {'getlist': {'listid': 1, 'updateconfig': 1}}},
    S: {'messages': 7, 'invalid': 3, 'classes': {'getlist': 4, 'login_id': 2, 'ack': 1},
        'functions': {'getlist': {'updatestatus': 1}}},
}
EXPECTED_REPLIES = {'getlist': 2, 'login_id': 1, 'keepalive': 1}
EXPECTED_UNANSWERED = 1
ROUND_TRIPS = 500


class Traffic:
    """Plays steps between a client and a server socket, cut at random places, and counts what it sent."""

    def __init__(self, test, client, server, rng, most=16):
        self.test = test
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # each piece goes out at once
        self.most = most
        self.sockets = {C: (client, server), S: (server, client)}
        self.rng = rng
        self.bytes = {C: 0, S: 0}
        self.sends = {C: 0, S: 0}

    def play(self, steps):
        for side, data in steps:
            sender, receiver = self.sockets[side]
            pieces = random_cuts(data, self.rng, self.most)
            for piece in pieces:
                sender.sendall(piece)
            self.test.assertEqual(recv_exactly(receiver, len(data)), data)
            self.bytes[side] += len(data)
            self.sends[side] += len(pieces)

    def close(self):
        close_session(self.test, *self.sockets[C])


# -- reading the human report --

SESSION_LINE = re.compile(r'^Session #(\d+)\b.*?(\d+(?:\.\d+)?) s$')
COUNT_ROW = re.compile(r'^(bytes|chunks|messages|invalid)\s+(\S+)\s+(\S+)$')
CLASS_ROW = re.compile('^(  |    )(\\S.*?)\\s+(\\S+)\\s+(\u2588+)$')      # a class, or (indented more) a class/function
NUMBER = r'(\d+(?:\.\d+)?)'
REPLY_ROW = re.compile(r'^\s+(\S+)\s+(\S+)\s+' + r'\s+'.join([NUMBER] * 4) + '$')
UNANSWERED = re.compile(r'never answered:\s*(\S+)$')
NOT_TIMED = re.compile(r'not timed \(too many waiting\):\s*(\S+)$')


def whole(text):
    """A count as printed: a whole number, nothing else."""
    if not re.match(r'^\d+$', text):
        raise AssertionError('not a whole number: %r' % text)
    return int(text)


def parse_report(text):
    """Read one human report into the shape of the JSON one, plus 'bars': {direction: {class: bar length}}."""
    lines = text.split('\n')
    match = SESSION_LINE.match(lines[0])
    if not match:
        raise AssertionError('no session line: %r' % lines[0])
    report = {'session': int(match.group(1)), 'duration': float(match.group(2)), 'replies': {}, 'unanswered': None,
              'not_timed': 0, C: {'classes': {}, 'functions': {}}, S: {'classes': {}, 'functions': {}},
              'bars': {C: {}, S: {}}}
    columns, section = None, None
    for line in lines[1:]:
        if 'Client > Server' in line and 'Server > Client' in line:
            columns = (C, S) if line.index('Client > Server') < line.index('Server > Client') else (S, C)
            continue
        row = COUNT_ROW.match(line)
        if row and columns:
            for side, value in zip(columns, row.group(2, 3)):
                report[side][row.group(1)] = whole(value)
            continue
        if 'by class' in line:
            section = C if line.startswith('Client > Server') else S
            continue
        if 'count' in line:
            section = 'replies'
            continue
        row = CLASS_ROW.match(line)
        if row and section in (C, S):
            name, count = row.group(2), whole(row.group(3))
            if len(row.group(1)) == 2:
                report[section]['classes'][name] = count
                kind = name
            else:
                report[section]['functions'].setdefault(kind, {})[name[len(kind) + 1:]] = count
            report['bars'][section][name] = len(row.group(4))
            continue
        row = REPLY_ROW.match(line)
        if row and section == 'replies':
            times = [float(value) for value in row.group(3, 4, 5, 6)]
            report['replies'][row.group(1)] = dict(zip(('count', 'min_ms', 'median_ms', 'p95_ms', 'max_ms'),
                                                       [whole(row.group(2))] + times))
            continue
        row = UNANSWERED.search(line)
        if row:
            report['unanswered'] = whole(row.group(1))
        row = NOT_TIMED.search(line)
        if row:
            report['not_timed'] = whole(row.group(1))
    return report


def split_reports(text):
    """Cut the human output into one text per report."""
    starts = [match.start() for match in re.finditer(r'^Session #', text, re.M)]
    return [text[start:end] for start, end in zip(starts, starts[1:] + [len(text)])]


class StatTestCase(unittest.TestCase):

    def assertCounts(self, report, traffic, expected=None, replies=None, unanswered=None):
        """The report's counts are those of the traffic sent; replies and unanswered as given."""
        expected = EXPECTED if expected is None else expected
        for side in (C, S):
            with self.subTest(direction=side):
                counts = report[side]
                self.assertEqual(counts['bytes'], traffic.bytes[side])
                self.assertEqual(counts['messages'], expected[side]['messages'])
                self.assertEqual(counts['invalid'], expected[side]['invalid'])
                self.assertEqual(counts['classes'], expected[side]['classes'])
                if 'functions' in expected[side]:
                    self.assertEqual(counts['functions'], expected[side]['functions'])
                frequencies = list(counts['classes'].values())
                self.assertEqual(frequencies, sorted(frequencies, reverse=True), 'most frequent first')
                if traffic.sends[side]:
                    self.assertTrue(1 <= counts['chunks'] <= traffic.sends[side],
                                    '%d chunks for %d sends' % (counts['chunks'], traffic.sends[side]))
                else:
                    self.assertEqual(counts['chunks'], 0)
        if replies is not None:
            self.assertEqual({kind: row['count'] for kind, row in report['replies'].items()}, replies)
        for kind, row in report['replies'].items():
            self.assertTrue(0 <= row['min_ms'] <= row['median_ms'] <= row['p95_ms'] <= row['max_ms'], (kind, row))
        if unanswered is not None:
            self.assertEqual(report['unanswered'], unanswered)
        self.assertGreaterEqual(report['duration'], 0)

    def assertJsonReport(self, report):
        """The JSON report has the documented shape, its counts whole numbers."""
        self.assertEqual(set(report), {'session', 'started', 'duration', 'client_address', 'server_address',
                                       'closed_by', 'error', C, S, 'timeline', 'replies', 'errors', 'unanswered',
                                       'unanswered_requests', 'not_timed', 'slowest', 'biggest'})
        for side in (C, S):
            self.assertEqual(set(report[side]), {'bytes', 'chunks', 'messages', 'invalid', 'classes', 'functions'})
            for key in ('bytes', 'chunks', 'messages', 'invalid'):
                self.assertIs(type(report[side][key]), int, (side, key))
            for count in report[side]['classes'].values():
                self.assertIs(type(count), int)
        for row in report['replies'].values():
            self.assertEqual(set(row), {'count', 'min_ms', 'median_ms', 'p95_ms', 'max_ms'})
            self.assertIs(type(row['count']), int)
        self.assertIs(type(report['unanswered']), int)
        self.assertIs(type(report['not_timed']), int)
        self.assertIs(type(report['session']), int)
        self.assertIsInstance(report['duration'], (int, float))

    def assertBars(self, report):
        """Each class's bar of '█' is proportional to its count (to within one block)."""
        for side in (C, S):
            classes, bars = report[side]['classes'], report['bars'][side]
            if not classes:
                continue
            most = max(classes.values())
            longest = max(bars.values())
            for kind, count in classes.items():
                self.assertLessEqual(abs(bars[kind] * most - count * longest), most, (side, kind, bars))

    def run_script(self, *options, steps=SCRIPT, most=16):
        """One whole session through ctistat; return (stdout text, traffic)."""
        with Tool('ctistat', *options) as tool:
            client, server = tool.connect()
            traffic = Traffic(self, client, server, seeded_rng(self), most)
            traffic.play(steps)
            traffic.close()
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        return out.decode('utf-8'), traffic


class StatReportTest(StatTestCase):

    def test_human_report(self):
        out, traffic = self.run_script()
        reports = split_reports(out)
        self.assertEqual(len(reports), 1, out)
        report = parse_report(reports[0])
        self.assertEqual(report['session'], 1)
        self.assertCounts(report, traffic, replies=EXPECTED_REPLIES, unanswered=EXPECTED_UNANSWERED)
        self.assertBars(report)

    def test_json_report(self):
        out, traffic = self.run_script('--json')
        lines = out.split('\n')
        self.assertEqual(lines[1:], [''], 'one document on one line, nothing else: %r' % out)
        report = json.loads(lines[0])
        self.assertJsonReport(report)
        self.assertEqual(report['session'], 1)
        self.assertCounts(report, traffic, replies=EXPECTED_REPLIES, unanswered=EXPECTED_UNANSWERED)

    def test_empty_session(self):
        out, traffic = self.run_script('--json', steps=[])
        report = json.loads(out)
        self.assertJsonReport(report)
        empty = {'messages': 0, 'invalid': 0, 'classes': {}}
        self.assertCounts(report, traffic, expected={C: empty, S: empty}, replies={}, unanswered=0)

    def test_answer_before_its_request_does_not_count(self):
        steps = [(S, b'{"class": "getlist", "replyid": 7}\n'),
                 (S, b'{"class": "keepalive"}\n'),
                 (C, b'{"class": "getlist", "commandid": 7}\n')]
        out, traffic = self.run_script('--json', steps=steps)
        expected = {C: {'messages': 1, 'invalid': 0, 'classes': {'getlist': 1}},
                    S: {'messages': 2, 'invalid': 0, 'classes': {'getlist': 1, 'keepalive': 1}}}
        self.assertCounts(json.loads(out), traffic, expected, replies={}, unanswered=1)

    def test_every_request_is_answered_or_unanswered(self):
        """Two requests with the same commandid and one answer: one answered, one never answered."""
        steps = [(C, b'{"class": "getlist", "commandid": 7}\n'),
                 (C, b'{"class": "getlist", "commandid": 7}\n'),
                 (C, b'{"class": "keepalive"}\n'),
                 (S, b'{"class": "getlist", "replyid": 7}\n')]
        out, traffic = self.run_script('--json', steps=steps)
        expected = {C: {'messages': 3, 'invalid': 0, 'classes': {'getlist': 2, 'keepalive': 1}},
                    S: {'messages': 1, 'invalid': 0, 'classes': {'getlist': 1}}}
        self.assertCounts(json.loads(out), traffic, expected, replies={'getlist': 1}, unanswered=1)

    def test_answer_right_after_its_request(self):
        """A server that answers as soon as it has the request, as a real one does: every answer matched."""
        steps = []
        for number in range(1, ROUND_TRIPS + 1):
            steps.append((C, b'{"class": "getlist", "commandid": %d}\n' % number))
            steps.append((S, b'{"class": "getlist", "replyid": %d}\n' % number))
        out, traffic = self.run_script('--json', steps=steps, most=1 << 16)       # each step in one send
        expected = {C: {'messages': ROUND_TRIPS, 'invalid': 0, 'classes': {'getlist': ROUND_TRIPS}},
                    S: {'messages': ROUND_TRIPS, 'invalid': 0, 'classes': {'getlist': ROUND_TRIPS}}}
        self.assertCounts(json.loads(out), traffic, expected, replies={'getlist': ROUND_TRIPS}, unanswered=0)

    def test_requests_beyond_the_cap_are_not_called_unanswered(self):
        """12,000 requests (10,000 kept per session), then answers to the first 3,000: 2,000 of those were
        forgotten, so their answers are not timed, and they are not counted as never answered either (before:
        never answered 11,000, though only 9,000 were)."""
        requests = b''.join(b'{"class": "getlist", "commandid": %d}\n' % number for number in range(12000))
        answers = b''.join(b'{"class": "getlist", "replyid": %d}\n' % number for number in range(3000))
        steps = [(C, requests), (C, b'{"class": "keepalive"}\n'), (S, answers)]
        expected = {C: {'messages': 12001, 'invalid': 0, 'classes': {'getlist': 12000, 'keepalive': 1}},
                    S: {'messages': 3000, 'invalid': 0, 'classes': {'getlist': 3000}}}
        for options, parse in ((['--json'], json.loads), ([], lambda out: parse_report(split_reports(out)[0]))):
            with self.subTest(options=options):
                out, traffic = self.run_script(*options, steps=steps, most=1 << 16)
                report = parse(out)
                self.assertCounts(report, traffic, expected, replies={'getlist': 1000}, unanswered=9000)
                self.assertEqual(report['not_timed'], 2000)


class StatStopTest(StatTestCase):

    def test_ctrl_c_reports_the_open_session(self):
        for options in ((), ('--json',)):
            with self.subTest(options=options), Tool('ctistat', *options) as tool:
                client, server = tool.connect()
                traffic = Traffic(self, client, server, seeded_rng(self))
                traffic.play(SCRIPT)
                status, out, err = tool.stop(signal.SIGINT)
                client.close()
                server.close()
                self.assertNotIn('Traceback', err)
                text = out.decode('utf-8')
                if options:
                    self.assertEqual(text.count('\n'), 1, text)
                    report = json.loads(text)
                    self.assertJsonReport(report)
                else:
                    reports = split_reports(text)
                    self.assertEqual(len(reports), 1, text)
                    report = parse_report(reports[0])
                self.assertCounts(report, traffic, replies=EXPECTED_REPLIES, unanswered=EXPECTED_UNANSWERED)

    def test_loop_json_one_line_per_session(self):
        """The first session ends by itself, the second is still open at Ctrl-C: two lines, one per session."""
        first_steps = SCRIPT
        second_steps = [(C, b'{"class": "login_id", "commandid": 1}\n'),
                        (C, b'{"class": "keepalive"}\n'),
                        (S, b'{"class": "login_id", "replyid": 1}\n'),
                        (S, b'banner\n')]
        with Tool('ctistat', '--loop', '--json') as tool:
            client, server = tool.connect()
            first = Traffic(self, client, server, seeded_rng(self))
            first.play(first_steps)
            first.close()
            early = tool.read_stdout_until(b'\n')
            client, server = tool.connect()
            second = Traffic(self, client, server, seeded_rng(self))
            second.play(second_steps)
            status, out, err = tool.stop(signal.SIGINT)
            client.close()
            server.close()
        self.assertNotIn('Traceback', err)
        lines = (early + out).decode('utf-8').split('\n')
        self.assertEqual(len(lines), 3, lines)
        self.assertEqual(lines[2], '')
        reports = [json.loads(line) for line in lines[:2]]
        for report in reports:
            self.assertJsonReport(report)
        self.assertEqual([report['session'] for report in reports], [1, 2])
        self.assertCounts(reports[0], first, replies=EXPECTED_REPLIES, unanswered=EXPECTED_UNANSWERED)
        expected = {C: {'messages': 2, 'invalid': 0, 'classes': {'login_id': 1, 'keepalive': 1}},
                    S: {'messages': 1, 'invalid': 1, 'classes': {'login_id': 1}}}
        self.assertCounts(reports[1], second, expected, replies={'login_id': 1}, unanswered=0)


if __name__ == '__main__':
    unittest.main()
