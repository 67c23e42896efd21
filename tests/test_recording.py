"""End-to-end tests of ctispy --json-lines, and of --read replaying a recording through each tool."""

import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

from tests.harness import HEADER, TIMEOUT, Tool, recv_exactly, recv_until_eof, tool_path

BANNER = b'XiVO CTI Server Version 1.2.3\n'
# (who sends, line): requests and answers one after the other, so every run sees the same order
EXCHANGE = [
    ('server', BANNER),
    ('client', b'{"class": "login_id", "commandid": 1, "userlogin": "h\\u00e9l\\u00e8ne"}\n'),
    ('server', b'{"class": "login_id", "replyid": 1, "sessionid": "abc", "timenow": 1.5}\n'),
    ('client', b'{"class": "getlist", "commandid": 2, "function": "listid", "listname": "users"}\n'),
    ('server', b'{"class": "getlist", "replyid": 2, "list": ["1", "2"], "timenow": 2.5}\n'),
    ('server', b'not JSON \xff\n'),
    ('server', b'{"class": "getlist", "function": "updatestatus", "tid": 17, '
               b'"status": {"name": "Zo\\u00eb \\ud83d\\ude00"}}\n'),
    ('client', b'{"class": "keepalive", "commandid": 3}\n'),
    ('server', b'{"class": "keepalive", "replyid": 3, "timenow": 3.5}\n'),
]


def play(tool):
    """Play EXCHANGE through a running tool, each line received before the next is sent; then close."""
    client, server = tool.connect()
    for sender, line in EXCHANGE:
        source, destination = (client, server) if sender == 'client' else (server, client)
        source.sendall(line)
        assert recv_exactly(destination, len(line)) == line
    client.shutdown(socket.SHUT_WR)
    assert recv_until_eof(server) == b''
    server.close()
    assert recv_until_eof(client) == b''
    client.close()


def live(name, *args):
    """Run a tool live over EXCHANGE; return its stdout bytes."""
    with Tool(name, *args) as tool:
        play(tool)
        status, out, err = tool.finish()
    assert status == 0, err
    return out


