"""Unit tests for TCP reassembly: segments in, each session's bytes in order, once, with holes said."""

import unittest

from tests.harness import seeded_rng
from tests.capwriter import Conversation, ShortReads, frame, pcap, ETHERNET
from ctiproxy.capture import ACK, FIN, RST, SYN, CaptureReader, PacketDecoder, Segment
from ctiproxy.filters import CLIENT, SERVER
from ctiproxy.reassembly import (CAPTURE_END, CLOSED, REPLACED, RESET, Closed, Counts, Data, Ended, Missing, Opened,
                                 Reassembler, StartMissed)

CLIENT_IP = b'\xc0\x00\x02\x01'
SERVER_IP = b'\xc0\x00\x02\x02'
PORT = 5003
ISN = {CLIENT: 1000, SERVER: 5000}


def segment(side, offset, payload=b'', flags=ACK, ack=None, cut=0, client_port=40000, isn=None):
    """A segment from `side` at `offset` bytes into its stream (after the SYN); ack defaults to none."""
    isn = ISN[side] if isn is None else isn
    seq = (isn + 1 + offset) & 0xFFFFFFFF
    if flags & SYN:
        seq = isn
    if ack is None:
        flags &= ~ACK
        ack = 0
    if side == CLIENT:
        return Segment(CLIENT_IP, client_port, SERVER_IP, PORT, seq, ack, flags, payload, cut)
    return Segment(SERVER_IP, PORT, CLIENT_IP, client_port, seq, ack, flags, payload, cut)


def handshake(reassembler, events, client_port=40000, isn=None):
    client_isn = ISN[CLIENT] if isn is None else isn
    events += reassembler.feed(segment(CLIENT, 0, flags=SYN, client_port=client_port, isn=isn), 1.0)
    events += reassembler.feed(segment(SERVER, 0, flags=SYN | ACK, ack=client_isn + 1, client_port=client_port), 1.0)


def stream(events, direction, session=1):
    """The bytes delivered in one direction, a hole shown as <missing N>, a missed start as <start>."""
    out = b''
    for event in events:
        if event.session.number != session or getattr(event, 'direction', direction) != direction:
            continue
        if isinstance(event, Data):
            out += event.data
        elif isinstance(event, Missing):
            out += b'<missing %d>' % event.size
        elif isinstance(event, StartMissed):
            out += b'<start>'
        elif isinstance(event, Closed):
            out += b'<fin>'
    return out


def kinds(events):
    return [type(event).__name__ for event in events]


def ended(events):
    return [event for event in events if isinstance(event, Ended)]


