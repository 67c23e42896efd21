"""Captures in bounded memory however many connections never close: a session with no packet for --capture-idle
seconds of the capture's time ends, and so does the least recently active one when too many are open; each such
end is said, and a later packet of its connection opens a new session that continues it.

The bound test streams a capture of thousands of connections that never close through a pipe into the real
tools, then one that closes (its message a marker): once the tool has shown it, the test reads the tool's peak
RSS (VmHWM) while it runs.
"""

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

from ctiproxy.capture import Segment
from ctiproxy.capture_source import RESUMED_NOTICE, START_MISSED_NOTICE, CaptureSource
from ctiproxy.events import Observer
from ctiproxy.filters import CLIENT, SERVER
from ctiproxy.reassembly import CROWDED, IDLE, Reassembler
from tests.capwriter import ACK, ETHERNET, FIN, SYN, Conversation, frame, pcap
from tests.harness import TIMEOUT, capture_test_end_process, tool_path
from tests.test_memory import peak_rss

MiB = 1 << 20
PORT = 5003
START = 1790000000.0
LOGIN = b'{"class": "login_id", "commandid": 1, "userlogin": "alice"}\n'
ANSWER = b'{"class": "login_id", "replyid": 1, "sessionid": "abc"}\n'
MARKER = b'{"class": "marker"}\n'
OPEN_PACKETS = ((SYN, 'client', b''), (SYN | ACK, 'server', b''), (ACK, 'client', LOGIN), (ACK, 'server', ANSWER))
CLOSING_PACKETS = ((SYN, 'client', b''), (SYN | ACK, 'server', b''), (ACK, 'client', MARKER),
                   (FIN | ACK, 'client', b''), (FIN | ACK, 'server', b''), (ACK, 'client', b''))


