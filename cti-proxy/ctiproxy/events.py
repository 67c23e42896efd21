"""Events: what a source of traffic tells the analysis, and the plain description of a session.

One pipeline, three sources:

    relay.py           live: each client relayed to the server (Session's pumps)   \\
    recording.py       a ctispy --json-lines recording (Replay)                     >  Observer events
    capture_source.py  a tcpdump or Wireshark capture (CaptureSource), read and    /
                       put back in order by the capture core (capture.py, reassembly.py)

    analysis.py        frames each direction into lines (Analysis.received) and filters them (show_lines);
                       the relay's events go through a queue to a thread of its own first (Analyzer)
    outputs.py         shows (SpyOutput, JsonLinesOutput) or saves (SaveOutput) each message;
    stats.py           counts them (StatOutput)

Every source calls the same Observer methods, with a SessionInfo for the session.
"""


class SessionInfo:
    """A session as the outputs see it: its number, when it opened, and where its ends are.

    client and server are (host, port) pairs, or 'host:port' texts (a recording's "start" record),
    or None where the source does not know them.  captured: the session comes from a capture, which
    counts retransmitted and missing bytes.  Before it tells of the session's end, the source sets
    ended_first (the side that ended its sending first, CLIENT or SERVER, or None) and failure (one
    line saying what ended the session, if not the ordinary way).
    """

    __slots__ = ('number', 'opened', 'client', 'server', 'captured', 'ended_first', 'failure')

    def __init__(self, number, opened, client=None, server=None, captured=False):
        self.number = number
        self.opened = opened
        self.client = client
        self.server = server
        self.captured = captured
        self.ended_first = None
        self.failure = None

    def peer_names(self):
        """('127.0.0.1:40512', 'xivo-new:5003'), or None when the ends are not known."""
        if self.client is None or self.server is None:
            return None
        return _shown_address(self.client), _shown_address(self.server)

    def describe(self):
        """'client 127.0.0.1:40512, server xivo-new:5003'; '' when the ends are not known."""
        names = self.peer_names()
        return '' if names is None else 'client %s, server %s' % names

    def __repr__(self):
        return '<session #%d>' % self.number


def _shown_address(address):
    return address if address.__class__ is str else host_port(*address)


def host_port(host, port):
    """'host:port', an IPv6 address in brackets: '[::1]:5003'."""
    return ('[%s]:%d' if ':' in host else '%s:%d') % (host, port)


class Observer:
    """The events a source emits, in the order they happen for each session; each does nothing here.

    direction is CLIENT or SERVER (filters.py): the side that sent.  when is a timestamp (seconds
    since the epoch): the relay's clock live, the record's time in a recording, the packet's in a
    capture.  For the end events, None means now.
    """

    def session_opened(self, session):
        """A session starts; return False if the outputs cannot take it (the source then ends it unrelayed)."""
        return True

    def received(self, session, direction, when, data):
        """data (bytes) came from direction's side, next in its stream."""

    def received_run(self, session, direction, chunks):
        """Chunks that came from direction's side one after another, each a (when, data) pair: the same as
        received() for each in turn (a capture's consecutive segments; an observer may handle them together)."""
        for when, data in chunks:
            self.received(session, direction, when, data)

    def encrypted(self, session, direction, when):
        """What follows from direction's side is TLS: it is counted, not read."""

    def notice(self, session, when, text):
        """Something to tell the user about the session (STARTTLS, bytes a capture lost)."""

    def missing(self, session, direction, when, size):
        """size bytes of direction's stream are missing here (a capture lost them): the line they cut is damaged."""

    def retransmitted(self, session, direction, size):
        """size bytes of direction's stream were sent again (a capture saw them twice); they are received once."""

    def direction_ended(self, session, direction, when=None):
        """direction's side will send nothing more."""

    def session_closed(self, session, when=None):
        """Both directions are over."""
