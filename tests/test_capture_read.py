"""End-to-end tests of --read with a capture: the real tools read pcap and pcapng files (and pipes) built by
tests/capwriter.py, and show, save and count what they would have live."""

import datetime
import json
import os
import re
import signal
import struct
import subprocess
import sys
import unittest

from tests.capwriter import (ACK, ETHERNET, FIN, LINUX_SLL2, RST, SYN, Conversation, Pcapng, frame, ipv4, pcap,
                             tcp_segment)
from tests.harness import (TIMEOUT, FolderTestCase, capture_test_end_process,
                           parse_spy_output, read_line_unbuffered, tool_path)
from tests.test_memory import peak_rss

START = 1790000000.0
LOGIN = b'{"class": "login_id", "commandid": 1, "userlogin": "alice"}\n'
LOGIN_ANSWER = b'{"class": "login_id", "replyid": 1, "sessionid": "abc"}\n'
GETLIST = b'{"class": "getlist", "commandid": 2, "function": "listid"}\n'
GETLIST_ANSWER = b'{"class": "getlist", "replyid": 2, "list": ["1", "2"]}\n'
BANNER = b'XiVO CTI Server Version 1.2.3\n'


class Capture:
    """A capture built packet by packet from Conversations, each packet `step` seconds after the one before."""

    def __init__(self, start=START, **where):
        self.conversation = Conversation(**where)
        self.records = []       # (time in ns, IP packet)
        self.time = start

    def add(self, side, payload=b'', flags=ACK, step=0.001, conversation=None, **options):
        """A packet from side ('client' or 'server'); return its time."""
        self.time += step
        packet = (conversation or self.conversation).packet(side, payload, flags, **options)
        self.records.append((round(self.time * 1e9), packet))
        return self.time

    def handshake(self, conversation=None):
        self.add('client', flags=SYN, conversation=conversation)
        self.add('server', flags=SYN | ACK, conversation=conversation)
        self.add('client', conversation=conversation)

    def close(self, conversation=None):
        self.add('client', flags=FIN | ACK, conversation=conversation)
        self.add('server', flags=FIN | ACK, conversation=conversation)
        self.add('client', conversation=conversation)

    def pcap(self, linktype=ETHERNET, **options):
        return pcap([(when, frame(linktype, packet)) for when, packet in self.records], linktype, **options)

    def pcapng(self, linktype=LINUX_SLL2, order='<'):
        writer = Pcapng()
        writer.section(order)
        interface = writer.interface(linktype, tsresol=9)
        for when, packet in self.records:
            writer.packet(interface, when, frame(linktype, packet))
        return writer.bytes()


def login_session(capture=None):
    """A whole session: handshake, banner, two requests and their answers, close; return the Capture."""
    capture = capture or Capture()
    capture.handshake()
    for side, line in (('server', BANNER), ('client', LOGIN), ('server', LOGIN_ANSWER),
                       ('client', GETLIST), ('server', GETLIST_ANSWER)):
        capture.add(side, line)
    capture.close()
    return capture


def clock(when):
    return datetime.datetime.fromtimestamp(when).strftime('%H:%M:%S.%f')


NOTICE = re.compile(r'^(?:\[#\d+\]|   ) \d\d:\d\d:\d\d\.\d{6} -- ')


def shown(out):
    """ctispy's output as [(direction, body lines)], without the notices."""
    text = '\n'.join(line for line in out.decode('utf-8').split('\n') if not NOTICE.match(line))
    return [(direction, body) for _, direction, body in parse_spy_output(text)]


LOGIN_SHOWN = [('Server > Client', ['XiVO CTI Server Version 1.2.3']),
               ('Client > Server', [LOGIN.decode().strip()]),
               ('Server > Client', [LOGIN_ANSWER.decode().strip()]),
               ('Client > Server', [GETLIST.decode().strip()]),
               ('Server > Client', [GETLIST_ANSWER.decode().strip()])]