class ReassemblyTest(unittest.TestCase):

    def setUp(self):
        self.reassembler = Reassembler(PORT)
        self.events = []

    def feed(self, *segments, time=2.0):
        for one in segments:
            self.events += self.reassembler.feed(one, time)

    def finish(self):
        self.events += self.reassembler.finish()

    def test_a_whole_connection(self):
        handshake(self.reassembler, self.events)
        self.feed(segment(CLIENT, 0, b'hello\n'), segment(SERVER, 0, b'welcome\n'), segment(CLIENT, 6, b'bye\n'))
        self.feed(segment(CLIENT, 10, flags=FIN | ACK, ack=5009), time=3.0)
        self.feed(segment(SERVER, 8, flags=FIN | ACK, ack=1012), time=4.0)
        self.assertEqual(stream(self.events, CLIENT), b'hello\nbye\n<fin>')
        self.assertEqual(stream(self.events, SERVER), b'welcome\n<fin>')
        self.assertEqual(kinds(self.events), ['Opened', 'Data', 'Data', 'Data', 'Closed', 'Closed', 'Ended'])
        session = self.events[0].session
        self.assertEqual((session.number, session.client, session.server, session.start),
                         (1, ('192.0.2.1', 40000), ('192.0.2.2', 5003), 1.0))
        end = self.events[-1]
        self.assertEqual((end.reason, end.time), (CLOSED, 4.0))
        self.assertEqual(end.counts, {CLIENT: Counts(0, 0), SERVER: Counts(0, 0)})
        self.assertEqual(self.reassembler.sessions_seen, 1)
        self.feed(segment(CLIENT, 11, ack=5010))               # the last ACK: the session has ended
        self.assertEqual(len(self.events), 7)

    def test_nothing_after_a_direction_ended(self):
        handshake(self.reassembler, self.events)
        self.feed(segment(CLIENT, 0, b'last\n', flags=FIN | ACK, ack=5001))
        self.feed(segment(CLIENT, 0, b'last\n'), segment(CLIENT, 6, b'after'))
        self.finish()
        self.assertEqual(stream(self.events, CLIENT), b'last\n<fin>')
        self.assertEqual(ended(self.events)[0].counts[CLIENT], Counts(10, 0))

    def test_reordered_segments_wait_for_the_hole(self):
        handshake(self.reassembler, self.events)
        self.feed(segment(CLIENT, 6, b'world\n'), segment(CLIENT, 12, b'!\n'))
        self.assertEqual(stream(self.events, CLIENT), b'')
        self.feed(segment(CLIENT, 0, b'hello '))
        self.assertEqual(stream(self.events, CLIENT), b'hello world\n!\n')
        self.finish()
        self.assertEqual(ended(self.events)[0].counts[CLIENT], Counts(0, 0))

    def test_retransmission_and_overlap_delivered_once_and_counted(self):
        handshake(self.reassembler, self.events)
        self.feed(segment(CLIENT, 0, b'abcdef'), segment(CLIENT, 0, b'abcdef'),      # 6 again
                  segment(CLIENT, 4, b'efgh'),                                       # 2 again
                  segment(CLIENT, 12, b'mnop'), segment(CLIENT, 10, b'klmn'),        # 2 overlap the held
                  segment(CLIENT, 14, b'opqr'),                                      # 2 overlap the held
                  segment(CLIENT, 7, b'hijklmnopq'),                                 # 1 + 7 again
                  segment(CLIENT, 2, b'cd'))                                         # 2 again
        self.assertEqual(stream(self.events, CLIENT), b'abcdefghijklmnopqr')
        self.finish()
        self.assertEqual(ended(self.events)[0].counts[CLIENT], Counts(6 + 2 + 2 + 2 + 8 + 2, 0))

    def test_sequence_numbers_wrap(self):
        isn = 0xFFFFFFF0
        ISN_BACKUP = ISN[CLIENT]
        ISN[CLIENT] = isn
        try:
            handshake(self.reassembler, self.events, isn=isn)
            self.feed(segment(CLIENT, 0, b'0123456789'), segment(CLIENT, 20, b'KLMNOPQRST'),
                      segment(CLIENT, 10, b'abcdefghij'), segment(CLIENT, 5, b'56789abcde'))
        finally:
            ISN[CLIENT] = ISN_BACKUP
        self.assertEqual(stream(self.events, CLIENT), b'0123456789abcdefghijKLMNOPQRST')

    def test_a_hole_at_fin_is_missing_then_delivery_resumes(self):
        handshake(self.reassembler, self.events)
        self.feed(segment(CLIENT, 0, b'one\n'), segment(CLIENT, 10, b'three\n'),
                  segment(CLIENT, 16, flags=FIN))
        self.assertEqual(stream(self.events, CLIENT), b'one\n')
        self.feed(segment(SERVER, 0, flags=FIN | ACK, ack=1000 + 1 + 17))     # acks everything: the hole is lost
        self.assertEqual(stream(self.events, CLIENT), b'one\n<missing 6>three\n<fin>')
        self.assertEqual(ended(self.events)[0].counts, {CLIENT: Counts(0, 6), SERVER: Counts(0, 0)})

    def test_a_hole_acknowledged_by_the_peer_and_passed_by_the_sender_is_missing_at_once(self):
        handshake(self.reassembler, self.events)
        self.feed(segment(CLIENT, 0, b'one\n'), segment(CLIENT, 10, b'three\n'))
        self.feed(segment(SERVER, 0, ack=1000 + 1 + 10))
        self.assertEqual(stream(self.events, CLIENT), b'one\n<missing 6>three\n')
        self.feed(segment(CLIENT, 4, b'two\n'))                              # too late: counted, not shown
        self.feed(segment(SERVER, 0, ack=1000 + 1 + 30))                     # bytes after all we saw: may come
        self.assertEqual(stream(self.events, CLIENT), b'one\n<missing 6>three\n')
        self.finish()                                                        # they did not
        self.assertEqual(stream(self.events, CLIENT), b'one\n<missing 6>three\n<missing 14>')
        self.assertEqual(ended(self.events)[0].counts[CLIENT], Counts(4, 20))

    def test_a_hole_still_open_at_the_end_of_the_capture(self):
        handshake(self.reassembler, self.events)
        self.feed(segment(CLIENT, 0, b'a\n'), segment(CLIENT, 5, b'c\n'), segment(SERVER, 0, b'x'), time=7.0)
        self.finish()
        self.assertEqual(stream(self.events, CLIENT), b'a\n<missing 3>c\n')
        end = ended(self.events)[0]
        self.assertEqual((end.reason, end.time), (CAPTURE_END, 7.0))
        self.assertEqual(end.counts[CLIENT], Counts(0, 3))

    def test_held_bytes_are_bounded(self):
        self.reassembler = Reassembler(PORT, max_held=1000)
        handshake(self.reassembler, self.events)
        for index in range(20):
            self.feed(segment(CLIENT, 100 + index * 100, b'%099d\n' % index))
        self.assertEqual(stream(self.events, CLIENT)[:13], b'<missing 100>')
        held = sum(len(piece[2]) for piece in self.reassembler._connections[(CLIENT_IP, 40000, SERVER_IP, PORT)]
                   .client.held)
        self.assertLessEqual(held, 1000)
        self.finish()
        self.assertEqual(stream(self.events, CLIENT), b'<missing 100>' + b''.join(b'%099d\n' % i for i in range(20)))

    def test_a_missed_start_begins_at_the_first_captured_byte(self):
        self.feed(segment(SERVER, 3000, b'erver line\n'), segment(CLIENT, 50, b'ient line\nnext\n'))
        self.feed(segment(CLIENT, 65, b'more\n'))
        self.finish()
        self.assertEqual(stream(self.events, CLIENT), b'<start>ient line\nnext\nmore\n')
        self.assertEqual(stream(self.events, SERVER), b'<start>erver line\n')
        self.assertEqual(self.events[0].session.client, ('192.0.2.1', 40000))    # the server is the side on the port

    def test_a_syn_ack_without_its_syn_gives_the_client_start(self):
        self.feed(segment(SERVER, 0, flags=SYN | ACK, ack=1001), segment(CLIENT, 0, b'hello\n', ack=5001),
                  segment(SERVER, 0, b'hi\n', ack=1007))
        self.finish()
        self.assertEqual((stream(self.events, CLIENT), stream(self.events, SERVER)), (b'hello\n', b'hi\n'))

    def test_a_pure_ack_first_then_data(self):
        self.feed(segment(CLIENT, 50, ack=1), segment(CLIENT, 50, b'x\n'))
        self.finish()
        self.assertEqual(stream(self.events, CLIENT), b'<start>x\n')

    def test_reset_ends_the_session_and_a_new_syn_starts_another(self):
        handshake(self.reassembler, self.events)
        self.feed(segment(CLIENT, 0, b'a'), segment(CLIENT, 3, b'c'))
        self.feed(segment(SERVER, 0, flags=RST), time=5.0)
        self.assertEqual(stream(self.events, CLIENT), b'a<missing 2>c')
        self.assertEqual((ended(self.events)[0].reason, ended(self.events)[0].time), (RESET, 5.0))
        self.feed(segment(CLIENT, 4, b'late'))                                   # ignored
        ISN[CLIENT] = 9000
        try:
            handshake(self.reassembler, self.events)
            self.feed(segment(CLIENT, 0, b'new'))
        finally:
            ISN[CLIENT] = 1000
        self.finish()
        self.assertEqual(stream(self.events, CLIENT, session=2), b'new')
        self.assertEqual([e.session.number for e in self.events if isinstance(e, Opened)], [1, 2])

    def test_a_syn_again_is_ignored_a_new_isn_replaces_the_session(self):
        handshake(self.reassembler, self.events)
        self.feed(segment(CLIENT, 0, flags=SYN), segment(CLIENT, 0, b'data'))
        self.assertEqual(self.reassembler.sessions_seen, 1)
        self.feed(segment(CLIENT, 0, flags=SYN, isn=77777))
        self.assertEqual(self.reassembler.sessions_seen, 2)
        self.assertEqual(ended(self.events)[0].reason, REPLACED)
        self.assertEqual(stream(self.events, CLIENT), b'data')

    def test_sessions_are_numbered_in_order_of_their_first_packet(self):
        for port in (40001, 40002, 40003):
            handshake(self.reassembler, self.events, client_port=port)
        self.feed(segment(SERVER, 0, b'to 3', client_port=40003), segment(SERVER, 0, b'to 1', client_port=40001))
        self.finish()
        self.assertEqual([(e.session.number, e.session.client[1]) for e in self.events if isinstance(e, Opened)],
                         [(1, 40001), (2, 40002), (3, 40003)])
        self.assertEqual(stream(self.events, SERVER, session=3), b'to 3')
        self.assertEqual(len(ended(self.events)), 3)

    def test_both_sides_on_the_server_port(self):
        handshake(self.reassembler, self.events, client_port=PORT)
        self.feed(segment(CLIENT, 0, b'ping', client_port=PORT), segment(SERVER, 0, b'pong', client_port=PORT))
        self.finish()
        self.assertEqual((stream(self.events, CLIENT), stream(self.events, SERVER)), (b'ping', b'pong'))
        self.assertEqual(self.reassembler.sessions_seen, 1)

    def test_a_snap_length_cut_is_missing(self):
        handshake(self.reassembler, self.events)
        self.feed(segment(CLIENT, 0, b'abc', cut=7), segment(CLIENT, 10, b'klm', cut=2),
                  segment(CLIENT, 20, b'uv', cut=3), segment(CLIENT, 15, b'pq', cut=3))
        self.assertEqual(stream(self.events, CLIENT), b'abc<missing 7>klm<missing 2>pq<missing 3>uv<missing 3>')

    def test_ports_seen_without_traffic_on_the_server_port(self):
        def other(sport, dport, flags=ACK):
            return Segment(CLIENT_IP, sport, SERVER_IP, dport, 1, 1, flags, b'', 0)
        self.feed(other(40000, 22), other(22, 40000), other(40001, 22), other(50000, 443, SYN),
                  other(443, 50000, SYN | ACK), other(443, 50000), other(8080, 60000, SYN))
        self.assertEqual(self.reassembler.ports_seen(), [(22, 3), (443, 3), (60000, 1)])
        self.assertEqual((self.events, self.reassembler.sessions_seen), ([], 0))

    def test_random_streams_come_out_byte_exact(self):
        rng = seeded_rng(self)
        for round_ in range(40):
            with self.subTest(round=round_):
                self.random_round(rng, lose=round_ % 2)

    def random_round(self, rng, lose):
        """Random streams in random overlapping segments, reordered nearby, some twice, some lost (`lose`);
        the ACKs say what has gone past the capture.  Out: each byte seen once, each lost range missing."""
        reassembler = Reassembler(PORT)
        sent = {side: bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 5000))) for side in (CLIENT, SERVER)}
        isn = {side: rng.choice([rng.getrandbits(32), 0xFFFFFFFF - rng.randrange(3000)]) for side in (CLIENT, SERVER)}
        pieces = []
        for side, data in sent.items():
            position = 0
            while position < len(data):
                size = rng.randrange(1, 300)
                start = max(0, position - rng.randrange(0, 50) if rng.random() < 0.2 else position)  # overlaps
                pieces.append((side, start, data[start:position + size]))
                if rng.random() < 0.1:
                    pieces.append((side, start, data[start:position + size]))                     # duplicates
                position += size
        if lose:
            pieces = [piece for piece in pieces if rng.random() > 0.1]
        for index in range(len(pieces)):                                                          # reorder nearby
            other = min(len(pieces) - 1, index + rng.randrange(0, 8))
            pieces[index], pieces[other] = pieces[other], pieces[index]
        events = reassembler.feed(segment(CLIENT, 0, flags=SYN, isn=isn[CLIENT]), 1.0)
        events += reassembler.feed(segment(SERVER, 0, flags=SYN | ACK, ack=isn[CLIENT] + 1, isn=isn[SERVER]), 1.0)
        seen = {side: bytearray(len(data)) for side, data in sent.items()}
        acked = {CLIENT: 0, SERVER: 0}            # the prefix of each side's bytes that has gone past the capture
        for side, start, data in pieces:
            other = SERVER if side == CLIENT else CLIENT
            ack = (isn[other] + 1 + acked[other]) & 0xFFFFFFFF if rng.random() < 0.5 else None
            events += reassembler.feed(segment(side, start, data, ack=ack, isn=isn[side]), 1.0)
            seen[side][start:start + len(data)] = b'\1' * len(data)
            while acked[side] < len(seen[side]) and seen[side][acked[side]]:
                acked[side] += 1
        events += reassembler.finish()
        for side in (CLIENT, SERVER):
            expected, missing = self.expected_stream(sent[side], seen[side])
            self.assertEqual(stream(events, side), expected)
            self.assertEqual(ended(events)[0].counts[side],
                             Counts(sum(len(d) for s, _, d in pieces if s == side) - seen[side].count(1), missing))

    def test_random_losses_acknowledged_past(self):
        """Segments the capture lost but the server got: its ACKs pass them, they are said missing at once;
        every byte shown is the one sent there, every byte never captured is in a hole, each byte said once."""
        rng = seeded_rng(self)
        for round_ in range(20):
            with self.subTest(round=round_):
                self.lossy_round(rng)

    def lossy_round(self, rng):
        reassembler = Reassembler(PORT)
        sent = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 5000)))
        pieces, position = [], 0
        while position < len(sent):
            size = rng.randrange(1, 300)
            start = max(0, position - rng.randrange(0, 50) if rng.random() < 0.2 else position)
            for _ in range(2 if rng.random() < 0.1 else 1):
                pieces.append((start, sent[start:position + size], rng.random() < 0.1))
            position += size
        for index in range(len(pieces)):
            other = min(len(pieces) - 1, index + rng.randrange(0, 8))
            pieces[index], pieces[other] = pieces[other], pieces[index]
        events = []
        handshake(reassembler, events)
        received, acked, captured, highest_ack = bytearray(len(sent)), 0, bytearray(len(sent)), 0
        for start, data, lost in pieces:
            if not lost:
                events += reassembler.feed(segment(CLIENT, start, data), 1.0)
                captured[start:start + len(data)] = b'\1' * len(data)
            received[start:start + len(data)] = b'\1' * len(data)
            while acked < len(sent) and received[acked]:
                acked += 1
            if rng.random() < 0.5:
                events += reassembler.feed(segment(SERVER, 0, ack=ISN[CLIENT] + 1 + acked), 1.0)
                highest_ack = acked
        events += reassembler.finish()
        position, delivered, holes = 0, 0, bytearray(len(sent))
        for event in events:
            if isinstance(event, Data) and event.direction == CLIENT:
                self.assertEqual(event.data, sent[position:position + len(event.data)])
                position += len(event.data)
                delivered += len(event.data)
            elif isinstance(event, Missing) and event.direction == CLIENT:
                holes[position:position + event.size] = b'\1' * event.size
                position += event.size
        captured_end = len(sent) - (captured[::-1].find(1) if 1 in captured else len(sent))
        self.assertGreaterEqual(position, captured_end)
        self.assertLessEqual(position, max(captured_end, highest_ack))      # a lost end said when ACKed past
        self.assertFalse([i for i in range(position) if not captured[i] and not holes[i]])
        fed = sum(len(data) for _, data, lost in pieces if not lost)
        self.assertEqual(ended(events)[0].counts[CLIENT], Counts(fed - delivered, holes.count(1)))

    @staticmethod
    def expected_stream(data, seen):
        """The bytes seen, each range not seen before the last one seen as <missing N>; the missing count."""
        out, missing, position = b'', 0, 0
        last = len(seen) - seen[::-1].find(1) if 1 in seen else 0
        while position < last:
            run = position
            while run < last and seen[run] == seen[position]:
                run += 1
            if seen[position]:
                out += data[position:run]
            else:
                out += b'<missing %d>' % (run - position)
                missing += run - position
            position = run
        return out, missing