def replay(name, recording, *args, stdin=None):
    """Run a tool with --read; return (exit status, stdout bytes, stderr text)."""
    done = subprocess.run([sys.executable, tool_path(name), '--read', recording] + list(args),
                          input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    return done.returncode, done.stdout, done.stderr.decode('utf-8', 'replace')


def without_times(spy_output):
    """ctispy's output with the clock of each header masked (two runs differ only there)."""
    lines = spy_output.decode('utf-8').split('\n')
    return [HEADER.sub(lambda match: '    TIME ' + match.group(3), line) for line in lines]


class RecordingTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory()
        cls.recording = os.path.join(cls.folder.name, 'session.jsonl')
        with open(cls.recording, 'wb') as file:
            file.write(live('ctispy', '--json-lines'))
        with open(cls.recording, encoding='utf-8') as file:
            cls.records = [json.loads(line) for line in file]

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def test_one_record_per_line_in_order(self):
        self.assertEqual(len(self.records), len(EXCHANGE))
        for record, (sender, line) in zip(self.records, EXCHANGE):
            self.assertEqual(record['direction'], sender)
            self.assertEqual(record['session'], 1)
            self.assertRegex(record['time'], r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d$')
            if 'message' in record:
                self.assertEqual(record['message'], json.loads(line.decode('utf-8')))
                self.assertEqual(set(record) - {'reply_to'}, {'time', 'session', 'direction', 'message'})
            else:
                self.assertEqual(set(record), {'time', 'session', 'direction', 'text'})
        self.assertEqual(self.records[0]['text'], 'XiVO CTI Server Version 1.2.3')
        self.assertEqual(self.records[5]['text'], 'not JSON \udcff')      # the byte 0xff, restored by --read
        times = [datetime.datetime.fromisoformat(record['time']) for record in self.records]
        self.assertEqual(times, sorted(times))

    def test_characters_not_escapes(self):
        with open(self.recording, encoding='utf-8') as file:
            text = file.read()
        self.assertIn('h\u00e9l\u00e8ne', text)
        self.assertIn('Zo\u00eb \U0001f600', text)

    def test_filters_and_strip_apply(self):
        out = live('ctispy', '--json-lines', '--include', 'class=getlist', '--strip', 'replyid')
        records = [json.loads(line) for line in out.decode('utf-8').splitlines()]
        self.assertEqual([record['message']['class'] for record in records], ['getlist'] * 3)
        self.assertTrue(all('replyid' not in record['message'] for record in records))

    def test_ctispy_replay_shows_what_live_showed(self):
        for args in ([], ['--pretty-print'], ['--include', 'class=getlist', '--strip', 'timenow'], ['--no-server']):
            with self.subTest(args=args):
                status, replayed, err = replay('ctispy', self.recording, *args)
                self.assertEqual(status, 0, err)
                self.assertEqual(without_times(replayed), without_times(live('ctispy', *args)))

    def test_ctispy_replay_shows_the_recorded_times(self):
        _, replayed, _ = replay('ctispy', self.recording)
        clocks = [HEADER.match(line).group(2) for line in replayed.decode('utf-8').split('\n') if HEADER.match(line)]
        self.assertEqual(clocks, [record['time'][11:26] for record in self.records])

    def test_ctispy_replay_of_a_replay_is_the_recording(self):
        status, replayed, err = replay('ctispy', self.recording, '--json-lines')
        self.assertEqual(status, 0, err)
        with open(self.recording, 'rb') as file:
            self.assertEqual(replayed, file.read())

    def test_ctisave_replay_writes_the_files_live_wrote(self):
        with tempfile.TemporaryDirectory() as folder:
            paths = {kind: os.path.join(folder, kind) for kind in ('live-c', 'live-s', 'read-c', 'read-s')}
            live('ctisave', paths['live-c'], paths['live-s'], '--strip', 'timenow')
            status, _, err = replay('ctisave', self.recording, paths['read-c'], paths['read-s'], '--strip', 'timenow')
            self.assertEqual(status, 0, err)
            contents = {}
            for kind, path in paths.items():
                with open(path, 'rb') as file:
                    contents[kind] = file.read()
                self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(contents['read-c'], contents['live-c'])
        self.assertEqual(contents['read-s'], contents['live-s'])
        self.assertIn(b'not JSON \\xff\n', contents['read-s'])
        self.assertIn(b'"sessionid": "abc"', contents['read-s'])

    def test_ctistat_replay_counts_what_live_counted(self):
        status, replayed, err = replay('ctistat', self.recording, '--json')
        self.assertEqual(status, 0, err)
        offline = json.loads(replayed)
        online = json.loads(live('ctistat', '--json'))
        for side in ('client', 'server'):
            for key in ('messages', 'invalid', 'classes'):
                self.assertEqual(offline[side][key], online[side][key], (side, key))
            self.assertEqual(offline[side]['chunks'], len([1 for sender, _ in EXCHANGE if sender == side]))
        self.assertEqual(offline['unanswered'], online['unanswered'])
        self.assertEqual({kind: row['count'] for kind, row in offline['replies'].items()},
                         {'login_id': 1, 'getlist': 1, 'keepalive': 1})

    def test_ctistat_replay_times_come_from_the_recording(self):
        lines = [json.dumps({'time': '2026-11-27T13:00:00.000000', 'session': 1, 'direction': 'client',
                             'message': {'class': 'getlist', 'commandid': 7}}),
                 json.dumps({'time': '2026-11-27T13:00:00.250000', 'session': 1, 'direction': 'server',
                             'message': {'class': 'getlist', 'replyid': 7}})]
        status, out, err = replay('ctistat', '-', '--json', stdin=('\n'.join(lines) + '\n').encode())
        self.assertEqual(status, 0, err)
        report = json.loads(out)
        self.assertEqual(report['replies']['getlist']['median_ms'], 250.0)
        self.assertEqual(report['duration'], 0.25)

    def test_sessions_stay_apart(self):
        lines = []
        for number in (1, 2):
            for direction, message in (('client', {'class': 'login_id', 'commandid': number}),
                                       ('server', {'class': 'login_id', 'replyid': number})):
                lines.append(json.dumps({'time': '2026-11-27T13:00:0%d.000000' % number, 'session': number,
                                         'direction': direction, 'message': message}))
        status, out, err = replay('ctistat', '-', '--json', stdin=('\n'.join(lines) + '\n').encode())
        self.assertEqual(status, 0, err)
        reports = [json.loads(line) for line in out.decode().splitlines()]
        self.assertEqual([report['session'] for report in reports], [1, 2])
        self.assertEqual([report['unanswered'] for report in reports], [0, 0])


class NoticeRecordTest(unittest.TestCase):
    """A notice (STARTTLS) is a record of its own, and a replay shows it where live showed it."""

    LINES = [
        {'time': '2026-11-27T13:00:00.000000', 'session': 1, 'direction': 'server',
         'message': {'class': 'starttls', 'starttls': True}},
        {'time': '2026-11-27T13:00:00.100000', 'session': 1, 'notice': 'STARTTLS: the session is now encrypted'},
    ]

    def recording(self):
        return ('\n'.join(json.dumps(line) for line in self.LINES) + '\n').encode()

    def test_ctispy_shows_the_notice_and_records_it_again(self):
        status, out, err = replay('ctispy', '-', stdin=self.recording())
        self.assertEqual(status, 0, err)
        self.assertTrue(out.decode().endswith('    13:00:00.100000 -- STARTTLS: the session is now encrypted\n'), out)
        status, out, err = replay('ctispy', '-', '--json-lines', stdin=self.recording())
        records = [json.loads(line) for line in out.decode().splitlines()]
        self.assertEqual([datetime.datetime.fromisoformat(record.pop('time')).timestamp() for record in records],
                         [datetime.datetime.fromisoformat(line['time']).timestamp() for line in self.LINES])
        self.assertEqual(records, [{key: value for key, value in line.items() if key != 'time'} for line in self.LINES])


class BadRecordingTest(unittest.TestCase):

    CASES = [
        (b'not json\n', 'line 1: not a JSON record'),
        (b'[' * 100000 + b']' * 100000 + b'\n', 'line 1: not a JSON record'),
        (b'[1]\n', 'line 1: a record must be a JSON object'),
        (b'{"time": "2026-11-27T13:00:00.000000", "session": "1", "direction": "client", "text": ""}\n',
         'line 1: "session"'),
        (b'\n{"time": "2026-11-27T13:00:00.000000", "session": 1, "direction": "up", "text": ""}\n',
         'line 2: "direction"'),
        (b'{"time": "yesterday", "session": 1, "direction": "client", "text": ""}\n', 'line 1: "time"'),
        (b'{"time": "2026-11-27T13:00:00.000000", "session": 1, "direction": "client"}\n',
         'line 1: a record needs a "message" object or a "text" string'),
    ]

    def save_files(self):
        """Two files of the test's own for ctisave to save into (never /dev/null: ctisave must not write there)."""
        folder = tempfile.mkdtemp(prefix='cti-recording-')
        self.addCleanup(shutil.rmtree, folder, True)
        return [os.path.join(folder, 'client'), os.path.join(folder, 'server')]

    def test_malformed_lines_are_one_line_errors(self):
        for tool in ('ctispy', 'ctisave', 'ctistat'):
            for data, needle in self.CASES:
                with self.subTest(tool=tool, data=data):
                    extra = self.save_files() if tool == 'ctisave' else []
                    status, out, err = replay(tool, '-', *extra, stdin=data)
                    self.assertEqual(status, 1, err)
                    self.assertEqual(err.count('\n'), 1, err)
                    self.assertIn(needle, err)
                    self.assertTrue(err.startswith('%s: stdin, ' % tool), err)
                    self.assertNotIn('Traceback', err)

    def test_missing_file(self):
        status, _, err = replay('ctispy', '/nonexistent/session.jsonl')
        self.assertEqual(status, 1)
        self.assertEqual(err.strip(), 'ctispy: cannot read /nonexistent/session.jsonl: No such file or directory')

    def test_host_and_read_exclude_each_other_in_usage(self):
        done = subprocess.run([sys.executable, tool_path('ctispy'), 'xivo', '--read', 'x'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
        self.assertEqual(done.returncode, 2)
        self.assertTrue(re.search(rb'unrecognized arguments: xivo', done.stderr), done.stderr)


if __name__ == '__main__':
    unittest.main()