class CaptureTestCase(FolderTestCase):

    folder_prefix = 'cti-capture-'

    def read(self, tool, path, *args, stdin=None):
        """Run tool --read path; return (exit status, stdout bytes, stderr text)."""
        done = subprocess.run([sys.executable, tool_path(tool), '--read', path] + list(args), input=stdin,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT,
                              env=dict(os.environ, NO_COLOR='1'))
        err = done.stderr.decode('utf-8', 'replace')
        self.assertNotIn('Traceback', err)
        return done.returncode, done.stdout, err


class ReadTest(CaptureTestCase):
    """A capture's messages, shown as live, from a file and from a pipe, in both formats."""

    def test_pcap_file_and_pipe(self):
        capture = login_session()
        path = self.write('cti.pcap', capture.pcap())
        for source, stdin in ((path, None), ('-', capture.pcap())):
            with self.subTest(source=source):
                status, out, err = self.read('ctispy', source, stdin=stdin)
                self.assertEqual((status, err), (0, ''))
                self.assertEqual(shown(out), LOGIN_SHOWN)

    def test_pcapng_big_endian_linux_cooked(self):
        status, out, err = self.read('ctispy', '-', stdin=login_session().pcapng(order='>'))
        self.assertEqual((status, err), (0, ''))
        self.assertEqual(shown(out), LOGIN_SHOWN)

    def test_times_are_the_capture_s(self):
        capture = Capture()
        capture.handshake()
        sent = capture.add('client', LOGIN, step=0.25)
        capture.close()
        status, out, _ = self.read('ctispy', '-', stdin=capture.pcap(nanoseconds=True))
        self.assertEqual(status, 0)
        self.assertIn(clock(sent), out.decode())

    def test_reply_times_and_duration_from_the_capture(self):
        """A session still open at the capture's end ends at its last packet."""
        capture = Capture()
        capture.handshake()
        first = capture.records[0][0] / 1e9
        capture.add('client', LOGIN)
        capture.add('server', LOGIN_ANSWER, step=0.25)
        last = capture.add('client', b'', step=1.0)
        status, out, _ = self.read('ctistat', '-', '--json', stdin=capture.pcap())
        report = json.loads(out)
        self.assertEqual(report['replies']['login_id']['max_ms'], 250.0)
        self.assertAlmostEqual(report['duration'], last - first, places=5)

    def test_port_applies_to_a_capture(self):
        capture = login_session(Capture(server=('192.0.2.2', 6000)))
        data = capture.pcap()
        status, out, _ = self.read('ctispy', '-', '--port', '6000', stdin=data)
        self.assertEqual((status, shown(out)), (0, LOGIN_SHOWN))
        status, out, err = self.read('ctispy', '-', stdin=data)
        self.assertEqual(status, 1)
        self.assertEqual(err, 'ctispy: stdin: no TCP traffic on port 5003 (--port): the capture holds TCP ports '
                              '6000 (11 packets)\n')

    def test_raw_shows_each_segment_s_bytes(self):
        status, out, err = self.read('ctispy', '-', '--raw', stdin=login_session().pcap())
        self.assertEqual((status, err), (0, ''))
        self.assertIn(b'Client > Server\n' + LOGIN, out)
        record = b'{"time": "2026-11-27T13:01:02.123456", "session": 1, "direction": "client", "text": "x"}\n'
        status, out, err = self.read('ctispy', '-', '--raw', stdin=record)
        self.assertEqual((status, out), (2, b''))
        self.assertIn('--raw shows bytes as received: a recording holds messages, not bytes', err)

    def test_filters_apply(self):
        status, out, _ = self.read('ctispy', '-', '--include', 'class=getlist', '--no-client',
                                   stdin=login_session().pcap())
        self.assertEqual(shown(out), [LOGIN_SHOWN[4]])

    def test_json_lines_turns_a_capture_into_a_recording(self):
        path = self.write('cti.pcap', login_session().pcap())
        status, recording, _ = self.read('ctispy', path, '--json-lines')
        self.assertEqual(status, 0)
        records = [json.loads(line) for line in recording.decode().splitlines()]
        self.assertEqual([record.get('message', record.get('text')) for record in records][:2],
                         ['XiVO CTI Server Version 1.2.3', json.loads(LOGIN)])
        replayed = self.read('ctispy', '-', stdin=recording)
        self.assertEqual(replayed[0], 0)
        self.assertEqual(replayed[1], self.read('ctispy', path)[1])

    def test_ctisave_saves_each_direction(self):
        path = self.write('cti.pcap', login_session().pcap())
        client, server = os.path.join(self.folder, 'client'), os.path.join(self.folder, 'server')
        status, _, err = self.read('ctisave', path, client, server)
        self.assertEqual((status, err), (0, ''))
        with open(client) as file:
            self.assertIn('"userlogin": "alice"', file.read())
        with open(server) as file:
            self.assertTrue(file.read().startswith('XiVO CTI Server Version 1.2.3\n'))

    def test_sessions_numbered_in_order_of_their_first_packet(self):
        capture = Capture()
        second = Conversation(client=('192.0.2.9', 41000))
        capture.handshake()
        capture.handshake(second)
        capture.add('server', b'first\n')
        capture.add('server', b'second\n', conversation=second)
        capture.close(second)
        capture.close()
        status, out, _ = self.read('ctistat', '-', '--json', stdin=capture.pcap())
        reports = [json.loads(line) for line in out.decode().splitlines()]
        self.assertEqual([(report['session'], report['server']['bytes']) for report in reports], [(2, 7), (1, 6)])