def never_closing_capture(count, every, marker=False):
    """Yield a pcap in pieces: `count` connections, one every `every` seconds, each a handshake, a request and its
    answer, and never a FIN; with `marker`, then one connection that sends MARKER and closes."""
    yield pcap([])
    when = int(START * 1e9)
    records = []
    for number in range(count + marker):
        conversation = Conversation(client=('10.%d.%d.%d' % (number >> 16 & 255, number >> 8 & 255, number & 255),
                                            40000 + number % 20000))
        packets = OPEN_PACKETS if number < count else CLOSING_PACKETS
        for flags, side, payload in packets:
            when += int(every * 1e9) // len(packets)
            packet = frame(ETHERNET, conversation.packet(side, payload, flags))
            records.append(struct.pack('<IIII', when // 10 ** 9, when % 10 ** 9 // 1000, len(packet), len(packet)))
            records.append(packet)
        if len(records) > 4000:
            yield b''.join(records)
            records = []
    yield b''.join(records)


class Drain:
    """Reads a process's stdout on a thread of its own, keeping only a count of lines holding `needle`, and
    setting `marked` once a line holds MARKER's class."""

    def __init__(self, stream, needle):
        self.stream = stream
        self.needle = needle
        self.count = 0
        self.first = None           # the first line holding the needle
        self.marked = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.stream:
            if self.needle in line:
                self.count += 1
                self.first = self.first or line
            if b'"marker"' in line:
                self.marked.set()

    def join(self):
        self._thread.join(TIMEOUT)


class BoundTest(unittest.TestCase):
    """6,000 connections that never close, one every 10 s of capture time: with the default --capture-idle (600 s)
    about 60 are open at a time.  Bound: the interpreter (15-25 MB) and room.  Before, every session stayed open to
    the end of the capture: ctistat peaked at 70 MiB, ctispy at 46 MiB (195 MiB and 110 MiB with 20,000)."""

    COUNT = 6000

    def run_tool(self, tool, *args, needle):
        process = subprocess.Popen([sys.executable, tool_path(tool), '--read', '-'] + list(args),
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(capture_test_end_process, process)
        drain = Drain(process.stdout, needle)
        errors = []
        error_reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
        error_reader.start()
        for piece in never_closing_capture(self.COUNT, 10.0, marker=True):
            process.stdin.write(piece)
        process.stdin.flush()
        self.assertTrue(drain.marked.wait(TIMEOUT), 'the marker session was not shown')
        peak = peak_rss(process.pid)
        process.stdin.close()
        status = process.wait(TIMEOUT)
        drain.join()
        error_reader.join(TIMEOUT)
        return drain, peak, (status, errors)

    def assertEndedSaid(self, tool, ended):
        self.assertEqual(ended, (0, [('%s: warning: the tool ended 5940 sessions before their end in the capture, to '
                                      'keep its memory bounded: 5940 with no packet for 600 s of the capture '
                                      '(--capture-idle)\n' % tool).encode()]))

    def test_ctistat(self):
        drain, peak, ended = self.run_tool('ctistat', '--json', needle=b'"session"')
        self.assertLess(peak, 40 * MiB, 'peak RSS %.1f MiB' % (peak / MiB))     # measured: 25 MiB (before: 70 MiB)
        self.assertEndedSaid('ctistat', ended)
        self.assertEqual(drain.count, self.COUNT + 1)
        report = json.loads(drain.first)
        self.assertEqual((report['session'], report['client']['messages'], report['server']['messages']), (1, 1, 1))
        self.assertRegex(report['error'], r'^ended by the tool: no packet for 600 s of the capture')

    def test_ctispy(self):
        drain, peak, ended = self.run_tool('ctispy', needle=b'ended by the tool: no packet for 600 s')
        self.assertLess(peak, 35 * MiB, 'peak RSS %.1f MiB' % (peak / MiB))     # measured: 25 MiB (before: 46 MiB)
        self.assertEndedSaid('ctispy', ended)
        self.assertEqual(drain.count, self.COUNT - 60)        # the last 60 end with the capture, not idle


class SaveDescriptorsTest(unittest.TestCase):
    """ctisave keeps two files open per session: with a capture's sessions open at once beyond what the file
    descriptor limit allows, the least recently active end (said) instead of the tool failing.  Before: "cannot
    write the output: Too many open files", exit 1."""

    def test_more_open_sessions_than_descriptors(self):
        folder = tempfile.mkdtemp(prefix='cti-capture-')
        self.addCleanup(shutil.rmtree, folder)
        capture = b''.join(never_closing_capture(300, 0.01))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        soft = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
        done = subprocess.run([sys.executable, tool_path('ctisave'), '--read', '-', os.path.join(folder, 'client'),
                               os.path.join(folder, 'server')], input=capture, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=TIMEOUT,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
        self.assertEqual(len(os.listdir(folder)), 600)
        ended = 300 - (soft - 64) // 2
        self.assertEqual((done.returncode, done.stderr.decode()), (
            0, 'ctisave: warning: the tool ended %d sessions before their end in the capture, to keep its memory '
               'bounded: %d least recently active of %d open at once\n' % (ended, ended, (soft - 64) // 2)))


def segment(client_port, flags=ACK, seq=1, payload=b'', from_client=True, ack=0):
    client, server = (b'\x0a\0\0\x01', client_port), (b'\x0a\0\0\x02', PORT)
    (src, sport), (dst, dport) = (client, server) if from_client else (server, client)
    return Segment(src, sport, dst, dport, seq, ack, flags, payload, 0)


def kinds(events):
    return [(event.__class__.__name__, event.session.number) for event in events]


class IdleTest(unittest.TestCase):
    """The reassembler ends a connection idle for idle_seconds of the capture's time, at its last packet."""

    def test_an_idle_connection_ends_when_another_packet_comes_later(self):
        reassembler = Reassembler(PORT, idle_seconds=600)
        events = reassembler.feed(segment(40001, payload=b'a\n'), 10.0)
        events += reassembler.feed(segment(40002, payload=b'b\n'), 500.0)
        self.assertEqual(kinds(events), [('Opened', 1), ('StartMissed', 1), ('Data', 1),
                                         ('Opened', 2), ('StartMissed', 2), ('Data', 2)])
        events = reassembler.feed(segment(40002, seq=3, payload=b'c\n'), 609.0)
        self.assertEqual(kinds(events), [('Data', 2)])
        events = reassembler.feed(segment(40002, seq=5, payload=b'd\n'), 611.0)
        self.assertEqual(kinds(events), [('Data', 2)])             # one packet's time could be far off: two say it
        events = reassembler.feed(segment(40002, seq=7, payload=b'e\n'), 612.0)
        self.assertEqual(kinds(events), [('Ended', 1), ('Data', 2)])
        self.assertEqual((events[0].reason, events[0].time), (IDLE, 10.0))

    def test_the_connection_of_the_packet_at_hand_goes_on(self):
        """Alone in the capture, a connection that speaks again after a long silence is still the same session."""
        reassembler = Reassembler(PORT, idle_seconds=600)
        reassembler.feed(segment(40001, payload=b'a\n'), 10.0)
        events = reassembler.feed(segment(40001, seq=3, payload=b'b\n'), 5000.0)
        self.assertEqual(kinds(events), [('Data', 1)])
        self.assertEqual(kinds(reassembler.finish()), [('Ended', 1)])

    def test_a_later_packet_with_bytes_opens_a_session_that_continues_it(self):
        reassembler = Reassembler(PORT, idle_seconds=600)
        reassembler.feed(segment(40001, payload=b'a\n'), 10.0)
        reassembler.feed(segment(40002, payload=b'b\n'), 700.0)
        reassembler.feed(segment(40002, seq=3, payload=b'c\n'), 700.5)
        self.assertEqual(reassembler.feed(segment(40001, seq=3, flags=ACK), 701.0), [])     # no bytes: dropped
        events = reassembler.feed(segment(40001, seq=3, payload=b'c\n'), 702.0)
        self.assertEqual(kinds(events), [('Opened', 3), ('Resumed', 3), ('Data', 3)])   # ended after a newline
        self.assertEqual(events[1].earlier, 1)
        self.assertEqual(events[2].data, b'c\n')

    def test_never_with_0(self):
        reassembler = Reassembler(PORT, idle_seconds=0)
        reassembler.feed(segment(40001, payload=b'a\n'), 10.0)
        events = reassembler.feed(segment(40002, payload=b'b\n'), 1e6)
        self.assertNotIn('Ended', [kind for kind, _ in kinds(events)])


class CrowdedTest(unittest.TestCase):
    """With max_open sessions open, one more ends the least recently active (not the oldest opened)."""

    def test_the_least_recently_active_ends(self):
        reassembler = Reassembler(PORT, max_open=3)
        for port in (40001, 40002, 40003):
            reassembler.feed(segment(port, flags=SYN), 1.0)
        reassembler.feed(segment(40001, seq=2, payload=b'x\n'), 2.0)
        events = reassembler.feed(segment(40004, flags=SYN), 3.0)
        self.assertEqual(kinds(events), [('Ended', 2), ('Opened', 4)])
        self.assertEqual((events[0].reason, events[0].time), (CROWDED, 1.0))
        events = reassembler.feed(segment(40005, flags=SYN), 4.0)
        self.assertEqual(kinds(events)[0], ('Ended', 3))
        self.assertEqual(len(reassembler.finish()), 3)


class Recorder(Observer):
    def __init__(self):
        self.calls = []

    def notice(self, session, when, text):
        self.calls.append(('notice', session.number, text))

    def missing(self, session, direction, when, size):
        self.calls.append(('missing', session.number, direction, size))

    def session_closed(self, session, when=None):
        self.calls.append(('closed', session.number, session.failure))


class SourceTest(unittest.TestCase):
    """The capture source says each end the tool made, and what a resumed session continues."""

    def test_said(self):
        recorder = Recorder()
        source = CaptureSource(recorder, PORT, lambda text: None, idle_seconds=60, max_open=2)
        for port, seq, when in ((40001, 1, 1.0), (40002, 1, 2.0), (40003, 1, 3.0), (40004, 1, 100.0),
                                (40004, 3, 100.5), (40001, 3, 101.0)):          # then session #1's next bytes
            for event in source.reassembler.feed(segment(port, seq=seq, payload=b'a\n'), when):
                source._take(event)
        said = [call for call in recorder.calls if call[0] != 'missing' and call[2] != START_MISSED_NOTICE]
        crowded = 'ended by the tool: 2 sessions were open, and this one was the least recently active'
        idle = 'ended by the tool: no packet for 60 s of the capture (--capture-idle)'
        self.assertEqual([call[:2] for call in said], [('notice', 1), ('closed', 1), ('notice', 2), ('closed', 2),
                                                       ('notice', 3), ('closed', 3), ('notice', 5)])
        self.assertTrue(said[0][2].startswith('session #1 ' + crowded))
        self.assertTrue(said[1][2].startswith(crowded))
        self.assertTrue(said[2][2].startswith('session #2 ' + crowded))   # the first packet past 60 s: not yet idle
        self.assertTrue(said[4][2].startswith('session #3 ' + idle))
        self.assertEqual(said[6][2], RESUMED_NOTICE % 1)
        self.assertNotIn(('missing', 5, CLIENT, None), recorder.calls)  # #1 ended after a newline: a line starts
        self.assertNotIn(SERVER, [call[2] for call in recorder.calls if call[0] == 'missing'])

    def test_one_session_ended_is_said_in_the_singular(self):
        source = CaptureSource(Recorder(), PORT, lambda text: None, idle_seconds=60)
        self.assertIsNone(source.tool_ended_text())
        for port, when in ((40001, 1.0), (40002, 100.0), (40002, 100.5)):     # #1 idle past 60 s, said at the second
            for event in source.reassembler.feed(segment(port, seq=1 if when < 100.5 else 3, payload=b'a\n'), when):
                source._take(event)
        self.assertEqual(source.tool_ended_text(), 'the tool ended 1 session before its end in the capture, to keep '
                                                   'its memory bounded: 1 with no packet for 60 s of the capture '
                                                   '(--capture-idle)')


if __name__ == '__main__':
    unittest.main()
