"""A capture as a source: the TCP sessions on the server port of a tcpdump or Wireshark capture become an
observer's events (events.py), packet by packet as the capture is read, on this thread.

The capture core reads the packets (capture.py) and puts each connection's bytes back in order
(reassembly.py); this turns what it finds into the events the relay emits live, at the capture's
times: bytes a capture lost are `missing` (the analysis shows the lines they damage as text), a
STARTTLS confirmation or TLS from the first byte makes the rest `encrypted`, as when the tool passes
them through live.
"""

from .capture import IP_FRAGMENT, TCP_HEADER_CUT, CaptureError, CaptureReader, PacketDecoder
from .events import SessionInfo
from .filters import CLIENT, SERVER
from .reassembly import (CAPTURE_END, CROWDED, IDLE, IDLE_SECONDS, MAX_OPEN, REPLACED, RESET, Closed, Data, Differs,
                         Ended, Missing, Opened, Reassembler, Resumed, StartMissed)
from .tls import ENCRYPTED, StarttlsHandover, starts_like_tls

TLS_PORT = 5013             # XiVO's CTI over TLS from the first byte
# How a session that did not end with both FINs ended, as its end notice says it (a side that had sent its FIN
# still closed it first).
END_FAILURES = {RESET: 'reset (TCP RST)', CAPTURE_END: 'still open where the capture (or its reading) ends',
                REPLACED: 'replaced by a new connection on the same ports'}

STARTTLS_NOTICE = 'STARTTLS: the session is now encrypted and cannot be shown'
TLS_NOTICE = 'TLS: the session is encrypted and cannot be shown'
TOOL_ENDS = (IDLE, CROWDED)     # sessions the tool ends, for bounded memory
RESUMED_NOTICE = ('continues session #%d, which the tool ended (see its end): a side it ended in the middle of a line '
                  'reads on as text to its next newline')
HEADERS_CUT_WARNING = ('warning: the capture\'s snap length cuts TCP packets inside their TCP header (the first at '
                       'byte %d): where their bytes go is unknown, and they are skipped; capture with tcpdump -s 0')
DIFFERS_NOTICE = ('the capture disagrees with itself: %d of %d bytes of the %s\'s stream captured again (a '
                  'retransmission) differ from their first copy; the first copy is shown')
START_MISSED_NOTICE = ('the capture starts after this session\'s start: what comes before the first newline '
                       'of each side is shown as text')


def end_failures(idle_seconds, max_open):
    """How a session that did not end with both FINs ended, as its end notice says it (a side that had sent
    its FIN still closed it first)."""
    failures = dict(END_FAILURES)
    failures[IDLE] = ('ended by the tool: no packet for %g s of the capture (--capture-idle); a later packet '
                      'of its connection opens a new session' % idle_seconds) if idle_seconds else None
    failures[CROWDED] = ('ended by the tool: %d sessions were open, and this one was the least recently active; a '
                         'later packet of its connection opens a new session' % max_open)
    return failures


def cut_text(cut_at):
    """What NoTraffic adds when the capture ends in the middle of a packet (or of its file header): the likely
    reason why it holds no traffic."""
    if cut_at is None:
        return ''
    where = 'its file header' if cut_at == 0 else 'a packet (at byte %d)' % cut_at
    return ', and it ends in the middle of %s: was tcpdump stopped while writing?' % where


class NoTraffic(Exception):
    """The capture holds no packet on the server port (the message names the port and the ports it holds)."""


class CapturedSession:
    """What the source follows of one session: its description, its STARTTLS watch, its sides not yet ended."""

    __slots__ = ('info', 'handover', 'settled', 'tls_checked', 'start_missed', 'open_sides')

    def __init__(self, info):
        self.info = info
        self.handover = StarttlsHandover()      # passed through: the client's TLS is said to be encrypted
        self.settled = False                    # nothing more can become encrypted: bytes go straight on
        self.tls_checked = False                # the first bytes were looked at for TLS
        self.start_missed = False               # said that the capture missed the session's start
        self.open_sides = [CLIENT, SERVER]


