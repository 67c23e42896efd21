"""Third review of captures: an ACK captured before the data it acknowledges, IPv4 total length 0 (segmentation
offload), a TCP header cut by the snap length, a retransmission that disagrees with the first copy."""

import socket
import unittest

from tests import capwriter
from tests.capwriter import frame, ipv4, tcp_segment
from tests.test_capture_read import BANNER, LOGIN, LOGIN_ANSWER, Capture, CaptureTestCase, login_session, shown
from tests.harness import TIMEOUT, closed_port
from tests.test_reassembly import handshake, segment, stream
from tests.test_simulator import SimServer, Talk, ctisim
from ctiproxy.capture import ACK, TCP_HEADER_CUT, Packet, PacketDecoder
from ctiproxy.filters import CLIENT, SERVER
from ctiproxy.reassembly import KEPT_UNACKED, KEPT_UNACKED_PIECES, Differs, Reassembler
from ctiproxy.sim.recorded import load_session

CLIENT_NEXT = 1000 + 1          # the client's first byte's sequence number (tests/test_reassembly.py's ISN)


class ConnectionTestCase(unittest.TestCase):
    """A reassembler after a handshake; feed() gives it segments, self.events what came out."""

    def setUp(self):
        self.reassembler = Reassembler(5003)
        self.events = []
        handshake(self.reassembler, self.events)

    def feed(self, *segments):
        for one in segments:
            self.events += self.reassembler.feed(one, 2.0)


class AckBeforeDataTest(ConnectionTestCase):
    """A capture reorders packets across interfaces or CPUs: an ACK may come before the data it acknowledges.
    Its bytes are said missing only once the sender's own packets have gone past them, or at the end."""

    def test_the_data_after_its_ack_is_shown_not_missing(self):
        self.feed(segment(SERVER, 0, ack=CLIENT_NEXT + 6), segment(CLIENT, 0, b'hello\n'))
        self.feed(segment(SERVER, 0, b'hi\n', ack=CLIENT_NEXT + 6))
        self.events += self.reassembler.finish()
        self.assertEqual(stream(self.events, CLIENT), b'hello\n')
        self.assertEqual(stream(self.events, SERVER), b'hi\n')

    def test_two_segments_after_their_ack_and_out_of_order(self):
        self.feed(segment(CLIENT, 6, b'world\n'), segment(SERVER, 0, ack=CLIENT_NEXT + 12),
                  segment(CLIENT, 0, b'hello\n'))
        self.assertEqual(stream(self.events, CLIENT), b'hello\nworld\n')

    def test_missing_once_the_sender_sends_past_the_acked_bytes(self):
        self.feed(segment(SERVER, 0, ack=CLIENT_NEXT + 6))
        self.assertEqual(stream(self.events, CLIENT), b'')
        self.feed(segment(CLIENT, 6, b'next\n'))
        self.assertEqual(stream(self.events, CLIENT), b'<missing 6>next\n')

    def test_missing_when_the_ack_comes_after_a_later_segment_it_does_not_cover(self):
        self.feed(segment(CLIENT, 6, b'next\n'), segment(SERVER, 0, ack=CLIENT_NEXT + 6))
        self.assertEqual(stream(self.events, CLIENT), b'<missing 6>next\n')

    def test_a_later_segment_the_ack_covers_waits_for_the_sender_s_next(self):
        self.feed(segment(CLIENT, 6, b'next\n'), segment(SERVER, 0, ack=CLIENT_NEXT + 11))
        self.assertEqual(stream(self.events, CLIENT), b'')
        self.feed(segment(CLIENT, 11, b'more\n'))
        self.assertEqual(stream(self.events, CLIENT), b'<missing 6>next\nmore\n')

    def test_missing_at_the_end_when_nothing_more_comes(self):
        self.feed(segment(SERVER, 0, ack=CLIENT_NEXT + 6))
        self.events += self.reassembler.finish()
        self.assertEqual(stream(self.events, CLIENT), b'<missing 6>')