class CaptureToEventsTest(unittest.TestCase):
    """A capture file, through the reader, decoder and reassembler, read in short pieces."""

    def test_conversation_over_ethernet_ipv6(self):
        talk = Conversation(client=('2001:db8::1', 40000), server=('2001:db8::2', 5003))
        packets = [talk.packet('client', flags=SYN), talk.packet('server', flags=SYN | ACK),
                   talk.packet('client', b'{"class": "login_id"}\n'),
                   talk.packet('server', b'{"class": "login_id", "sessionid": "x"}\n'),
                   talk.packet('client', flags=FIN | ACK), talk.packet('server', flags=FIN | ACK)]
        data = pcap([(i * 1000000000, frame(ETHERNET, packet)) for i, packet in enumerate(packets)])
        reader = CaptureReader(ShortReads(data))
        decoder = PacketDecoder()
        reassembler = Reassembler(5003)
        events = []
        for packet in reader.packets():
            events += reassembler.feed(decoder.decode(packet), packet.time)
        events += reassembler.finish()
        self.assertEqual(kinds(events), ['Opened', 'Data', 'Data', 'Closed', 'Closed', 'Ended'])
        self.assertEqual(events[0].session.client, ('2001:db8::1', 40000))
        self.assertEqual([e.time for e in events], [0.0, 2.0, 3.0, 4.0, 5.0, 5.0])
        self.assertEqual(stream(events, SERVER), b'{"class": "login_id", "sessionid": "x"}\n<fin>')