class CaptureSource:
    """Feeds an observer from a capture.  warn(text) says one line (IP fragments, once)."""

    def __init__(self, observer, port, warn, idle_seconds=IDLE_SECONDS, max_open=MAX_OPEN, port_option='--port'):
        """A session with no packet for idle_seconds of the capture's time (0: never) ends, and so does the least
        recently active of max_open, when one more opens: memory is bounded however long the capture.
        port_option: the option that chose the port, as messages name it."""
        self.observer = observer
        self.port = port
        self.port_option = port_option
        self.warn = warn
        self.decoder = PacketDecoder()
        self.reassembler = Reassembler(port, idle_seconds=idle_seconds, max_open=max_open)
        self.failures = end_failures(idle_seconds, max_open)
        self.idle_seconds = idle_seconds
        self.max_open = max_open
        self.tool_ended = {IDLE: 0, CROWDED: 0}     # sessions the tool ended, by reason
        self.sessions = {}                  # the core's Session: CapturedSession
        self.cut_at = None                  # the byte offset of a last packet cut short, once read

    def run(self, stream, prefix=b''):
        """Read the capture from a binary stream (prefix: its first bytes, already read) to its end; on
        garbage (CaptureError) or Ctrl-C, end what was read before, then raise.  NoTraffic if no packet
        was on the port."""
        reader = CaptureReader(stream, prefix)
        try:
            self._read(reader)
        except BaseException:
            self._end()
            raise
        self._end()
        self.cut_at = reader.cut_at
        if not self.reassembler.sessions_seen:
            raise NoTraffic(self.no_traffic_text() + cut_text(reader.cut_at))

    def _read(self, reader):
        """The packets of what was read from the stream go through the capture core first, then their events to
        the observer, in order, before the next read (which may wait for a pipe): each message is shown as
        soon as its last packet is read, and each part runs longer on its own (a fifth faster than packet by
        packet)."""
        decode = self.decoder.decode
        feed = self.reassembler.feed
        pending = []
        reader.before_read = lambda: self._hand_on(pending)
        fragments_said = headers_cut_said = False
        try:
            for packet in reader.packets():
                segment = decode(packet)
                if segment is None:
                    continue
                if segment is IP_FRAGMENT:
                    if not fragments_said:
                        fragments_said = True
                        self.warn('warning: the capture holds IP fragments of TCP packets (byte %d): they are '
                                  'not reassembled, and skipped' % packet.offset)
                    continue
                if segment is TCP_HEADER_CUT:
                    if not headers_cut_said:
                        headers_cut_said = True
                        self.warn(HEADERS_CUT_WARNING % packet.offset)
                    continue
                pending += feed(segment, packet.time_ns / 1e9)
        except CaptureError:
            self._hand_on(pending)          # what came before the garbage
            raise
        self._hand_on(pending)

    def _hand_on(self, pending):
        """The events waiting, to the observer (and none waits any more): the data that one side of a session
        sent one packet after another goes as one run."""
        events = pending[:]
        del pending[:]
        take = self._take
        sessions = self.sessions
        received_run = self.observer.received_run
        run, run_session, run_direction = [], None, None
        for event in events:
            if event.__class__ is Data:
                session = sessions[event.session]
                if session.settled:             # the common case, straight on
                    if run and (session is not run_session or event.direction != run_direction):
                        received_run(run_session.info, run_direction, run)
                        run = []
                    run_session, run_direction = session, event.direction
                    run.append((event.time, event.data))
                    continue
            if run:
                received_run(run_session.info, run_direction, run)
                run = []
            take(event)
        if run:
            received_run(run_session.info, run_direction, run)

    def _end(self):
        """The capture ends: each session still open ends at its last packet; the observer finishes."""
        try:
            for event in self.reassembler.finish():
                self._take(event)
        finally:
            self.observer.finish()

    def tool_ended_text(self):
        """'the tool ended 3 sessions before their end in the capture: ...', or None if it ended none."""
        idle, crowded = self.tool_ended[IDLE], self.tool_ended[CROWDED]
        if not idle and not crowded:
            return None
        reasons = []
        if idle:
            reasons.append('%d with no packet for %g s of the capture (--capture-idle)' % (idle, self.idle_seconds))
        if crowded:
            reasons.append('%d least recently active of %d open at once' % (crowded, self.max_open))
        count = idle + crowded
        return ('the tool ended %d session%s before %s end in the capture, to keep its memory bounded: %s'
                % (count, '' if count == 1 else 's', 'its' if count == 1 else 'their', ', '.join(reasons)))

    def no_traffic_text(self):
        ports = self.reassembler.ports_seen()
        if not ports and self.decoder.headers_cut:
            return ('no TCP traffic on port %d: the capture\'s snap length cut each of its %d TCP packets inside '
                    'its TCP header' % (self.port, self.decoder.headers_cut))
        if not ports:
            return 'no TCP traffic on port %d: the capture holds no TCP packet' % self.port
        held = ', '.join('%d (%d packet%s)' % (port, count, '' if count == 1 else 's') for port, count in ports[:8])
        more = ' and %d more' % (len(ports) - 8) if len(ports) > 8 else ''
        return 'no TCP traffic on port %d (%s): the capture holds TCP ports %s%s' % (self.port, self.port_option, held,
                                                                                     more)

    # -- the core's events, as the observer's --

    def _take(self, event):
        kind = event.__class__
        if kind is Data:
            self._data(self.sessions[event.session], event.direction, event.time, event.data)
        elif kind is Opened:
            self._open(event)
        elif kind is Missing:
            self.observer.missing(self.sessions[event.session].info, event.direction, event.time, event.size)
        elif kind is StartMissed:
            session = self.sessions[event.session]
            if not session.start_missed:
                session.start_missed = True
                self.observer.notice(session.info, event.time, START_MISSED_NOTICE)
            self.observer.missing(session.info, event.direction, event.time, None)
        elif kind is Closed:                # a FIN: that side ended its sending
            info = self.sessions[event.session].info
            info.ended_first = info.ended_first or event.direction
            self._end_side(self.sessions[event.session], event.direction, event.time)
        elif kind is Ended:
            self._close(event)
        elif kind is Differs:
            self.observer.notice(self.sessions[event.session].info, event.time,
                                 DIFFERS_NOTICE % (event.differing, event.size, event.direction))
        elif kind is Resumed:
            session = self.sessions[event.session]
            session.start_missed = True             # said here, not as a capture that starts mid-session
            self.observer.notice(session.info, event.time, RESUMED_NOTICE % event.earlier)

    def _open(self, event):
        core = event.session
        info = SessionInfo(core.number, core.start, core.client, core.server, captured=True)
        self.sessions[core] = CapturedSession(info)
        self.observer.session_opened(info)

    def _data(self, session, direction, when, data):
        """Bytes from direction's side: said encrypted from TLS's first byte or STARTTLS's confirmation on."""
        observer = self.observer
        if session.settled:
            observer.received(session.info, direction, when, data)
            return
        if not session.tls_checked:
            session.tls_checked = True
            if self.port == TLS_PORT or starts_like_tls(data):
                self._encrypted_from_start(session, when)
                observer.received(session.info, direction, when, data)
                return
        if direction == SERVER:
            _, confirmed = session.handover.server_sent(data)
            session.settled = session.handover.over
            if confirmed is None:
                observer.received(session.info, SERVER, when, data)
                return
            observer.received(session.info, SERVER, when, data[:confirmed])
            observer.encrypted(session.info, SERVER, when)
            observer.notice(session.info, when, STARTTLS_NOTICE)
            if confirmed < len(data):
                observer.received(session.info, SERVER, when, data[confirmed:])
            return
        if session.handover.client_sent(data) == ENCRYPTED:
            observer.encrypted(session.info, CLIENT, when)
        observer.received(session.info, CLIENT, when, data)
        session.settled = session.handover.over

    def _encrypted_from_start(self, session, when):
        session.settled = True
        for side in (CLIENT, SERVER):
            self.observer.encrypted(session.info, side, when)
        self.observer.notice(session.info, when, TLS_NOTICE)

    def _end_side(self, session, direction, when):
        if direction in session.open_sides:
            session.open_sides.remove(direction)
            self.observer.direction_ended(session.info, direction, when)

    def _close(self, event):
        session = self.sessions.pop(event.session)
        if event.reason in self.failures:
            session.info.failure = self.failures[event.reason]
        if event.reason in TOOL_ENDS:               # said even where session ends are not shown (ctispy)
            self.tool_ended[event.reason] += 1
            self.observer.notice(session.info, event.time, 'session #%d %s' % (session.info.number,
                                                                               session.info.failure))
        for side in (CLIENT, SERVER):
            if event.counts[side].retransmitted:
                self.observer.retransmitted(session.info, side, event.counts[side].retransmitted)
            self._end_side(session, side, event.time)
        self.observer.session_closed(session.info, event.time)