class DamageTest(CaptureTestCase):
    """What a capture lost is said, and the lines it damaged are shown as text, never guessed into messages."""

    def test_a_hole_is_a_notice_and_its_lines_are_text(self):
        capture = Capture()
        capture.handshake()
        capture.add('server', BANNER)
        capture.add('server', b'{"class": "getlist", "cut": "here')
        capture.add('server', b'-lost part-', advance=True)
        capture.records.pop()                               # the capture lost this packet
        capture.add('server', b' rest"}\n' + GETLIST_ANSWER)
        capture.add('client', b'')                          # the client acknowledges it all: the hole stays
        capture.close()
        status, out, err = self.read('ctispy', '-', stdin=capture.pcap())
        self.assertEqual((status, err), (0, ''))
        text = out.decode()
        self.assertIn("-- 11 bytes missing from the server's stream (not in the capture)", text)
        self.assertEqual([body for _, body in shown(out)],
                         [['XiVO CTI Server Version 1.2.3'], ['{"class": "getlist", "cut": "here'],
                          [' rest"}'], [GETLIST_ANSWER.decode().strip()]])
        self.assertLess(text.index('here'), text.index('missing'))
        self.assertLess(text.index('missing'), text.index(' rest"}'))

    def test_ctistat_counts_missing_and_retransmitted_bytes(self):
        capture = Capture()
        capture.handshake()
        capture.add('client', LOGIN)
        capture.add('client', LOGIN, seq=capture.conversation.seq['client'] - len(LOGIN), advance=False)  # again
        capture.add('server', b'lost\n')
        capture.records.pop()
        capture.add('server', LOGIN_ANSWER)
        capture.add('client', b'')
        capture.close()
        status, out, _ = self.read('ctistat', '-', '--json', stdin=capture.pcap())
        report = json.loads(out)
        self.assertEqual((report['client']['retransmitted'], report['client']['missing']), (len(LOGIN), 0))
        self.assertEqual((report['server']['retransmitted'], report['server']['missing']), (0, 5))
        self.assertEqual(report['client']['messages'], 1)
        status, out, _ = self.read('ctistat', '-', stdin=capture.pcap())
        self.assertRegex(out.decode(), r'\nretransmitted +%d +0\nmissing +0 +5\n' % len(LOGIN))

    def test_a_missed_start_shows_the_first_partial_line_as_text(self):
        capture = Capture()
        capture.add('server', b'"tail of a message"}\n' + LOGIN_ANSWER)
        capture.add('client', GETLIST)
        capture.add('server', GETLIST_ANSWER)
        status, out, err = self.read('ctispy', '-', stdin=capture.pcap())
        self.assertEqual((status, err), (0, ''))
        self.assertIn('the capture starts after this session\'s start', out.decode())
        self.assertEqual([body for _, body in shown(out)],
                         [['"tail of a message"}'], [LOGIN_ANSWER.decode().strip()], [GETLIST.decode().strip()],
                          [GETLIST_ANSWER.decode().strip()]])

    def test_a_reset_ends_the_session_with_its_cut_lines(self):
        capture = Capture()
        capture.handshake()
        capture.add('client', LOGIN + b'{"class": "cut')
        capture.add('server', flags=RST)
        status, out, _ = self.read('ctispy', '-', stdin=capture.pcap())
        self.assertEqual([body for _, body in shown(out)], [[LOGIN.decode().strip()], ['{"class": "cut']])


