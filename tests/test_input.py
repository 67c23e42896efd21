"""Hostile or odd input, end to end through the real tools: classes nested deep, numbers out of range,
--read of odd recordings (bad times, out of order, cut short, streamed from a pipe), abbreviated options."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import unittest

from tests.harness import TIMEOUT, Tool, read_fd_until_all, recv_exactly, run_tool, tool_path


def nested(depth, innermost='"x"'):
    """A JSON list nested depth deep."""
    return '[' * depth + innermost + ']' * depth


class DeepClassTest(unittest.TestCase):
    """A class nested about as deep as json reads: the line is counted like any other, and so is the rest."""

    def test_ctistat_counts_every_line_whatever_the_class(self):
        depths = range(900, 1101)
        lines = [('{"class": %s}\n' % nested(depth)).encode('ascii') for depth in depths]
        lines.append(b'{"class": "after"}\n')
        data = b''.join(lines)
        with Tool('ctistat', '--json') as tool:
            client, server = tool.connect()
            client.sendall(data)
            self.assertEqual(recv_exactly(server, len(data)), data)
            client.close()
            server.close()
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertNotIn('internal error', err)
        self.assertNotIn('Traceback', err)
        counts = json.loads(out.decode('utf-8'))['client']
        self.assertEqual(counts['messages'] + counts['invalid'], len(lines))
        self.assertEqual(counts['classes']['after'], 1)
        self.assertEqual(sum(counts['classes'].values()), counts['messages'])
        self.assertTrue(all(len(name) < 100 for name in counts['classes']), counts['classes'])


class AbbreviationTest(unittest.TestCase):
    """Options are spelled out: an abbreviation is a usage error naming it, never taken for another."""

    def test_abbreviated_read_is_a_usage_error(self):
        for name, args, needle in (('ctistat', ['--rea', 'recording.jsonl'], '--rea'),
                                   ('ctispy', ['--rea=recording.jsonl'], 'HOST'),
                                   ('ctisave', ['--re', 'recording.jsonl', 'client', 'server'], '--re'),
                                   ('ctispy', ['127.0.0.1', '--pretty'], '--pretty')):
            with self.subTest(tool=name, args=args):
                status, out, err = run_tool(name, *args)
                self.assertEqual(status, 2, err)
                self.assertEqual(out, b'')
                self.assertNotIn('Traceback', err)
                self.assertIn(needle, err.splitlines()[-1])

    def test_short_verbose_still_works(self):
        with Tool('ctispy', '-v') as tool:
            client, server = tool.connect()
            client.sendall(b'{"class": "x"}\n')
            recv_exactly(server, 15)
            client.shutdown(socket.SHUT_WR)
            server.close()
            client.close()
            status, _, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertIn('session #1', err)


def deep_requests():
    """Requests whose values are nested about as deep as json reads (the limit depends on the reader's stack)."""
    requests = []
    for depth in range(900, 1000, 4):
        value = nested(depth)
        requests += [
            '{"class": "login_id", "userlogin": %s}' % value,
            '{"class": "login_capas", "state": %s}' % value,
            '{"class": "getlist", "function": "updateconfig", "listname": "users", "tid": %s}' % value,
            '{"class": "getlist", "function": "updatestatus", "listname": %s}' % value,
            '{"class": "ipbxcommand", "command": "dial", "destination": %s}' % value,
            '{"class": "directory", "pattern": %s}' % value,
            '{"class": "history", "mode": %s}' % value,
            '{"class": "keepalive", "commandid": %s}' % value,
            '{"class": %s, "commandid": "hostile"}' % value,
            '{"class": "frobnicate", "commandid": "hostile", "x": %s}' % value,
        ]
    return requests


HOSTILE_REQUESTS = [
    '{"class": "history", "commandid": "hostile", "size": 1e400}',
    '{"class": "history", "commandid": "hostile", "size": -1e400}',
    '{"class": "history", "commandid": "hostile", "size": NaN}',
    '{"class": "history", "commandid": "hostile", "mode": 1e400}',
    '{"class": "history", "commandid": "hostile", "mode": -Infinity}',
    '{"class": "history", "commandid": "hostile", "size": "1e400"}',
    '{"class": "history", "commandid": "hostile", "size": 123456789012345678901234567890}',
    '{"class": "history", "commandid": "hostile", "mode": 123456789012345678901234567890}',
    '{"class": "getlist", "commandid": "hostile", "function": "updateconfig", "listname": "users", "tid": 1e400}',
    '{"class": "getlist", "commandid": "hostile", "function": "updateconfig", "listname": ["users"], "tid": "1"}',
    '{"class": "getlist", "commandid": "hostile", "function": {"a": 1}, "listname": "users"}',
    '{"class": "ipbxcommand", "commandid": "hostile", "command": "dial", "destination": 1e400}',
    '{"class": "ipbxcommand", "commandid": "hostile", "command": ["dial"]}',
    '{"class": "login_capas", "commandid": "hostile", "state": NaN}',
    '{"class": "keepalive", "commandid": NaN}',
    '{"class": "keepalive", "commandid": {"a": [1, 2]}}',
    '{"class": "directory", "commandid": "hostile", "pattern": 1e400}',
]


class HostileRequestTest(unittest.TestCase):
    """ctisim answers whatever a client sends, and the session goes on: no request costs a session."""

    def test_each_request_is_answered_and_the_session_goes_on(self):
        from tests.test_simulator import SimServer
        with SimServer('--users', '9') as server:
            talk = server.connect()
            for request in HOSTILE_REQUESTS + deep_requests():
                with self.subTest(request=request[:120]):
                    talk.sock.sendall(request.encode('ascii') + b'\n')
                    answer, _ = talk.ask('keepalive')      # fails on EOF if the session was dropped
                    self.assertEqual(answer['class'], 'keepalive')
            talk.quit()
            status, err = server.stop()
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)


