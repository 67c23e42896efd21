"""TCP reassembly, I/O-free: captured segments in, each connection's bytes in order out, as events.

Each TCP connection on the server port is a session, numbered from 1 in order of its first packet; the
server is the side on that port.  Per direction, bytes come out in sequence order, each byte once;
segments ahead of a hole wait (up to a bound) until it fills; a hole that never fills is said (Missing)
and delivery resumes after it.  An ACK of bytes the capture has not shown is not enough to say them missing
(a capture reorders packets across interfaces and CPUs: the data may come in the next packets); they are said
missing once the sender's own packets have gone past them (a segment that starts at or after the ACKed
position, or its FIN), when the bound on waiting data is reached, or when the session ends.  Bytes that come
again are compared with their first copy while it is kept (waiting, or delivered and not yet ACKed, up to
KEPT_UNACKED bytes a direction): a difference is said (Differs); the first copy is the one delivered.

Memory is bounded however long the capture: a connection with no packet for `idle_seconds` of the capture's
time ends (IDLE), and so does the least recently active one when `max_open` are open and another opens
(CROWDED).  Neither loses a byte: a later packet with bytes of such a connection opens a new session, which
says which one it continues (Resumed) and reads on from that packet, as a connection whose start was not
captured.
"""

import bisect
import collections

from .capture import ACK, FIN, RST, SYN, address_text
from .filters import CLIENT, SERVER

Session = collections.namedtuple('Session', 'number client server start')
Session.__doc__ = 'A plain description of a session: number, client and server (ip, port), time of its first packet.'
Counts = collections.namedtuple('Counts', 'retransmitted missing')

# The events: each has the Session and the time of the packet that brought it; direction is the side that sent.
Opened = collections.namedtuple('Opened', 'session time')
StartMissed = collections.namedtuple('StartMissed', 'session time direction')   # its first bytes may be mid-line
Data = collections.namedtuple('Data', 'session time direction data')
Missing = collections.namedtuple('Missing', 'session time direction size')      # a hole never filled: read on
Closed = collections.namedtuple('Closed', 'session time direction')             # FIN, after all its bytes
Ended = collections.namedtuple('Ended', 'session time reason counts')  # counts: {CLIENT: Counts, SERVER: Counts}
Resumed = collections.namedtuple('Resumed', 'session time earlier')   # continues session number `earlier`
# Bytes captured again that differ from their first copy: `size` bytes compared, `differing` of them differ.
Differs = collections.namedtuple('Differs', 'session time direction size differing')

CLOSED = 'closed'
RESET = 'reset'
CAPTURE_END = 'capture end'
REPLACED = 'replaced'
IDLE = 'idle'                 # no packet for idle_seconds of the capture's time
CROWDED = 'crowded'           # the least recently active of max_open sessions, when one more opened
_RESUMABLE = (IDLE, CROWDED)  # ends that the connection did not make: its later bytes open a new session

IDLE_SECONDS = 600            # a CTI client's keepalives come far more often (and a later packet resumes it)
MAX_OPEN = 10000              # sessions open at once: about 10 KB each in ctistat
KEPT_UNACKED = 8192           # delivered bytes kept, per direction until ACKed, to compare a retransmission with
KEPT_UNACKED_PIECES = 64      # and at most this many segments of them: each retransmission looks through them

_new_tuple = tuple.__new__             # a namedtuple made without its __new__'s extra call, for the common path
_MASK = 0xFFFFFFFF
_HALF = 1 << 31
_ENDED_REMEMBERED = 1 << 14     # ended connections whose late packets are still recognised and dropped


def _brings_new_bytes(segment, end):
    """Whether a segment has bytes past a direction's `end` (see _Direction.end; None: any bytes are new)."""
    if not segment.payload:
        return False
    if end is None:
        return True
    past = (segment.seq + len(segment.payload) - end[0]) & _MASK
    return 0 < past < _HALF