class EncryptedTest(CaptureTestCase):
    """STARTTLS on 5003 and TLS on 5013: the bytes after the confirmation are counted and said encrypted."""

    CLIENT_HELLO = b'\x16\x03\x01\x00\x05hello'

    def test_starttls(self):
        capture = Capture()
        capture.handshake()
        capture.add('server', BANNER + b'{"class": "starttls"}\n')
        capture.add('client', b'{"class": "starttls", "status": 1}\n')
        capture.add('server', b'{"class": "starttls", "starttls": true}\n')
        capture.add('client', self.CLIENT_HELLO)
        capture.add('server', b'\x16\x03\x03\x00\x02hi')
        capture.close()
        status, out, _ = self.read('ctispy', '-', stdin=capture.pcap())
        text = out.decode()
        self.assertEqual(status, 0)
        self.assertIn('-- STARTTLS: the session is now encrypted and cannot be shown', text)
        self.assertNotIn('hello', text)
        self.assertEqual(len(shown(out)), 4)
        status, out, _ = self.read('ctistat', '-', '--json', stdin=capture.pcap())
        report = json.loads(out)
        self.assertEqual(report['client']['bytes'], 35 + len(self.CLIENT_HELLO))
        self.assertEqual(report['client']['messages'], 1)

    def test_tls_port(self):
        capture = Capture(server=('192.0.2.2', 5013))
        capture.handshake()
        capture.add('client', self.CLIENT_HELLO)
        capture.add('server', b'\x16\x03\x03\x00\x02hi')
        capture.close()
        status, out, err = self.read('ctispy', '-', '--port', '5013', stdin=capture.pcap())
        self.assertEqual((status, err), (0, ''))
        self.assertIn('-- TLS: the session is encrypted and cannot be shown', out.decode())
        self.assertEqual(shown(out), [])