class AckBeforeDataReadTest(CaptureTestCase):
    """End to end: ctispy reads a capture where the server's ACK comes before the client's data."""

    def test_no_bytes_said_missing(self):
        capture = Capture()
        capture.handshake()
        capture.add('server', BANNER)
        capture.add('client', LOGIN)
        capture.add('server', b'')                                # the ACK of LOGIN ...
        capture.records[-2:] = capture.records[-1:] + capture.records[-2:-1]   # ... captured before it
        capture.add('server', LOGIN_ANSWER)
        capture.close()
        status, out, err = self.read('ctispy', '-', stdin=capture.pcap())
        self.assertEqual((status, err), (0, ''))
        self.assertNotIn('missing', out.decode())
        self.assertEqual([body for _, body in shown(out)],
                         [[BANNER.decode().strip()], [LOGIN.decode().strip()], [LOGIN_ANSWER.decode().strip()]])


def offloaded(payload, linktype=capwriter.ETHERNET, pad_to=0, captured=None):
    """A Packet of a TCP segment with IPv4 total length 0, its frame padded to `pad_to` bytes and cut to
    `captured` bytes."""
    ip_packet = ipv4('192.0.2.1', '192.0.2.2', tcp_segment(40000, 5003, 1000, 2000, ACK, payload), total_length=0)
    data = frame(linktype, ip_packet).ljust(pad_to, b'\0')
    return Packet(0, linktype, 0, data[:captured], len(data))


class OffloadTest(unittest.TestCase):
    """IPv4 total length 0 (taken on the sending host, with TCP segmentation offload): the packet is the frame's,
    as Wireshark reads it; never its padding, never less than the frame held."""

    def decode(self, packet):
        segment = PacketDecoder().decode(packet)
        return segment.payload, segment.cut

    def test_the_whole_frame_is_the_packet(self):
        payload = bytes(range(256)) * 40
        for linktype in (capwriter.ETHERNET, capwriter.LINUX_SLL2, capwriter.RAW):
            with self.subTest(linktype=linktype):
                self.assertEqual(self.decode(offloaded(payload, linktype)), (payload, 0))

    def test_a_snap_length_cut_is_said_missing_not_lost(self):
        payload = b'x' * 3000
        self.assertEqual(self.decode(offloaded(payload, captured=14 + 40 + 1000)), (b'x' * 1000, 2000))

    def test_ethernet_padding_is_not_payload(self):
        """A packet too short to be offloaded: its TCP header only.  Bytes after it cannot be told from padding:
        if they were data, the reassembly says them missing once the sender's next segment comes past them."""
        for payload in (b'', b'ab'):
            with self.subTest(payload=payload):
                self.assertEqual(self.decode(offloaded(payload, pad_to=60)), (b'', 0))
                self.assertEqual(self.decode(offloaded(payload, capwriter.LINUX_SLL, pad_to=62)), (b'', 0))


class OffloadReadTest(CaptureTestCase):
    """End to end: a capture on the sending host, whose big packets have IPv4 total length 0 and whose
    ACKs arrive padded, reads as the conversation."""

    def test_no_byte_lost_or_invented(self):
        capture = Capture()
        capture.handshake()
        big = b'{"class": "getlist", "list": "%s"}\n' % (b'x' * 5000)
        capture.add('server', big)
        capture.add('client', b'')
        capture.add('client', LOGIN)
        capture.add('server', b'')
        capture.close()
        records = []
        for when, ip_packet in capture.records:
            data = bytearray(frame(capwriter.ETHERNET, ip_packet).ljust(60, b'\0'))
            data[16:18] = b'\0\0'                                  # IPv4 total length 0
            records.append((when, bytes(data)))
        status, out, err = self.read('ctispy', '-', stdin=capwriter.pcap(records))
        self.assertEqual((status, err), (0, ''))
        self.assertNotIn('missing', out.decode())
        self.assertEqual([body for _, body in shown(out)], [[big.decode().strip()], [LOGIN.decode().strip()]])


def cut_to(size, packets):
    """Ethernet frames of IP packets as a capture of snap length `size` holds them: (frame, original length)."""
    frames = [frame(capwriter.ETHERNET, ip_packet) for ip_packet in packets]
    return [(data[:size], len(data)) for data in frames]