class _Direction:
    """One direction of a connection: where its stream is, what waits ahead of a hole, its counters.

    Positions are unwrapped sequence numbers: the first one seen, then counting on past 2^32.
    """

    __slots__ = ('name', 'next', 'held', 'held_bytes', 'fin', 'closed', 'isn', 'start_missed', 'at_line_start',
                 'retransmitted', 'missing', 'acked', 'furthest', 'unacked', 'unacked_bytes')

    def __init__(self, name):
        self.name = name
        self.next = None            # the position of the next byte to deliver; None before the first segment
        self.held = []              # (start, end, data or None for bytes the capture cut), sorted, disjoint
        self.held_bytes = 0
        self.fin = None             # the position of the FIN, once seen
        self.closed = False
        self.isn = None             # the SYN's sequence number, when it was captured
        self.start_missed = False   # a StartMissed is due before this direction's first bytes
        self.at_line_start = False  # the next byte starts a line for sure: after the SYN, or a newline delivered
        self.retransmitted = 0
        self.missing = 0
        self.acked = 0              # the furthest position the peer ACKed (0: none past what was delivered)
        self.furthest = 0           # the furthest position where a segment of this side started, off the fast path
        self.unacked = collections.deque()    # [start, data] delivered, not yet ACKed: the last KEPT_UNACKED bytes
        self.unacked_bytes = 0

    def position(self, seq):
        """The unwrapped position of a 32-bit sequence number, the nearest to `next`."""
        ahead = (seq - self.next) & _MASK
        if ahead >= _HALF:              # more than 2^31 ahead is behind
            ahead -= _MASK + 1
        return self.next + ahead

    def end(self):
        """Where the direction ended: None before its first segment, else (the 32-bit sequence number of its next
        byte, whether that byte starts a line for sure)."""
        if self.next is None:
            return None
        return self.next & _MASK, self.at_line_start

    def resume(self, seq, at_line_start):
        """Read on from where an earlier session of the connection ended (see end())."""
        self.next = seq
        self.start_missed = not at_line_start
        self.at_line_start = at_line_start

    def start(self, seq):
        """The first segment seen of a direction whose SYN was not captured."""
        self.next = seq
        self.start_missed = True


class _Connection:
    __slots__ = ('key', 'session', 'client', 'server', 'last_time')

    def __init__(self, key, session):
        self.key = key
        self.session = session
        self.client = _Direction(CLIENT)
        self.server = _Direction(SERVER)
        self.last_time = session.start