def record(second, direction, message, session=1):
    """One recording line (text, with its newline) at 2026-11-27T13:00:<second>."""
    return json.dumps({'time': '2026-11-27T13:00:%09.6f' % second, 'session': session, 'direction': direction,
                       'message': message}) + '\n'


def read_tool(name, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE):
    """Run a tool with these arguments (--read among them); return (exit status, stdout bytes, stderr text)."""
    done = subprocess.run([sys.executable, tool_path(name)] + list(args), stdin=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, timeout=TIMEOUT)
    return done.returncode, done.stdout, done.stderr.decode('utf-8', 'replace')


class ReadTest(unittest.TestCase):
    """--read of recordings that are odd: bad times, times out of order, a last line cut short."""

    def setUp(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.folder = folder.name

    def write(self, text, name='session.jsonl'):
        path = os.path.join(self.folder, name)
        with open(path, 'w', encoding='utf-8') as file:
            file.write(text)
        return path

    def test_time_out_of_range_is_one_line_naming_file_and_line(self):
        for time in ('9999-12-31T23:59:59.999999', '0001-01-01T00:00:00+14:00', '9999-12-31T23:59:59-14:00',
                     '0001-01-01T00:00:00'):
            path = self.write(record(1, 'client', {'class': 'a'}) +
                              json.dumps({'time': time, 'session': 1, 'direction': 'client', 'message': {}}) + '\n')
            for name in ('ctispy', 'ctistat'):
                with self.subTest(time=time, tool=name):
                    status, out, err = read_tool(name, '--read', path)
                    self.assertNotIn('Traceback', err)
                    if time == '0001-01-01T00:00:00' and status == 0:
                        continue            # in range where local time is UTC or west of it
                    self.assertEqual(status, 1, err)
                    self.assertEqual(err, '%s: %s, line 2: "time" is out of range: "%s"\n' % (name, path, time))

    def assertBadSecondLine(self, second, reason):
        """A recording whose second line is `second` (a dict): one line naming the line and the reason, exit 1."""
        path = self.write(record(1, 'client', {'class': 'a'}) + json.dumps(second) + '\n')
        for name in ('ctispy', 'ctistat'):
            with self.subTest(record=second, tool=name):
                status, out, err = read_tool(name, '--read', path)
                self.assertEqual(status, 1, err)
                self.assertEqual(err, '%s: %s, line 2: %s\n' % (name, path, reason))

    def test_time_that_is_no_date_is_said_to_be_none(self):
        """Before: a time that is no date at all was "out of range"."""
        for time in ('2026-13-01T00:00:00', '', 'NaN', '2026-11-27T25:00:00', 5):
            self.assertBadSecondLine({'time': time, 'session': 1, 'direction': 'client', 'message': {}},
                                     '"time" must be a time like "2026-11-27T13:01:02.123456"')

    def test_notice_that_is_not_a_string(self):
        """Before: said "direction" must be "client" or "server"."""
        for notice in (5, None, ['STARTTLS'], {'text': 'x'}):
            self.assertBadSecondLine({'time': '2026-11-27T13:00:02', 'session': 1, 'notice': notice},
                                     '"notice" must be a string')

    def test_session_numbers_start_at_1(self):
        """The tools number sessions from 1; before, 0 and -1 were taken."""
        for session in (0, -1, True, 1.0, '1'):
            self.assertBadSecondLine({'time': '2026-11-27T13:00:02', 'session': session, 'direction': 'client',
                                      'message': {}}, '"session" must be a whole number from 1 up')

    def test_times_out_of_order_are_taken_as_the_time_before_and_said(self):
        path = self.write(record(10, 'client', {'class': 'getlist', 'commandid': 1}) +
                          record(5, 'server', {'class': 'getlist', 'replyid': 1}) +
                          record(10.25, 'client', {'class': 'keepalive', 'commandid': 2}) +
                          record(10.5, 'server', {'class': 'keepalive', 'replyid': 2}) +
                          record(10.4, 'server', {'class': 'event'}))          # a little back: quietly
        status, out, err = read_tool('ctistat', '--json', '--read', path)
        self.assertEqual(status, 0, err)
        report = json.loads(out.decode('utf-8'))
        self.assertEqual(report['duration'], 0.5)
        self.assertEqual(report['replies']['getlist']['max_ms'], 0.0)
        self.assertEqual(report['replies']['keepalive']['max_ms'], 250.0)
        self.assertEqual(err, 'ctistat: warning: %s, line 2: a time earlier than the record before it in its '
                              'session (1 such record); taken as that time\n' % path)

    def test_last_line_cut_short_shows_everything_before_it(self):
        lines = [record(1, 'client', {'class': 'login_id', 'commandid': 1}),
                 record(2, 'server', {'class': 'login_id', 'replyid': 1}),
                 record(3, 'client', {'class': 'keepalive', 'commandid': 2})]
        cut = record(4, 'server', {'class': 'keepalive', 'replyid': 2})[:40]
        path = self.write(''.join(lines) + cut)
        warning = 'warning: %s, line 4: the last line is cut short' % path
        status, out, err = read_tool('ctispy', '--read', path)
        self.assertEqual(status, 0, err)
        self.assertEqual(out.decode('utf-8').count('{"class": '), 3, out)
        self.assertTrue(err.startswith('ctispy: ' + warning), err)
        self.assertEqual(err.count('\n'), 1, err)
        status, out, err = read_tool('ctistat', '--json', '--read', path)
        self.assertEqual(status, 0, err)
        report = json.loads(out.decode('utf-8'))
        self.assertEqual((report['client']['messages'], report['server']['messages']), (2, 1))
        self.assertEqual(report['replies']['login_id']['count'], 1)
        self.assertTrue(err.startswith('ctistat: ' + warning), err)
        files = [os.path.join(self.folder, name) for name in ('client', 'server')]
        status, _, err = read_tool('ctisave', '--read', '-', *files, stdin=open(path, 'rb'))
        self.assertEqual(status, 0, err)
        self.assertTrue(err.startswith('ctisave: warning: stdin, line 4: the last line is cut short'), err)
        with open(files[0], 'rb') as client, open(files[1], 'rb') as server:
            self.assertEqual((client.read().count(b'"class"'), server.read().count(b'"class"')), (2, 1))

    def test_bad_line_in_the_middle_shows_what_came_before_then_fails(self):
        path = self.write(record(1, 'client', {'class': 'a', 'commandid': 1}) + 'not a record\n' +
                          record(2, 'server', {'class': 'a', 'replyid': 1}))
        status, out, err = read_tool('ctistat', '--json', '--read', path)
        self.assertEqual(status, 1, err)
        self.assertEqual(json.loads(out.decode('utf-8'))['client']['messages'], 1)
        self.assertEqual(err, 'ctistat: %s, line 2: not a JSON record (Expecting value)\n' % path)

    @unittest.skipUnless(os.path.exists('/dev/full'), 'no /dev/full here')
    def test_write_error_on_stdout_is_a_write_error(self):
        path = self.write(record(1, 'client', {'class': 'a'}))
        with open('/dev/full', 'wb') as full:       # written to only; opening it changes nothing
            for name in ('ctispy', 'ctistat'):
                with self.subTest(tool=name):
                    status, _, err = read_tool(name, '--read', path, stdout=full)
                    self.assertEqual(status, 1, err)
                    self.assertEqual(err, '%s: cannot write the output: No space left on device\n' % name)

    def test_records_from_a_pipe_are_shown_as_they_arrive(self):
        process = subprocess.Popen([sys.executable, tool_path('ctispy'), '--read', '-'], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            shown = b''
            for number in range(1, 4):
                process.stdin.write(record(number, 'client', {'class': 'step%d' % number}).encode('utf-8'))
                process.stdin.flush()           # stdin stays open: only the record itself can be shown
                shown = read_fd_until_all(process.stdout.fileno(), [b'step%d' % number], already=shown)
            process.stdin.close()
            rest, err = process.stdout.read(), process.stderr.read()
            process.wait(TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        self.assertEqual(process.returncode, 0, err)
        self.assertEqual(rest, b'')

    def test_a_big_recording_is_streamed_in_bounded_memory(self):
        """40 MB through ctistat --read (a file, read twice) and ctispy --read - (a pipe): peak RSS stays below
        the recording's size (it was loaded whole: about 65 MiB here, 20 MiB now)."""
        filler = 'x' * 5000
        path = os.path.join(self.folder, 'big.jsonl')
        with open(path, 'w', encoding='utf-8') as file:
            for number in range(4000):
                file.write(record(number / 1000, 'client', {'class': 'a', 'commandid': number, 'data': filler}))
                file.write(record(number / 1000, 'server', {'class': 'a', 'replyid': number, 'data': filler}))
        self.assertGreater(os.path.getsize(path), 40 * 1000 * 1000)
        for name, args in (('ctistat', ['--json', '--read', path]), ('ctispy', ['--read', '-'])):
            with self.subTest(tool=name), open(path, 'rb') as recording:
                status, peak = peak_rss([sys.executable, tool_path(name)] + args, stdin=recording)
                self.assertEqual(status, 0)
                self.assertLess(peak, 40 * 1024, 'peak RSS in KiB')


# Started from this small process, not from the test's (a child's peak RSS counts its parent's at the fork).
PEAK_RSS = ('import os, subprocess, sys; tool = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL); '
            '_, status, usage = os.wait4(tool.pid, 0); print(status, usage.ru_maxrss)')


def peak_rss(command, stdin):
    """Run command to its end; return (its wait status, its peak RSS in KiB)."""
    done = subprocess.run([sys.executable, '-c', PEAK_RSS] + command, stdin=stdin, stdout=subprocess.PIPE,
                          timeout=TIMEOUT)
    status, peak = done.stdout.split()
    return int(status), int(peak)