class BadCaptureTest(CaptureTestCase):
    """A capture cut short, garbage, an unknown link type, no traffic on the port: one line, never a traceback."""

    def test_cut_mid_packet_shows_everything_before(self):
        data = login_session().pcap()
        status, out, err = self.read('ctispy', '-', stdin=data[:-30])
        self.assertEqual(status, 0)
        self.assertEqual(shown(out), LOGIN_SHOWN)
        self.assertRegex(err, r'^ctispy: warning: stdin ends in the middle of a packet \(at byte \d+; .*\n$')

    def test_garbage_is_one_line_with_its_offset(self):
        data = login_session().pcap()
        status, out, err = self.read('ctispy', '-', stdin=data[:24] + b'\xff' * 64)
        self.assertEqual(status, 1)
        self.assertRegex(err, r'^ctispy: stdin: .*byte 24.*\n$')

    def test_unknown_link_type(self):
        status, _, err = self.read('ctistat', '-', stdin=pcap([(0, b'\0' * 40)], linktype=147))
        self.assertEqual(status, 1)
        self.assertRegex(err, r'^ctistat: stdin: .*link type 147.*\n$')

    def test_no_traffic_names_the_ports_held(self):
        capture = Capture(server=('192.0.2.2', 8080))
        for _ in range(3):
            capture.add('client', b'x')
        other = Conversation(server=('192.0.2.2', 22))
        capture.add('client', b'y', conversation=other)
        status, _, err = self.read('ctistat', self.write('web.pcap', capture.pcap()))
        self.assertEqual(status, 1)
        self.assertEqual(err, 'ctistat: %s: no TCP traffic on port 5003 (--port): the capture holds TCP ports '
                              '8080 (3 packets), 22 (1 packet)\n' % os.path.join(self.folder, 'web.pcap'))

    def test_ip_fragments_said_once(self):
        capture = login_session()
        fragment = ipv4('192.0.2.1', '192.0.2.2', tcp_segment(40000, 5003, 1, payload=b'x' * 40), fragment=0x2000)
        capture.records[4:4] = [(capture.records[3][0], fragment)] * 3
        status, out, err = self.read('ctispy', '-', stdin=capture.pcap())
        self.assertEqual((status, shown(out)), (0, LOGIN_SHOWN))
        self.assertRegex(err, r'^ctispy: warning: the capture holds IP fragments of TCP packets \(byte \d+\): '
                              r'they are not reassembled, and skipped\n$')

    def test_stdin_closed(self):
        done = subprocess.run([sys.executable, tool_path('ctispy'), '--read', '-'], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=TIMEOUT, preexec_fn=lambda: os.close(0))
        self.assertEqual((done.returncode, done.stderr), (1, b'ctispy: cannot read stdin: stdin is closed\n'))

    def test_a_recording_still_reads_as_one(self):
        record = {'time': '2026-11-27T13:01:02.123456', 'session': 1, 'direction': 'client',
                  'message': {'class': 'x'}}
        for name in ('file', '-'):
            with self.subTest(name=name):
                data = (json.dumps(record) + '\n').encode()
                path = self.write('rec.jsonl', data) if name == 'file' else '-'
                status, out, _ = self.read('ctispy', path, stdin=None if name == 'file' else data)
                self.assertEqual((status, shown(out)), (0, [('Client > Server', ['{"class": "x"}'])]))