class TcpHeaderCutTest(unittest.TestCase):
    """A snap length below the TCP header's first 14 bytes (ports to flags): the packet cannot be placed."""

    def test_each_size_below_the_flags_is_a_cut_header(self):
        ip_packet = ipv4('192.0.2.1', '192.0.2.2', tcp_segment(40000, 5003, 1000, 2000, ACK, b'hello\n'))
        for size in range(14 + 10, 14 + 20 + 14):           # from the IP protocol byte to the TCP flags
            data, original = cut_to(size, [ip_packet])[0]
            decoder = PacketDecoder()
            with self.subTest(size=size):
                self.assertIs(decoder.decode(Packet(0, capwriter.ETHERNET, 0, data, original)), TCP_HEADER_CUT)
                self.assertEqual((decoder.headers_cut, decoder.skipped), (1, 0))

    def test_a_packet_that_short_but_whole_is_skipped(self):
        ip_packet = ipv4('192.0.2.1', '192.0.2.2', tcp_segment(40000, 5003, 1000, 2000, ACK))[:30]
        data = frame(capwriter.ETHERNET, ip_packet)
        decoder = PacketDecoder()
        self.assertIsNone(decoder.decode(Packet(0, capwriter.ETHERNET, 0, data, len(data))))
        self.assertEqual((decoder.headers_cut, decoder.skipped), (0, 1))


class TcpHeaderCutReadTest(CaptureTestCase):
    """End to end: a capture whose snap length cuts TCP headers says so once, and invents nothing."""

    def capture(self, sizes):
        """The login session, its packets cut to sizes (one per packet, the last repeated)."""
        records = login_session().records
        sizes = list(sizes) + [sizes[-1]] * len(records)
        frames = [cut_to(size, [ip_packet])[0] for size, (_, ip_packet) in zip(sizes, records)]
        return capwriter.pcap([(when, data, original) for (when, _), (data, original) in zip(records, frames)])

    def test_every_packet_cut(self):
        status, out, err = self.read('ctispy', '-', stdin=self.capture([14 + 20 + 6]))
        self.assertEqual((status, out), (1, b''))
        self.assertEqual(err.count("snap length cut"), 2, err)
        self.assertIn("warning: the capture's snap length cuts TCP packets inside their TCP header (the first at "
                      "byte 24)", err)
        self.assertIn('no TCP traffic on port 5003: the capture\'s snap length cut each of its 11 TCP packets', err)

    def test_some_packets_cut(self):
        whole = 1 << 16
        status, out, err = self.read('ctispy', '-', stdin=self.capture([whole] * 4 + [14 + 20 + 6, whole]))
        self.assertEqual(status, 0)
        self.assertEqual(err.count('\n'), 1, err)
        self.assertIn("snap length cuts TCP packets inside their TCP header", err)
        self.assertIn("bytes missing from the client's stream", out.decode())
        self.assertEqual([body for _, body in shown(out)][:2],
                         [[BANNER.decode().strip()], [LOGIN_ANSWER.decode().strip()]])


class DifferingRetransmissionTest(ConnectionTestCase):
    """Bytes captured again that differ from the first copy: the first is delivered, the difference said."""

    def differs(self):
        return [(event.direction, event.size, event.differing) for event in self.events if isinstance(event, Differs)]

    def client(self):
        return next(iter(self.reassembler._connections.values())).client

    def test_again_after_delivery(self):
        self.feed(segment(CLIENT, 0, b'hello\n'), segment(CLIENT, 0, b'jello\n'), segment(CLIENT, 3, b'lo\n'))
        self.assertEqual(stream(self.events, CLIENT), b'hello\n')
        self.assertEqual(self.differs(), [(CLIENT, 6, 1)])

    def test_again_while_waiting_for_a_hole(self):
        self.feed(segment(SERVER, 6, b'world\n'), segment(SERVER, 4, b'o\nwarld\nmore\n'), segment(SERVER, 0, b'hell'))
        self.assertEqual(stream(self.events, SERVER), b'hello\nworld\nmore\n')
        self.assertEqual(self.differs(), [(SERVER, 6, 1)])

    def test_the_same_bytes_again_are_not_said(self):
        self.feed(segment(CLIENT, 0, b'hello\n'), segment(CLIENT, 8, b'c\n'), segment(CLIENT, 0, b'hello\nb\nc\n'))
        self.assertEqual(stream(self.events, CLIENT), b'hello\nb\nc\n')
        self.assertEqual(self.differs(), [])

    def test_acked_bytes_are_not_kept(self):
        self.feed(segment(CLIENT, 0, b'hello\n'), segment(SERVER, 0, ack=CLIENT_NEXT + 4))
        self.assertEqual(list(self.client().unacked), [(CLIENT_NEXT + 4, b'o\n')])
        self.feed(segment(SERVER, 0, ack=CLIENT_NEXT + 6), segment(CLIENT, 0, b'jello\n'))
        self.assertEqual((self.differs(), self.client().unacked_bytes), ([], 0))

    def test_the_bytes_kept_are_bounded(self):
        for offset in range(0, 4 * KEPT_UNACKED, 1000):
            self.feed(segment(CLIENT, offset, b'x' * 1000))
        client = self.client()
        self.assertEqual(client.unacked_bytes, KEPT_UNACKED)
        self.assertEqual(sum(len(data) for _, data in client.unacked), KEPT_UNACKED)
        end = client.next - CLIENT_NEXT
        self.feed(segment(CLIENT, end - 10, b'y' * 10), segment(CLIENT, 0, b'y' * 10))
        self.assertEqual(self.differs(), [(CLIENT, 10, 10)])       # the first ten bytes are not kept any more

    def test_the_segments_kept_are_bounded(self):
        for offset in range(KEPT_UNACKED_PIECES * 2):
            self.feed(segment(CLIENT, offset, b'x'))
        client = self.client()
        self.assertEqual((len(client.unacked), client.unacked_bytes), (KEPT_UNACKED_PIECES, KEPT_UNACKED_PIECES))
        self.feed(segment(CLIENT, KEPT_UNACKED_PIECES * 2 - 2, b'yy'))
        self.assertEqual(self.differs(), [(CLIENT, 2, 2)])


