"""Analysis: frame each direction into lines, filter them, and hand them to the output.

Analysis is the pipeline's middle (events.py shows the whole): a source's events come in,
received() frames a chunk into lines (framing.py), show_lines() decodes and filters each one
(filters.py) and calls the output's message().  A recording or a capture calls it on the
reading thread.

The relay calls Analyzer instead, which only queues each event and runs the Analysis on a
thread of its own: the slow work (decoding, formatting, writing) never slows the wire.  The
queue holds at most BUFFER_SIZE bytes, counting what each queued chunk costs in memory
beyond its bytes (ITEM_COST): beyond that the relay waits (TCP backpressure) rather than
drop anything from the output.  While the relay reads big chunks back to back (a burst), the
analysis leaves it the interpreter (BurstWatch), at most MOST_DELAY behind the wire.
"""

import collections
import sys
import threading
import time

from .escaping import shown_traceback
from .events import Observer
from .filters import CLIENT, SERVER, MessageFilter
from .framing import MAX_LINE_SIZE, TOTAL_HELD_SIZE, BigLine, Fragment, HeldBudget, LineSplitter, parse_message
from .outputs import OutputError

BUFFER_SIZE = 64 * 1024 * 1024
# What a queued chunk costs beyond its bytes: the bytes object's header, the event's tuple,
# its time, the queue's (event, size) pair and slot, rounded up by the allocator.  Measured
# 235-270 bytes with CPython 3.7-3.13 on x86_64; counted with room to spare, so that a
# stream of tiny chunks cannot hold many times BUFFER_SIZE.
ITEM_COST = 320
NAP = 0.001
# A read of at least BURST_READ bytes means the socket had that much waiting: the relay is in a burst
# while such reads follow each other less than BURST_GAP seconds apart.  The analysis then waits, so that
# the relay's thread need not wait for the interpreter after each read and write; it handles a chunk
# anyway once the chunk is MOST_DELAY seconds old or the queue is half full.
BURST_READ = 256 * 1024
BURST_GAP = 0.01
MOST_DELAY = 0.1


class ByteBoundedQueue:
    """A FIFO of events holding at most `limit` bytes, as put() counts them; put() waits beyond that.

    Its one consumer works in batches: finding the queue empty, it first naps for
    `nap` seconds, during which put() appends without waking it, and only then
    sleeps until a put() wakes it.  Waking a thread for every small message would
    make it compete with the relay for the interpreter in the middle of a request
    and its answer; this way the analysis catches up at most `nap` later.
    """

    def __init__(self, limit, nap=0.0):
        self.limit = limit
        self.nap = nap
        self._items = collections.deque()
        self._size = 0
        self._sleeping = False
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)

    def put(self, item, size=0):
        with self._not_full:
            while self._size and self._size + size > self.limit:
                self._not_full.wait()
            self._items.append((item, size))
            self._size += size
            if self._sleeping:
                self._not_empty.notify()

    @property
    def half_full(self):
        return self._size * 2 > self.limit

    def get(self):
        with self._not_empty:
            if not self._items and self.nap:
                self._not_empty.wait(self.nap)       # nobody wakes a napping consumer
            while not self._items:
                self._sleeping = True
                self._not_empty.wait()
            self._sleeping = False
            item, size = self._items.popleft()
            if size:
                self._size -= size
                self._not_full.notify_all()
            return item


class BurstWatch:
    """Whether the relay is in the middle of a burst, from the size and time of its latest read."""

    def __init__(self):
        self.latest = (0, 0.0)          # (size, time.monotonic()): one tuple, replaced whole by any pump

    def read(self, size):
        """A pump read size bytes (called on its thread)."""
        self.latest = (size, time.monotonic())

    def under_way(self, now):
        """now: time.monotonic()."""
        size, at = self.latest
        return size >= BURST_READ and now - at < BURST_GAP


class Stream:
    """One direction of one session, as the analysis sees it."""

    __slots__ = ('splitter', 'last_time', 'encrypted', 'damaged')

    def __init__(self, max_line_size, budget, owner, big_lines=None):
        self.splitter = LineSplitter(max_line_size, budget, owner, big_lines)
        self.last_time = None
        self.encrypted = False     # STARTTLS passed through: bytes are counted, not read
        self.damaged = False       # bytes are missing before the next newline: the line it ends is text

    def frame(self, data):
        """The lines that data completes (splitter.feed), the first as text if missing bytes cut it."""
        lines = self.splitter.feed(data)
        if self.damaged and lines:
            self.damaged = False
            lines[0] = Fragment(lines[0])       # it ends a line cut by missing bytes: text
        return lines


