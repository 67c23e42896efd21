"""Second review of captures: a resumed session after the tool ended its connection, and TCP or IP headers
whose length fields lie."""

import unittest

from tests import capwriter
from tests.capwriter import frame, ipv4, tcp_segment
from tests.test_reassembly import handshake, segment, stream
from ctiproxy.capture import ACK, Packet, PacketDecoder
from ctiproxy.filters import CLIENT
from ctiproxy.reassembly import Reassembler


class ResumeTest(unittest.TestCase):
    """A connection the tool ended (idle, crowded) and that speaks again reads on from where it ended."""

    def test_bytes_delivered_before_the_end_are_not_shown_again(self):
        reassembler = Reassembler(5003, max_open=1)
        events = []
        handshake(reassembler, events)
        events += reassembler.feed(segment(CLIENT, 0, b'aaaa\n'), 1.0)
        events += reassembler.feed(segment(CLIENT, 10, b'cccc\n'), 1.1)       # held: 5 bytes missing before it
        handshake(reassembler, events, client_port=40001)                     # crowds the first one out
        for offset, payload in [(5, b'bbbb\n'), (10, b'cccc\n'), (15, b'dddd\n')]:  # late, again, then new
            events += reassembler.feed(segment(CLIENT, offset, payload), 1.3)
        events += reassembler.finish()
        self.assertEqual(stream(events, CLIENT, 1), b'aaaa\n<missing 5>cccc\n')
        self.assertEqual(stream(events, CLIENT, 3), b'<start>dddd\n')

    def test_a_keepalive_after_an_idle_end_is_not_data(self):
        reassembler = Reassembler(5003, idle_seconds=10)
        events = []
        handshake(reassembler, events)
        events += reassembler.feed(segment(CLIENT, 0, b'aaaa\n'), 1.0)
        handshake(reassembler, events, client_port=40001)
        events += reassembler.feed(segment(CLIENT, 0, b'x\n', client_port=40001), 50.0)    # ends the first: idle
        events += reassembler.feed(segment(CLIENT, 4, b'\0'), 100.0)          # a Windows keepalive: 1 byte again
        events += reassembler.feed(segment(CLIENT, 5, b'bb'), 101.0)          # partly retransmitted, then new
        events += reassembler.feed(segment(CLIENT, 5, b'bbbb\n'), 101.0)
        events += reassembler.finish()
        self.assertEqual([event.session.number for event in events if type(event).__name__ == 'Opened'], [1, 2, 3])
        self.assertEqual(stream(events, CLIENT, 3), b'<start>bbbb\n')


def decode(data, linktype=capwriter.ETHERNET):
    return PacketDecoder().decode(Packet(0, linktype, 0, data, len(data)))


if __name__ == '__main__':
    unittest.main()