class DifferingRetransmissionReadTest(CaptureTestCase):
    """End to end: ctispy says that a capture disagrees with itself, and shows the first copy."""

    def test_a_notice_says_it(self):
        capture = Capture()
        capture.handshake()
        capture.add('client', LOGIN)
        changed = LOGIN.replace(b'alice', b'bobby')
        capture.add('client', changed, seq=capture.conversation.seq['client'] - len(LOGIN), advance=False)
        capture.add('server', LOGIN_ANSWER)
        capture.close()
        status, out, err = self.read('ctispy', '-', stdin=capture.pcap())
        self.assertEqual((status, err), (0, ''))
        self.assertIn("-- the capture disagrees with itself: 5 of %d bytes of the client's stream captured again (a "
                      "retransmission) differ from their first copy; the first copy is shown" % len(LOGIN),
                      out.decode())
        self.assertEqual([body for _, body in shown(out)], [[LOGIN.decode().strip()], [LOGIN_ANSWER.decode().strip()]])


class ReplayCapturePortTest(CaptureTestCase):
    """ctisim --replay of a capture takes its sessions on --capture-port, as the tools' --read takes --port."""

    def test_the_server_replays_a_capture_on_another_port(self):
        path = self.write('cti.pcap', login_session(Capture(server=('192.0.2.2', 15003))).pcap())
        server = SimServer('--replay', path, '--speed', '0', '--no-starttls', '--capture-port', '15003')
        self.addCleanup(server.__exit__)
        self.assertIsNotNone(server.port, server.start_line)
        talk = Talk(socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT))
        self.assertEqual(talk.read_line(), BANNER)
        talk.quit()
        status, err = server.stop()
        self.assertEqual(status, 0, err)

    def test_no_traffic_on_the_port_names_the_option(self):
        path = self.write('cti.pcap', login_session(Capture(server=('192.0.2.2', 15003))).pcap())
        for command in ('server', 'client'):
            with self.subTest(command=command):
                status, out, err = ctisim(command, '127.0.0.1', '--port', str(closed_port()), '--replay', path) \
                    if command == 'client' else ctisim(command, '--port', '0', '--replay', path)
                self.assertEqual(status, 1)
                self.assertIn('no TCP traffic on port 5003 (--capture-port): the capture holds TCP ports 15003', err)

    def test_capture_port_needs_replay(self):
        status, _, err = ctisim('server', '--capture-port', '15003')
        self.assertEqual(status, 2)
        self.assertIn('--capture-port needs --replay', err)

    def test_load_session_of_a_capture_on_another_port(self):
        path = self.write('cti.pcap', login_session(Capture(server=('192.0.2.2', 15003))).pcap())
        self.assertEqual(len(load_session(path, capture_port=15003).exchanges), 2)


if __name__ == '__main__':
    unittest.main()