class LivePipeTest(CaptureTestCase):
    """A capture written into the tool's stdin as it goes: each message shown, each report printed, as soon as
    its last packet is in the pipe; Ctrl-C ends the tool with what it finished."""

    def start(self, tool, *args):
        process = subprocess.Popen([sys.executable, tool_path(tool), '--read', '-'] + list(args),
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=dict(os.environ, NO_COLOR='1'))
        self.addCleanup(capture_test_end_process, process)
        return process

    def test_each_message_shown_as_its_last_packet_arrives(self):
        capture = Capture()
        capture.handshake()
        capture.add('client', LOGIN[:20])
        capture.add('client', LOGIN[20:])
        data = capture.pcap()
        process = self.start('ctispy')
        process.stdin.write(data)
        process.stdin.flush()
        line = read_line_unbuffered(process.stdout.fileno())
        self.assertRegex(line.decode(), r'Client > Server\n$')
        self.assertEqual(read_line_unbuffered(process.stdout.fileno()), LOGIN)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=TIMEOUT)
        self.assertEqual((process.returncode, err), (0, b''))
        self.assertRegex(out.decode(), r'^ +\S+ -- never answered: login_id \(commandid 1\), sent \S+\n$')

    def test_ctrl_c_ends_the_open_sessions_with_what_they_left(self):
        capture = Capture()
        capture.handshake()
        capture.add('client', LOGIN + b'{"class": "cut')
        process = self.start('ctispy')
        process.stdin.write(capture.pcap())
        process.stdin.flush()
        while read_line_unbuffered(process.stdout.fileno()) != LOGIN:
            pass
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=TIMEOUT)
        self.assertEqual((process.returncode, err), (0, b''))
        self.assertEqual(shown(out), [('Client > Server', ['{"class": "cut'])])

    def test_ctistat_prints_each_report_when_its_session_ends(self):
        first = login_session()
        process = self.start('ctistat', '--json')
        process.stdin.write(first.pcap())
        process.stdin.flush()
        report = json.loads(read_line_unbuffered(process.stdout.fileno()))
        self.assertEqual((report['session'], report['client']['messages']), (1, 2))
        process.stdin.close()
        self.assertEqual(process.wait(TIMEOUT), 0)

    def test_a_big_capture_in_bounded_memory(self):
        """48 MB of capture through the pipe: the tool's peak memory stays below it (streamed, not read whole).
        Bound: the interpreter (15-25 MB), the reader's 1 MB chunks, and room."""
        conversation = Conversation()
        process = self.start('ctistat', '--json')
        write = process.stdin.write
        write(pcap([]))
        when = int(START * 1e9)
        line = b'x' * 1447 + b'\n'
        for flags, side, payload in ([(SYN, 'client', b''), (SYN | ACK, 'server', b''), (ACK, 'client', b'')]
                                     + [(ACK, 'server', line)] * (48 * 1024 * 1024 // len(line))
                                     + [(FIN | ACK, 'client', b''), (FIN | ACK, 'server', b''), (ACK, 'client', b'')]):
            when += 1000
            packet = frame(ETHERNET, conversation.packet(side, payload, flags))
            write(struct.pack('<IIII', when // 10 ** 9, when % 10 ** 9 // 1000, len(packet), len(packet)) + packet)
        process.stdin.flush()
        report = json.loads(read_line_unbuffered(process.stdout.fileno()))
        self.assertEqual(report['server']['invalid'], 48 * 1024 * 1024 // len(line))
        self.assertLess(peak_rss(process.pid), 40 * 1024 * 1024)      # measured: 23 MB
        process.stdin.close()
        self.assertEqual(process.wait(TIMEOUT), 0)


class Collected:
    """An output that keeps what the analysis hands it: ('message', direction, line, is a message) and notices."""

    wants_messages = True

    def __init__(self):
        self.events = []

    def message(self, session, direction, when, message, line):
        self.events.append(('message', direction, bytes(line), message is not None))

    def notice(self, session, when, text):
        self.events.append(('notice', text))

    def __getattr__(self, name):            # every other event: nothing to keep
        return lambda *args: None


class DamagedLineTest(unittest.TestCase):
    """Analysis (I/O-free): the line missing bytes cut, and the one they end, are text; the next one a message."""

    def setUp(self):
        from ctiproxy.analysis import Analysis
        from ctiproxy.events import SessionInfo
        self.output = Collected()
        self.analysis = Analysis(self.output)
        self.session = SessionInfo(1, START)
        self.analysis.session_opened(self.session)

    def feed(self, *chunks):
        for chunk in chunks:
            self.analysis.received(self.session, 'server', START, chunk)

    def test_hole_in_a_line(self):
        self.feed(b'{"a": 1}\n{"b": ')
        self.analysis.missing(self.session, 'server', START, 5)
        self.feed(b'2}\n{"c": 3}\n')
        self.assertEqual(self.output.events, [
            ('message', 'server', b'{"a": 1}', True), ('message', 'server', b'{"b": ', False),
            ('notice', "5 bytes missing from the server's stream (not in the capture): the lines around them are "
                       "shown as text"),
            ('message', 'server', b'2}', False), ('message', 'server', b'{"c": 3}', True)])

    def test_hole_at_a_line_boundary_still_damages_the_next_line(self):
        """Where the lost bytes ended cannot be told: what comes before the next newline is text."""
        self.feed(b'{"a": 1}\n')
        self.analysis.missing(self.session, 'server', START, 9)
        self.feed(b'{"b": 2}', b'\n{"c": 3}\n')
        self.assertEqual([event[2:] for event in self.output.events if event[0] == 'message'],
                         [(b'{"a": 1}', True), (b'{"b": 2}', False), (b'{"c": 3}', True)])

    def test_missed_start_says_nothing_itself(self):
        self.analysis.missing(self.session, 'server', START, None)
        self.feed(b'tail"}\n{"c": 3}\n')
        self.assertEqual(self.output.events, [('message', 'server', b'tail"}', False),
                                              ('message', 'server', b'{"c": 3}', True)])
