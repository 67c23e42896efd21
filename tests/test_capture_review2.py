"""Second review of captures: a resumed session after the tool ended its connection, and TCP or IP headers
whose length fields lie."""

import unittest

from tests import capwriter
from tests.capwriter import frame, ipv4, tcp_segment
from tests.test_reassembly import handshake, segment, stream
from ctiproxy.capture import ACK, Packet, PacketDecoder
from ctiproxy.filters import CLIENT, SERVER
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
        self.assertEqual(stream(events, CLIENT, 3), b'dddd\n')      # it ended at a newline: a line starts here

    def test_a_keepalive_after_an_idle_end_is_not_data(self):
        reassembler = Reassembler(5003, idle_seconds=10)
        events = []
        handshake(reassembler, events)
        events += reassembler.feed(segment(CLIENT, 0, b'aaaa\n'), 1.0)
        handshake(reassembler, events, client_port=40001)
        events += reassembler.feed(segment(CLIENT, 0, b'x\n', client_port=40001), 50.0)
        events += reassembler.feed(segment(CLIENT, 2, b'y\n', client_port=40001), 51.0)    # ends the first: idle
        events += reassembler.feed(segment(CLIENT, 4, b'\0'), 100.0)          # a Windows keepalive: 1 byte again
        events += reassembler.feed(segment(CLIENT, 5, b'bb'), 101.0)          # partly retransmitted, then new
        events += reassembler.feed(segment(CLIENT, 5, b'bbbb\n'), 101.0)
        events += reassembler.finish()
        self.assertEqual([event.session.number for event in events if type(event).__name__ == 'Opened'], [1, 2, 3])
        self.assertEqual(stream(events, CLIENT, 3), b'bbbb\n')

    def test_a_connection_ended_mid_line_reads_on_as_text_to_the_next_newline(self):
        reassembler = Reassembler(5003, max_open=1)
        events = []
        handshake(reassembler, events)
        events += reassembler.feed(segment(CLIENT, 0, b'{"class": '), 1.0)
        handshake(reassembler, events, client_port=40001)                     # crowds the first one out
        events += reassembler.feed(segment(CLIENT, 10, b'"a"}\n'), 1.3)
        self.assertEqual(stream(events, CLIENT, 3), b'<start>"a"}\n')

    def test_a_connection_crowded_out_before_its_first_byte_reads_on_from_a_line_start(self):
        reassembler = Reassembler(5003, max_open=1)
        events = []
        handshake(reassembler, events)
        handshake(reassembler, events, client_port=40001)                     # crowds the first one out
        events += reassembler.feed(segment(CLIENT, 0, b'{"class": "a"}\n'), 1.3)
        events += reassembler.feed(segment(SERVER, 0, b'{"class": "b"}\n'), 1.3)
        self.assertEqual(stream(events, CLIENT, 3), b'{"class": "a"}\n')       # no <start>: a message, not text
        self.assertEqual(stream(events, SERVER, 3), b'{"class": "b"}\n')

    def test_one_packet_timed_far_ahead_ends_no_session(self):
        reassembler = Reassembler(5003, idle_seconds=600)
        events = []
        for port in (40000, 40001):
            handshake(reassembler, events, client_port=port)
        events += reassembler.feed(segment(CLIENT, 0, b'a\n', client_port=40001), 86400.0)   # a time gone wrong
        for offset in (0, 2):
            for port in (40000, 40001):
                events += reassembler.feed(segment(CLIENT, offset + (port == 40001) * 2, b'b\n', client_port=port),
                                           2.0 + offset)
        self.assertEqual([type(event).__name__ for event in events].count('Ended'), 0)


def decode(data, linktype=capwriter.ETHERNET):
    return PacketDecoder().decode(Packet(0, linktype, 0, data, len(data)))


def packet(payload=b'hello', options=b'', total_length=None):
    return ipv4('192.0.2.1', '192.0.2.2', tcp_segment(40000, 5003, 1000, 2000, ACK, payload, options),
                total_length=total_length)


class LyingLengthsTest(unittest.TestCase):
    """Header length fields that cannot be: the packet is skipped, never its header read as payload; the fast
    decoder (Ethernet) and the general one (raw IP) agree."""

    def both_ways(self, ip_packet):
        return [decode(frame(capwriter.ETHERNET, ip_packet)), decode(ip_packet, capwriter.RAW)]

    def test_a_tcp_data_offset_below_five_is_skipped(self):
        for offset in (0, 4):
            data = bytearray(packet())
            data[20 + 12] = offset << 4
            with self.subTest(offset=offset):
                self.assertEqual(self.both_ways(bytes(data)), [None, None])

    def test_an_ip_total_length_below_its_header_is_skipped(self):
        padded = frame(capwriter.ETHERNET, packet(b'hi', total_length=10)).ljust(60, b'\0')
        self.assertIsNone(decode(padded))
        self.assertEqual(self.both_ways(packet(b'hi', total_length=10)), [None, None])

    def test_a_snap_length_in_the_tcp_options_makes_the_payload_missing(self):
        full = packet(b'x' * 100, options=b'\x01' * 12)
        for cut in self.both_ways(full[:20 + 24]):
            self.assertEqual((cut.seq, cut.payload, cut.cut), (1000, b'', 100))


if __name__ == '__main__':
    unittest.main()