class Reassembler:
    """Segments of a capture in (feed), events out; `finish` at the end of the capture."""

    def __init__(self, server_port, max_held=4 << 20, max_held_pieces=1 << 14, idle_seconds=IDLE_SECONDS,
                 max_open=MAX_OPEN):
        """idle_seconds: 0 or None for never."""
        self.server_port = server_port
        self.max_held = max_held
        self.max_held_pieces = max_held_pieces      # tiny segments: each piece costs far more than its bytes
        self.idle_seconds = idle_seconds or None
        self.max_open = max_open
        self.sessions_seen = 0
        self._connections = collections.OrderedDict()   # the least recently active first
        self._latest = None                 # the connection of the last packet: the last in _connections
        self._idle_check = float('inf')     # the capture time from which the first connection may be idle
        self._previous_time = float('-inf')  # of the packet before: a single packet's time far ahead ends nothing
        self._ended = collections.OrderedDict()   # key: (reason, session number, ends)
        self._other_ports = collections.Counter()

    def ports_seen(self):
        """[(port, packets)] of the TCP packets not on the server port, most packets first."""
        return self._other_ports.most_common()

    def feed(self, segment, time):
        """The events that one captured segment brings (a list, often of one Data)."""
        src, sport, dst, dport, seq, ack, flags, payload, cut = segment
        if dport == self.server_port:
            key = (src, sport, dst, dport)
            from_client = True
            if sport == dport and key not in self._connections:     # port to the same port
                reverse = (dst, dport, src, sport)
                if reverse in self._connections or reverse in self._ended:
                    key, from_client = reverse, False
        elif sport == self.server_port:
            key = (dst, dport, src, sport)
            from_client = False
        else:
            self._count_other(segment)
            return []
        events = []
        previous, self._previous_time = self._previous_time, time
        if time >= self._idle_check and previous >= self._idle_check:     # two packets in a row say it
            self._end_idle(min(time, previous), key, events)
        connection = self._connections.get(key)
        opening = from_client and flags & (SYN | ACK) == SYN
        if connection is None:
            ended = self._ended.get(key)
            if ended is not None and not opening:
                reason, number, ends = ended
                if reason not in _RESUMABLE or not _brings_new_bytes(segment, ends[not from_client]):
                    return events                      # a late packet of a connection that ended
                connection = self._open(key, time, events)
                events.append(Resumed(connection.session, time, number))
                for direction, end in zip((connection.client, connection.server), ends):
                    if end is not None:                # where it ended: what comes again is retransmitted
                        direction.resume(*end)
            else:
                connection = self._open(key, time, events)
        elif opening and connection.client.isn != seq:
            self._end(connection, time, REPLACED, events)
            connection = self._open(key, time, events)
        elif connection is not self._latest:
            self._connections.move_to_end(key)
            self._latest = connection
        connection.last_time = time
        if from_client:
            sender, receiver = connection.client, connection.server
        else:
            sender, receiver = connection.server, connection.client
        if flags & RST:
            self._end(connection, time, RESET, events)
            return events
        if flags & SYN:
            if sender.next is None:
                sender.isn = seq
                sender.next = seq + 1
                sender.at_line_start = True
            if flags & ACK and receiver.next is None:     # a SYN-ACK whose SYN was not captured: it says where
                receiver.isn = (ack - 1) & _MASK
                receiver.next = ack
                receiver.at_line_start = True
            seq = (seq + 1) & _MASK
        elif sender.next is None:
            sender.start(seq)
        if seq != sender.next & _MASK:
            start = sender.position(seq)
            if start > sender.furthest:
                sender.furthest = start
        if sender.acked > sender.next and sender.furthest >= sender.acked:
            self._skip_to(connection, sender, sender.acked, time, events)    # its packets went past the hole
        if seq == sender.next & _MASK and payload and not cut and not sender.held and not sender.closed:
            self._deliver(connection, sender, payload, time, events)     # in order: the common case
        elif sender.closed:
            sender.retransmitted += len(payload)                         # after its FIN: nothing new can come
            self._compare(connection, sender, sender.position(seq), payload, time, events)
        elif payload or cut:
            self._receive(connection, sender, sender.position(seq), payload, cut, time, events)
        if flags & FIN and sender.fin is None:
            sender.fin = sender.position((seq + len(payload) + cut) & _MASK)
        if flags & ACK and receiver.unacked:
            self._forget_acked(receiver, receiver.position(ack))
        if flags & ACK and receiver.next is not None and not receiver.closed:
            acked = (ack - receiver.next) & _MASK
            if 1 < acked < _HALF:           # the receiver has bytes the capture has not shown (yet)
                target = receiver.next + acked
                if receiver.fin is not None and target > receiver.fin:
                    target = receiver.fin
                if target > receiver.acked:
                    receiver.acked = target
                if receiver.furthest >= target or receiver.fin is not None:
                    self._skip_to(connection, receiver, target, time, events)
            if receiver.fin is not None:
                self._check_closed(connection, receiver, time, events)
        if sender.fin is not None:
            self._check_closed(connection, sender, time, events)
            if sender.closed and receiver.closed:
                self._end(connection, time, CLOSED, events)
        return events

    def finish(self):
        """End every open session at its last packet's time."""
        events = []
        for connection in list(self._connections.values()):
            self._end(connection, connection.last_time, CAPTURE_END, events)
        return events

    # -- sessions ------------------------------------------------------------------------------------

    def _end_idle(self, time, key, events):
        """End the connections with no packet for idle_seconds before `time`, the least recently active first,
        but the one of the packet at hand (`key`): it speaks again."""
        connections = self._connections
        while connections:
            oldest = next(iter(connections.values()))
            if oldest.last_time + self.idle_seconds > time:
                self._idle_check = oldest.last_time + self.idle_seconds
                return
            if oldest.key == key:
                oldest.last_time = time
                connections.move_to_end(key)
                self._latest = oldest
            else:
                self._end(oldest, oldest.last_time, IDLE, events)
        self._idle_check = float('inf')

    def _open(self, key, time, events):
        if len(self._connections) >= self.max_open:
            oldest = next(iter(self._connections.values()))
            self._end(oldest, oldest.last_time, CROWDED, events)
        if not self._connections and self.idle_seconds:
            self._idle_check = time + self.idle_seconds
        self.sessions_seen += 1
        client_ip, client_port, server_ip, server_port = key
        session = Session(self.sessions_seen, (address_text(client_ip), client_port),
                          (address_text(server_ip), server_port), time)
        connection = _Connection(key, session)
        self._connections[key] = connection
        self._latest = connection
        self._ended.pop(key, None)
        events.append(Opened(session, time))
        return connection

    def _end(self, connection, time, reason, events):
        """Say what is missing in each direction, deliver what waited, and end the session."""
        for direction in (connection.client, connection.server):
            if direction.next is not None and not direction.closed:
                end = max(direction.held[-1][1] if direction.held else direction.next, direction.fin or 0,
                          direction.acked)
                self._skip_to(connection, direction, end, time, events)
        del self._connections[connection.key]
        if connection is self._latest:
            self._latest = None
        ends = tuple(direction.end() for direction in (connection.client, connection.server))
        self._ended[connection.key] = (reason, connection.session.number, ends)
        if len(self._ended) > _ENDED_REMEMBERED:
            self._ended.popitem(last=False)
        counts = {CLIENT: Counts(connection.client.retransmitted, connection.client.missing),
                  SERVER: Counts(connection.server.retransmitted, connection.server.missing)}
        events.append(Ended(connection.session, time, reason, counts))

    def _count_other(self, segment):
        flags = segment.flags & (SYN | ACK)
        if flags == SYN:
            port = segment.dport
        elif flags == SYN | ACK:
            port = segment.sport
        else:
            port = min(segment.sport, segment.dport)
        self._other_ports[port] += 1

    # -- one direction -------------------------------------------------------------------------------

    def _receive(self, connection, direction, start, data, cut, time, events):
        """Bytes start..start+len(data) (then `cut` bytes the capture lacks) of one direction."""
        if start == direction.next and not direction.held:          # in order: the common case
            if data:
                self._deliver(connection, direction, data, time, events)
            if cut:
                self._missing(connection, direction, cut, time, events)
            return
        end = start + len(data)
        self._compare(connection, direction, start, data, time, events)
        self._hold(direction, start, end, data)
        if cut:
            self._hold(direction, end, end + cut, None)
        self._release(connection, direction, time, events)
        while direction.held_bytes > self.max_held or len(direction.held) > self.max_held_pieces:
            self._skip_to(connection, direction, direction.held[0][0], time, events)

    def _hold(self, direction, start, end, data):
        """Keep the parts of start..end not already delivered or held; count the others as retransmitted."""
        if start < direction.next:
            if end <= direction.next:
                direction.retransmitted += end - start
                return
            direction.retransmitted += direction.next - start
            if data is not None:
                data = data[direction.next - start:]
            start = direction.next
        held = direction.held
        index = bisect.bisect_left(held, (start,))
        if index and held[index - 1][1] > start:
            index -= 1
        while start < end:
            if index < len(held) and held[index][0] < end:
                held_start, held_end, _ = held[index]
                if held_start > start:
                    self._insert(direction, index, start, held_start, data)
                    index += 1
                    data = data[held_start - start:] if data is not None else None
                    start = held_start
                covered = min(held_end, end) - start
                direction.retransmitted += covered
                if data is not None:
                    data = data[covered:]
                start += covered
                index += 1
            else:
                self._insert(direction, index, start, end, data)
                return

    @staticmethod
    def _insert(direction, index, start, end, data):
        piece = data[:end - start] if data is not None else None
        direction.held.insert(index, (start, end, piece))
        if piece is not None:
            direction.held_bytes += end - start

    def _release(self, connection, direction, time, events):
        """Deliver the held pieces that now follow on."""
        held = direction.held
        while held and held[0][0] == direction.next:
            start, end, data = held.pop(0)
            if data is None:
                self._missing(connection, direction, end - start, time, events)
            else:
                direction.held_bytes -= end - start
                self._deliver(connection, direction, data, time, events)

    def _skip_to(self, connection, direction, target, time, events):
        """Give up on the holes before `target`: say them missing, deliver what waited between them."""
        held = direction.held
        while direction.next < target:
            if held and held[0][0] < target:
                gap = held[0][0] - direction.next
                if gap:
                    self._missing(connection, direction, gap, time, events)
                self._release(connection, direction, time, events)
            else:
                self._missing(connection, direction, target - direction.next, time, events)
        self._release(connection, direction, time, events)

    def _deliver(self, connection, direction, data, time, events):
        if direction.start_missed:
            direction.start_missed = False
            events.append(StartMissed(connection.session, time, direction.name))
        events.append(_new_tuple(Data, (connection.session, time, direction.name, data)))
        direction.unacked.append((direction.next, data))
        direction.unacked_bytes += len(data)
        if direction.unacked_bytes > KEPT_UNACKED or len(direction.unacked) > KEPT_UNACKED_PIECES:
            self._forget_oldest(direction)
        direction.next += len(data)
        direction.at_line_start = data[-1] == 10

    def _missing(self, connection, direction, size, time, events):
        if direction.start_missed:
            direction.start_missed = False
            events.append(StartMissed(connection.session, time, direction.name))
        events.append(Missing(connection.session, time, direction.name, size))
        direction.missing += size
        direction.next += size
        direction.at_line_start = False

    # -- the first copy of bytes delivered, to compare what comes again with --------------------------

    @staticmethod
    def _forget_oldest(direction):
        """Keep only the last KEPT_UNACKED bytes delivered, in KEPT_UNACKED_PIECES segments at most."""
        unacked = direction.unacked
        while len(unacked) > KEPT_UNACKED_PIECES:
            direction.unacked_bytes -= len(unacked.popleft()[1])
        while direction.unacked_bytes > KEPT_UNACKED:
            start, data = unacked.popleft()
            excess = direction.unacked_bytes - KEPT_UNACKED
            if excess < len(data):
                unacked.appendleft((start + excess, data[excess:]))
                direction.unacked_bytes -= excess
            else:
                direction.unacked_bytes -= len(data)

    @staticmethod
    def _forget_acked(direction, position):
        """The peer ACKed the bytes before `position`: they are not kept any more."""
        unacked = direction.unacked
        while unacked and unacked[0][0] < position:
            start, data = unacked.popleft()
            if start + len(data) > position:
                unacked.appendleft((position, data[position - start:]))
                direction.unacked_bytes -= position - start
                return
            direction.unacked_bytes -= len(data)

    def _compare(self, connection, direction, start, data, time, events):
        """Say (Differs) if bytes captured again differ from their first copy, as far as it is kept."""
        end = start + len(data)
        compared = differing = 0
        for first_start, first in self._first_copies(direction, start, end):
            low, high = max(start, first_start), min(end, first_start + len(first))
            if low < high:
                compared += high - low
                again, kept = data[low - start:high - start], first[low - first_start:high - first_start]
                if again != kept:
                    differing += sum(a != b for a, b in zip(again, kept))
        if differing:
            events.append(Differs(connection.session, time, direction.name, compared, differing))

    @staticmethod
    def _first_copies(direction, start, end):
        """(start, data) of the kept first copies that may overlap start..end: delivered, then waiting."""
        if start < direction.next:
            for first_start, first in reversed(direction.unacked):    # the newest first: what is sent again
                if first_start + len(first) <= start:
                    break
                yield first_start, first
        held = direction.held
        index = max(bisect.bisect_left(held, (start,)) - 1, 0)
        while index < len(held) and held[index][0] < end:
            held_start, _, first = held[index]
            if first is not None:
                yield held_start, first
            index += 1

    @staticmethod
    def _check_closed(connection, direction, time, events):
        if direction.fin is not None and not direction.closed and direction.next >= direction.fin:
            direction.closed = True
            events.append(Closed(connection.session, time, direction.name))