def missing_text(direction, size):
    """The notice for bytes a capture lost."""
    return '%d byte%s missing from the %s\'s stream (not in the capture): the lines around them are shown as text' % (
        size, '' if size == 1 else 's', direction)


def last_with_newline(chunks):
    """The index of the last of chunks ((when, data) pairs) holding a newline; -1 if none does."""
    for index in range(len(chunks) - 1, -1, -1):
        if b'\n' in chunks[index][1]:
            return index
    return -1


def lines_by_time(chunks, lines):
    """The lines that chunks complete together, as (when, lines) groups: each line with its chunk's time (the
    chunk holding its newline).  lines has one line per newline in the chunks."""
    groups = []
    first = 0
    for when, chunk in chunks:
        count = chunk.count(b'\n')
        if count:
            groups.append((when, lines[first:first + count]))
            first += count
    return groups


class Analysis(Observer):
    """Frames, filters and hands on a source's events, on the caller's thread.

    For each chunk the output gets chunk(); for each line, if the output wants
    messages and the filter shows it, message() with the decoded JSON object (or
    None for a line that is not one) and the line's bytes.  An output that sees_all
    gets seen() for every line first, whatever the filters hide (to pair answers
    with requests), and both directions are framed for it.  Where bytes are missing
    (a capture's hole, a capture that starts mid-session), the line they cut and the
    line they end are text: framing resumes at the next newline.  An output that does not need each line's
    bytes (needs_line false) gets a whole line over BIG_LINE bytes as a BigLine: its bytes are let go of once
    decoded, so that the line, its text and its message are not held at once.
    """

    def __init__(self, output, message_filter=None, max_line_size=MAX_LINE_SIZE):
        """The unfinished lines of all sessions hold at most TOTAL_HELD_SIZE together (or
        max_line_size, if larger): beyond that, the longest goes on in pieces."""
        self.output = output
        self.filter = message_filter or MessageFilter()
        self.max_line_size = max_line_size
        self.held = HeldBudget(max(max_line_size, TOTAL_HELD_SIZE))
        self._streams = {}
        self._big_lines = None if output.needs_line else self._big_line

    def _big_line(self, line):
        """A line over BIG_LINE bytes, for an output that does not need each line's bytes."""
        return BigLine(line, self.output.shows_unwritable)

    # -- the events --

    def session_opened(self, session):
        """Let the output open what the session needs, then start it.  An OutputError is the caller's."""
        self.output.session_opening(session)
        self.open_session(session)
        return True

    def open_session(self, session):
        for side in (CLIENT, SERVER):
            self._streams[session, side] = Stream(self.max_line_size, self.held, (session, side), self._big_lines)
        self.output.session_started(session)
        self.output.flush()

    def received(self, session, direction, when, data):
        """Frame a chunk that direction's side sent, and show its lines."""
        output = self.output
        shown = self.filter.shows_direction(direction)
        if not shown and not output.sees_all:
            return
        if shown:
            output.chunk(session, direction, when, data)
        stream = self._streams[session, direction]
        if output.wants_messages and not stream.encrypted:
            stream.last_time = when
            self.show_lines(session, direction, when, stream.frame(data))
            if self.held.held > self.held.limit:
                self.relieve_held()
        output.flush()

    def received_run(self, session, direction, chunks):
        """The same as received() for each of chunks (each (when, data), sent one after another by direction's
        side), at a fraction of the cost for a capture's many small segments: the run's whole lines are framed at
        once, each shown at the time of the chunk holding its newline, and what follows its last newline is held
        chunk by chunk, as received() holds it.  A run that could make a line go on in pieces (an overlong line,
        the unfinished lines' budget) goes chunk by chunk: pieces are cut where received() cuts them."""
        output = self.output
        shown = self.filter.shows_direction(direction)
        if not shown and not output.sees_all:
            return
        stream = self._streams[session, direction]
        splitter = stream.splitter
        size = sum([len(chunk) for _, chunk in chunks])
        last = last_with_newline(chunks)
        if (last < 1 or stream.encrypted or not output.wants_messages or not splitter.holds_whole_lines(size)
                or self.held.held + size > self.held.limit):
            for when, chunk in chunks:
                self.received(session, direction, when, chunk)
            return
        if shown:
            for when, chunk in chunks:
                output.chunk(session, direction, when, chunk)
        stream.last_time = chunks[-1][0]
        final = chunks[last][1]
        end = final.rfind(b'\n') + 1
        lines = stream.frame(b''.join([chunk for _, chunk in chunks[:last]] + [final[:end]]))
        self.show_line_groups(session, direction, lines_by_time(chunks[:last + 1], lines))
        for rest in [final[end:]] + [chunk for _, chunk in chunks[last + 1:]]:
            if rest:
                splitter.feed(rest)         # no newline, within the bounds: held, as received() holds it
        output.flush()

    def relieve_held(self):
        """The sessions hold too much of unfinished lines together: show the longest ones' pieces now."""
        for splitter, pieces in self.held.relieve():
            session, direction = splitter.owner
            self.show_lines(session, direction, self._streams[splitter.owner].last_time, pieces)

    def show_lines(self, session, direction, when, lines):
        """Decode each line, and hand the ones the filter shows to the output (every one to seen())."""
        self.show_line_groups(session, direction, ((when, lines),))

    def show_line_groups(self, session, direction, groups):
        """show_lines() for each (when, lines) group in turn."""
        message_filter = self.filter
        show_all = message_filter.passes_all
        shows = message_filter.shows
        strip = message_filter.strip if message_filter.strip_paths else None
        handle = self.output.message
        seen = self.output.seen if self.output.sees_all else None
        direction_shown = message_filter.shows_direction(direction)
        for when, lines in groups:
            for line in lines:
                message = parse_message(line)
                if seen is not None:
                    seen(session, direction, when, message)
                    if not direction_shown:
                        continue
                if show_all:
                    handle(session, direction, when, message, line)
                elif shows(message):
                    if strip is not None and message is not None:
                        strip(message)
                    handle(session, direction, when, message, line)

    def notice(self, session, when, text):
        self.output.notice(session, when, text)
        self.output.flush()

    def missing(self, session, direction, when, size):
        """Bytes the capture lost (size None: the stream's start, not captured): show the line they cut as text,
        say how many (when known), and take the line they end as text too."""
        stream = self._streams.get((session, direction))
        if stream is None:
            return
        shown = self.filter.shows_direction(direction)
        if shown:
            self.output.missing(session, direction, when, size)
        if size is not None:
            self.end_direction(session, direction, when)
            if shown:
                self.output.notice(session, when, missing_text(direction, size))
        stream.damaged = True
        self.output.flush()

    def retransmitted(self, session, direction, size):
        if (session, direction) in self._streams:
            self.output.retransmitted(session, direction, size)

    def direction_ended(self, session, direction, when=None):
        self.end_direction(session, direction, time.time() if when is None else when)

    def end_direction(self, session, direction, when):
        """Show what the side left after its last newline."""
        stream = self._streams.get((session, direction))
        if stream is None or not (self.filter.shows_direction(direction) or self.output.sees_all):
            return
        if self.output.wants_messages:
            self.show_lines(session, direction, stream.last_time or when, stream.splitter.finish())
        self.output.flush()

    def encrypted(self, session, direction, when):
        """From here on, direction's bytes are TLS: show what came before, then only count."""
        self.end_direction(session, direction, when)
        stream = self._streams.get((session, direction))
        if stream is not None and (self.filter.shows_direction(direction) or self.output.sees_all):
            stream.encrypted = True
        if stream is not None and self.filter.shows_direction(direction):
            self.output.encrypted(session, direction, when)

    def session_closed(self, session, when=None):
        self.close_session(session, time.time() if when is None else when)

    def close_session(self, session, when):
        for side in (CLIENT, SERVER):
            stream = self._streams.pop((session, side), None)
            if stream is not None:
                stream.splitter.finish()    # shown at the direction's end; only its count in the budget is left
        self.output.session_ended(session, when)
        self.output.flush()

    def end_unfinished_sessions(self, when=None):
        """The source ends with sessions whose end never came: show what each side left after its last
        newline, and close them (at `when`, or now)."""
        when = time.time() if when is None else when
        for session in list(dict.fromkeys(session for session, _ in self._streams)):
            for side in (CLIENT, SERVER):
                self.end_direction(session, side, when)
            self.close_session(session, when)

    def finish(self):
        """End the sessions still open, and close the output."""
        self.end_unfinished_sessions()
        self.output.close()


