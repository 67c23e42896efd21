"""A hostile review of --read of a capture: crafted captures that once broke the real tools."""

import collections
import json
import struct
import unittest

from ctiproxy.filters import CLIENT
from ctiproxy.reassembly import Missing, Reassembler
from ctiproxy.sim.recorded import RecordingProblem, load_session
from tests.capwriter import ETHERNET, Pcapng, frame
from tests.capwriter import ACK, FIN
from tests.test_capture_read import LOGIN, LOGIN_ANSWER, Capture, CaptureTestCase, login_session
from tests.test_reassembly import CLIENT_IP, PORT, SERVER_IP, handshake, segment


def pcapng_with_timestamps(timestamps, tsresol=None, tsoffset=None):
    """A pcapng of the login session whose enhanced packet blocks carry the given raw 64-bit timestamps."""
    writer = Pcapng()
    writer.section()
    writer.interface(ETHERNET, tsresol=tsresol, tsoffset=tsoffset)
    for timestamp, (_, packet) in zip(timestamps, login_session().records):
        data = frame(ETHERNET, packet)
        writer.block(6, struct.pack('<IIIII', 0, timestamp >> 32, timestamp & 0xFFFFFFFF, len(data), len(data)) + data)
    return writer.bytes()


class TimestampTest(CaptureTestCase):
    """A pcapng timestamp, resolution or offset that puts a packet outside the years a time can be shown in is
    one line naming its byte offset, exit 1, never a traceback."""

    def test_far_future_and_before_1970(self):
        cases = {'far future': pcapng_with_timestamps([0xFFFFFFFFFFFFFFFF] * 20, tsresol=0),
                 'before 1970': pcapng_with_timestamps([1] * 20, tsoffset=-(1 << 40))}
        for name, data in cases.items():
            for tool in ('ctispy', 'ctistat'):
                with self.subTest(name=name, tool=tool):
                    status, _, err = self.read(tool, '-', stdin=data)
                    self.assertEqual(status, 1)
                    self.assertRegex(err, r'^%s: stdin: not a capture: packet time out of range .* at byte \d+\n$'
                                     % tool)
        for tool, args in (('ctispy', ['--json-lines']), ('ctisave', [self.folder + '/c', self.folder + '/s'])):
            with self.subTest(tool=tool):
                status, _, err = self.read(tool, '-', *args, stdin=cases['far future'])
                self.assertEqual(status, 1)

    def test_the_last_showable_years_still_read(self):
        seconds = 253370764800 - 86400 * 366          # in the year 9997
        data = pcapng_with_timestamps([seconds + n for n in range(20)], tsresol=0)
        status, out, _ = self.read('ctispy', '-', stdin=data)
        self.assertEqual(status, 0)
        self.assertIn(b'login_id', out)


class HeldPiecesTest(unittest.TestCase):
    """Tiny segments ahead of a hole that never fills: their number is bounded, not only their bytes (a
    million one-byte segments held under 4 MiB took hundreds of MB and minutes to release)."""

    def test_the_number_of_held_pieces_is_bounded(self):
        reassembler = Reassembler(PORT, max_held_pieces=100)
        events = []
        handshake(reassembler, events)
        for index in range(250):
            events += reassembler.feed(segment(CLIENT, 10 + index, b'x'), 1.0)
            held = reassembler._connections[(CLIENT_IP, 40000, SERVER_IP, PORT)].client.held
            self.assertLessEqual(len(held), 100)
        self.assertEqual([(event.direction, event.size) for event in events if isinstance(event, Missing)],
                         [(CLIENT, 10)])
        events += reassembler.finish()
        self.assertEqual(b''.join(event.data for event in events if hasattr(event, 'data')), b'x' * 250)


Record = collections.namedtuple('Record', 'notice session direction line time')


class ReplayChoiceTest(unittest.TestCase):
    """ctisim server --replay of a capture of many sessions: a --session it lacks is one short line (it
    listed every session number: 1.4 MB for 200,000 sessions)."""

    def test_a_missing_session_names_the_first_ten_and_the_count(self):
        def records(path):
            for number in range(1, 2001):
                yield Record(None, number, 'client', b'{"class": "x"}', 1.0)
        with self.assertRaises(RecordingProblem) as caught:
            load_session('many.pcap', 5000, records=records)
        self.assertEqual(str(caught.exception), 'many.pcap: no session 5000 in it (it holds sessions 1, 2, 3, 4, 5, '
                                                '6, 7, 8, 9, 10, ... (2000 sessions))')


class WhoClosedTest(CaptureTestCase):
    """Who closed a captured session is the side whose FIN came first; a session still open where the capture
    ends, or reset, was closed by nobody (before: the client, always)."""

    def closed_by(self, capture):
        status, out, err = self.read('ctistat', '-', '--json', stdin=capture.pcap())
        self.assertEqual(status, 0, err)
        return json.loads(out.decode('utf-8').splitlines()[0])['closed_by']

    def test_server_fin_first(self):
        capture = Capture()
        capture.handshake()
        capture.add('client', LOGIN)
        capture.add('server', flags=FIN | ACK)
        capture.add('client', flags=FIN | ACK)
        self.assertEqual(self.closed_by(capture), 'server')

    def test_open_at_the_capture_end(self):
        capture = Capture()
        capture.handshake()
        capture.add('client', LOGIN)
        capture.add('server', LOGIN_ANSWER)
        self.assertIsNone(self.closed_by(capture))


class EmptyInputTest(CaptureTestCase):
    """Empty input (an ssh or tcpdump that failed before writing) is one line, exit 1; before: exit 0, silent."""

    def test_empty_pipe_and_file(self):
        empty = self.folder + '/empty.pcap'
        open(empty, 'wb').close()
        for tool in ('ctispy', 'ctistat'):
            for path, name in (('-', 'stdin'), (empty, empty)):
                with self.subTest(tool=tool, path=path):
                    status, out, err = self.read(tool, path, stdin=b'')
                    self.assertEqual((status, out, err), (1, b'', '%s: %s is empty: no recording or capture in it\n'
                                                          % (tool, name)))


if __name__ == '__main__':
    unittest.main()
