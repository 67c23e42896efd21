"""What a careful, hostile user tried, and what it found: each test here failed before its fix."""

import json
import os
import resource
import subprocess
import sys
import unittest

from tests.capwriter import Conversation, frame, pcap
from tests.harness import TIMEOUT, FolderTestCase, WebSpyProcess, run_tool, tool_path


def recording(sessions, messages=20):
    """A ctispy --json-lines recording of `sessions` sessions, each with `messages` requests and answers."""
    lines = []
    for session in range(1, sessions + 1):
        for number in range(1, messages + 1):
            when = '2026-11-28T10:00:%02d.%06d+00:00' % (session, number)
            lines.append({'time': when, 'session': session, 'direction': 'client',
                          'message': {'class': 'getlist', 'function': 'listid', 'commandid': number}})
            lines.append({'time': when, 'session': session, 'direction': 'server',
                          'message': {'class': 'getlist', 'function': 'listid', 'replyid': number,
                                      'list': ['x' * 40] * 4}})
    return ''.join(json.dumps(line) + '\n' for line in lines)


def file_size_limit(size):
    """What subprocess runs in the child before the tool: files may not grow beyond size bytes."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


class OutputToAFullFile(FolderTestCase):
    """stdout to a file that cannot grow (a full disk; here RLIMIT_FSIZE, which cuts a write short, then fails the
    next, as a full disk does), its last write cut short: one line, exit 1, whatever PYTHONUNBUFFERED says.  With
    PYTHONUNBUFFERED set (as in many container images), stdout's binary layer is unbuffered: a write cut short
    returned how much it wrote, unread, and when it was the last one the tools exited 0, the end of their output
    lost."""

    def run_limited(self, name, args, unbuffered, limit=None):
        env = dict(os.environ)
        env.pop('PYTHONUNBUFFERED', None)
        if unbuffered:
            env['PYTHONUNBUFFERED'] = '1'
        out = os.path.join(self.folder, 'out')
        with open(out, 'wb') as stdout:
            done = subprocess.run([sys.executable, tool_path(name)] + args, stdin=subprocess.DEVNULL, stdout=stdout,
                                  stderr=subprocess.PIPE, env=env, timeout=TIMEOUT,
                                  preexec_fn=None if limit is None else file_size_limit(limit))
        return done.returncode, done.stderr.decode('utf-8', 'replace'), os.path.getsize(out)

    def check(self, name, args):
        status, err, whole = self.run_limited(name, args, unbuffered=False)
        self.assertEqual(status, 0, err)
        limit = whole - 7                   # the last write is cut short, by 7 bytes
        for unbuffered in (False, True):
            with self.subTest(PYTHONUNBUFFERED=unbuffered):
                status, err, size = self.run_limited(name, args, unbuffered, limit)
                self.assertEqual(size, limit, 'the output should have filled the file')
                self.assertEqual(status, 1, err)
                self.assertEqual(err, '%s: cannot write the output: File too large\n' % name)

    def test_ctistat_reports(self):
        self.check('ctistat', ['--read', self.write('rec.jsonl', recording(6))])

    def test_ctistat_json(self):
        self.check('ctistat', ['--read', self.write('rec.jsonl', recording(12)), '--json'])

    def test_ctispy_json_lines(self):
        self.check('ctispy', ['--read', self.write('rec.jsonl', recording(2)), '--json-lines'])

    def test_ctispy_pretty_print(self):
        self.check('ctispy', ['--read', self.write('rec.jsonl', recording(2)), '--pretty-print'])


class CaptureCutBeforeItsTraffic(FolderTestCase):
    """A capture cut short before its first packet on the port (tcpdump killed at once, a download cut short) said
    only that it held no TCP packet, as if the capture were whole: the error says that it is cut."""

    def capture(self):
        session = Conversation()
        return pcap([(1000, frame(1, session.packet('client', b'{"class": "keepalive"}\n')))])

    def check(self, data, where):
        path = self.write('cut.pcap', data)
        for tool in ('ctispy', 'ctistat'):
            status, out, err = run_tool(tool, '--read', path)
            self.assertEqual(status, 1, err)
            self.assertEqual(err, '%s: %s: no TCP traffic on port 5003: the capture holds no TCP packet, and it '
                                  'ends in the middle of %s: was tcpdump stopped while writing?\n'
                             % (tool, path, where))
            self.assertEqual(out, b'')

    def test_cut_in_its_first_packet(self):
        data = self.capture()
        for end in (24 + 1, 24 + 16, len(data) - 1):
            with self.subTest(end=end):
                self.check(data[:end], 'a packet (at byte 24)')

    def test_cut_in_its_file_header(self):
        self.check(self.capture()[:10], 'its file header')

    def test_a_whole_capture_without_packets_is_not_said_cut(self):
        path = self.write('empty.pcap', pcap([]))
        status, out, err = run_tool('ctispy', '--read', path)
        self.assertEqual((status, err), (1, 'ctispy: %s: no TCP traffic on port 5003: the capture holds no TCP '
                                            'packet\n' % path))


class RelayOptionsWithRead(FolderTestCase):
    """--read relays nothing: the options only the relay uses were taken silently (a user believing that
    --listen-addr 127.0.0.1 or --no-starttls did something), and --cert's files were read, a missing one failing the
    run.  Now one warning names them, and the run is what it is without them."""

    def test_said_once_and_ignored(self):
        path = self.write('rec.jsonl', recording(1, messages=2))
        status, plain, err = run_tool('ctispy', '--read', path)
        self.assertEqual((status, err), (0, ''))
        for tool, args in (('ctispy', []), ('ctistat', ['--json'])):
            with self.subTest(tool=tool):
                status, expected, err = run_tool(tool, '--read', path, *args)
                status, out, err = run_tool(tool, '--read', path, *args, '--listen-addr', '127.0.0.1',
                                            '--listen-port', '5', '--cert', 'missing.crt', '--key', 'missing.key',
                                            '--no-starttls', '--tls-no-verify')
                self.assertEqual(status, 0, err)
                self.assertEqual(err, '%s: warning: --listen-port, --listen-addr, --cert, --key, --tls-no-verify, '
                                      '--no-starttls: have no effect with --read (nothing is relayed)\n' % tool)
                if tool == 'ctispy':
                    self.assertEqual(out, expected)
                else:
                    self.assertEqual(json.loads(out.decode())['client'], json.loads(expected.decode())['client'])

    def test_one_option(self):
        path = self.write('rec.jsonl', recording(1, messages=2))
        status, out, err = run_tool('ctispy', '--read', path, '--listen-tls', '--cert', 'c', '--key', 'k')
        self.assertEqual(status, 0, err)
        status, out, err = run_tool('ctispy', '--read', path, '--tls-ca', 'ca.crt')
        self.assertEqual((status, err), (0, 'ctispy: warning: --tls-ca: has no effect with --read (nothing is '
                                            'relayed)\n'))

    def test_options_that_apply_to_read_are_not_named(self):
        path = self.write('rec.jsonl', recording(1, messages=2))
        status, out, err = run_tool('ctispy', '--read', path, '--port', '5013', '--tls', '--loop',
                                    '--max-message-size', '1M')
        self.assertEqual((status, err), (0, ''))


class SavingOverTheInput(FolderTestCase):
    """ctisave --read REC REC OTHER (a command line edited in a hurry) emptied the recording it was about to read,
    then saved the little it could still read, exit 0: the recording was lost.  A save path that is the input, in
    any spelling, or stdin redirected from it, or a numbered file a later session would write: a usage error,
    nothing touched."""

    def setUp(self):
        super().setUp()
        self.data = recording(3, messages=2)
        self.rec = self.write('rec.jsonl', self.data)
        self.other = os.path.join(self.folder, 'other')

    def run_save(self, *args, stdin=None):
        with open(stdin or os.devnull, 'rb') as source:
            done = subprocess.run([sys.executable, tool_path('ctisave')] + list(args), stdin=source,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
        return done.returncode, done.stderr.decode('utf-8', 'replace')

    def assert_refused(self, status, err, line):
        self.assertEqual(status, 2, err)
        self.assertEqual(err.splitlines()[-1], 'ctisave: error: ' + line)
        with open(self.rec) as file:
            self.assertEqual(file.read(), self.data)
        self.assertFalse(os.path.exists(self.other))

    def test_clientfile_is_the_input(self):
        status, err = self.run_save('--read', self.rec, self.rec, self.other)
        self.assert_refused(status, err, 'CLIENTFILE (%s) is the file that --read reads (%s): saving would '
                                         'overwrite it; give another path' % (self.rec, self.rec))

    def test_serverfile_is_the_input_through_a_link(self):
        link = os.path.join(self.folder, 'link.jsonl')
        os.symlink(self.rec, link)
        status, err = self.run_save('--read', link, self.other, self.rec)
        self.assert_refused(status, err, 'SERVERFILE (%s) is the file that --read reads (%s): saving would '
                                         'overwrite it; give another path' % (self.rec, link))

    def test_stdin_redirected_from_a_save_path(self):
        status, err = self.run_save('--read', '-', self.other, self.rec, stdin=self.rec)
        self.assert_refused(status, err, 'SERVERFILE (%s) is the file that --read reads (stdin): saving would '
                                         'overwrite it; give another path' % self.rec)

    def test_input_is_a_numbered_file(self):
        client = os.path.join(self.folder, 'c')
        numbered = client + '.3'
        os.link(self.rec, numbered)           # a hard link: the same file under the name session 3 writes
        status, err = self.run_save('--read', self.rec, client, self.other)
        self.assert_refused(status, err, 'CLIENTFILE.3 (%s) is the file that --read reads (%s): its session 3 '
                                         'would be saved into it; give CLIENTFILE another name' % (numbered, self.rec))

    def test_a_pipe_or_another_file_is_saved_as_usual(self):
        client = os.path.join(self.folder, 'c')
        status, err = self.run_save('--read', '-', client, self.other, stdin=self.rec)
        self.assertEqual((status, err), (0, ''))
        self.assertTrue(os.path.exists(client + '.3'))


def loop_recording(first_time, messages=2):
    """What ctispy --loop --json-lines records of one session (its number 1): start, messages, end."""
    when = '2026-11-28T10:00:%02d.000000+00:00' % first_time
    records = [{'time': when, 'session': 1, 'event': 'start', 'client': '127.0.0.1:4000%d' % first_time,
                'server': '127.0.0.1:5003'}]
    records += [{'time': when, 'session': 1, 'direction': 'client',
                 'message': {'class': 'keepalive', 'commandid': number}} for number in range(messages)]
    records.append({'time': when, 'session': 1, 'event': 'end', 'closed_by': 'client', 'error': None})
    return ''.join(json.dumps(record) + '\n' for record in records)


class RecordingsPutEndToEnd(FolderTestCase):
    """Two --loop recordings put end to end (cat run1.jsonl run2.jsonl): each numbers its sessions from 1.  Read
    back, the second session 1 replaced the first in the web view (its rows lost from the list), and ctistat and
    ctispy named both #1.  A session that opens with the number of an earlier one of the same reading gets the
    next number free."""

    def setUp(self):
        super().setUp()
        self.path = self.write('both.jsonl', loop_recording(1, messages=2) + loop_recording(2, messages=3))

    def test_web_view_lists_both(self):
        spy = WebSpyProcess(read=self.path)
        self.addCleanup(spy.__exit__)
        spy.web_read_stderr_until('read to the end')
        sessions = spy.web_json('/api/sessions')['sessions']
        self.assertEqual([(session['number'], session['client']) for session in sessions],
                         [(1, '127.0.0.1:40001'), (2, '127.0.0.1:40002')])
        self.assertEqual([session['rows'] for session in sessions], [4, 5])

    def test_reports_and_records_number_them_apart(self):
        status, out, err = run_tool('ctistat', '--read', self.path, '--json')
        self.assertEqual((status, err), (0, ''))
        reports = [json.loads(line) for line in out.decode().splitlines()]
        self.assertEqual([(report['session'], report['client']['messages']) for report in reports], [(1, 2), (2, 3)])
        status, out, err = run_tool('ctispy', '--read', self.path, '--json-lines', '--loop')
        self.assertEqual((status, err), (0, ''))
        starts = [record for record in map(json.loads, out.decode().splitlines()) if record.get('event') == 'start']
        self.assertEqual([(record['session'], record['client']) for record in starts],
                         [(1, '127.0.0.1:40001'), (2, '127.0.0.1:40002')])

    def test_a_recording_of_distinct_numbers_keeps_them(self):
        records = [{'time': '2026-11-28T10:00:00+00:00', 'session': number, 'direction': 'client', 'text': 'x'}
                   for number in (7, 3, 7, 12)]
        path = self.write('rec.jsonl', ''.join(json.dumps(record) + '\n' for record in records))
        status, out, err = run_tool('ctistat', '--read', path, '--json')
        self.assertEqual([json.loads(line)['session'] for line in out.decode().splitlines()], [3, 7, 12])


class DemoWithSessionOptions(unittest.TestCase):
    """ctisim demo passes the options it does not know to ctispy, as display options.  One that chooses the session
    instead broke the demo in a puzzling way: --loop had it wait 10 s, then "ctispy did not exit" (exit 1); --read
    FILE said "unrecognized arguments: 127.0.0.1", which the user never typed.  Now a usage error naming it."""

    def test_refused(self):
        for args in (['--loop'], ['--read', 'session.jsonl'], ['--listen-port=5'], ['--oneline', '--tls']):
            with self.subTest(args=args):
                status, out, err = run_tool('ctisim', 'demo', *args)
                name = args[-1].split('=')[0]
                self.assertEqual(status, 2, err)
                self.assertEqual(err.splitlines()[-1], "ctisim: error: demo: %s is not a display option: the demo's "
                                                       "ctispy relays one session of its own (--starttls for STARTTLS)"
                                 % (name if name != 'session.jsonl' else '--read'))
                self.assertEqual(out, b'')


if __name__ == '__main__':
    unittest.main()