_OPENED, _DATA, _ENCRYPTED, _NOTICE, _ENDED, _CLOSED, _FAILED, _STOPPING, _STOP = range(9)


class Analyzer(Observer):
    """The relay's observer: queues what it sees, and runs an Analysis of it on a thread of its own."""

    def __init__(self, output, message_filter=None, max_line_size=MAX_LINE_SIZE,
                 buffer_size=BUFFER_SIZE, on_output_closed=None):
        """on_output_closed(reason) is called once if the output cannot go on: reason is None
        for a closed pipe, else a one-line message."""
        self.analysis = Analysis(output, message_filter, max_line_size)
        self.output = output
        self.on_output_closed = on_output_closed
        self.on_finished = None         # called on the analysis thread once it has finished
        self.output_closed = False
        self.finished = False           # the analysis thread has handled everything and closed the output
        self._ending = False
        self._queue = ByteBoundedQueue(buffer_size, NAP)
        self.burst = BurstWatch()          # the relay's bursts, as its reads show them
        self._thread = threading.Thread(target=self._run, name='analysis', daemon=True)

    # -- the relay's side (called on the session threads) --

    @property
    def descriptors_per_session(self):
        """The file descriptors the output opens for a session (ctisave's files), beyond its sockets."""
        return self.output.files_per_session

    def session_opened(self, session):
        """Let the output open what the session needs, then queue its start; return False if the output
        cannot take it: the tool ends, once what came before is handled.  Out of file descriptors, the OSError
        is the caller's."""
        try:
            self.output.session_opening(session)
        except OutputError as error:
            self._queue.put((_FAILED, session, None, None, str(error)))
            return False
        self._queue.put((_OPENED, session, None, None, None))
        return True

    def received(self, session, direction, when, data):
        self.burst.read(len(data))
        self._queue.put((_DATA, session, direction, when, data), len(data) + ITEM_COST)

    def encrypted(self, session, direction, when):
        self._queue.put((_ENCRYPTED, session, direction, when, None))

    def notice(self, session, when, text):
        self._queue.put((_NOTICE, session, None, when, text))

    def direction_ended(self, session, direction, when=None):
        self._queue.put((_ENDED, session, direction, time.time() if when is None else when, None))

    def session_closed(self, session, when=None):
        self._queue.put((_CLOSED, session, None, time.time() if when is None else when, None))

    def tool_stopping(self):
        """The tool is about to end the sessions still open (a stop signal): the output learns it before their ends."""
        self._queue.put((_STOPPING, None, None, time.time(), None))

    # -- life --

    def start(self):
        self._thread.start()

    def finish(self, timeout=None):
        """Handle everything queued so far, then close the output; return whether it completed."""
        if self._thread.ident is None:        # stopped before it started: nothing was queued
            self._call(self.output.close)
            return True
        self.end()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def end(self):
        """Let the analysis thread finish once it has handled everything queued so far (then on_finished())."""
        if not self._ending:
            self._ending = True
            self._queue.put((_STOP, None, None, None, None))

    # -- the analysis thread --

    def _run(self):
        try:
            self._handle_queue()
        finally:
            self.finished = True
            if self.on_finished is not None:
                self.on_finished()

    def _handle_queue(self):
        analysis = self.analysis
        while True:
            kind, session, direction, when, data = self._queue.get()
            if kind == _STOP:
                if not self.output_closed:
                    self._call(analysis.end_unfinished_sessions)
                if not self.output_closed:
                    self._call(self.output.close)
                return
            if self.output_closed:
                continue                   # keep draining, so that the relay never waits on us
            if kind == _DATA:
                self._let_a_burst_pass(when)
                self._call(analysis.received, session, direction, when, data)
            elif kind == _OPENED:
                self._call(analysis.open_session, session)
            elif kind == _ENDED:
                self._call(analysis.direction_ended, session, direction, when)
            elif kind == _ENCRYPTED:
                self._call(analysis.encrypted, session, direction, when)
            elif kind == _NOTICE:
                self._call(analysis.notice, session, when, data)
            elif kind == _STOPPING:
                self._call(self.output.stopping, when)
            elif kind == _FAILED:                # the output could not take a session (its files)
                self._output_ended(data)
            else:
                self._call(analysis.close_session, session, when)

    def _let_a_burst_pass(self, when):
        """Before handling a chunk received at `when`: wait while the relay is in a burst, until the chunk is
        MOST_DELAY old or the queue half full.  The naps are counted too: a clock set back cannot stretch it."""
        burst = self.burst
        for _ in range(int(MOST_DELAY / NAP)):
            if not burst.under_way(time.monotonic()) or time.time() - when >= MOST_DELAY or self._queue.half_full:
                return
            time.sleep(NAP)

    def _call(self, handler, *args):
        try:
            handler(*args)
        except BrokenPipeError:             # stdout's reader went away: end quietly
            self._output_ended(None)
        except OutputError as error:        # a file that cannot be written
            self._output_ended(str(error))
        except OSError as error:            # stdout on a full disk, say
            self._output_ended('cannot write the output: %s' % (error.strerror or error))
        except Exception:
            sys.stderr.write('internal error while showing traffic; please report:\n' + shown_traceback())

    def _output_ended(self, reason):
        """The output cannot go on: stop the tool (once), saying why unless it is a closed pipe."""
        if not self.output_closed and self.on_output_closed:
            self.on_output_closed(reason)
        self.output_closed = True
