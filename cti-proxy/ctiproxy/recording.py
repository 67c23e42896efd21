"""Recordings: `ctispy --json-lines` writes one record per line; `--read` replays them.

A record is one of
    {"time": "2026-11-27T13:01:02.123456+01:00", "session": 1, "direction": "client", "message": {...}}
    {"time": ..., "session": 1, "direction": "server", "text": "XiVO CTI Server Version 1.2.3"}
    {"time": ..., "session": 1, "notice": "STARTTLS: ..."}
    {"time": ..., "session": 1, "event": "start", "client": "127.0.0.1:40512", "server": "xivo:5003"}
    {"time": ..., "session": 1, "event": "end", "closed_by": "client", "error": null}
    {"time": ..., "session": 1, "event": "unanswered", "request": {...}, "sent": ...}
The time is local, in ISO 8601 with its UTC offset; a time without one (as recordings made before
had) is read as local time.  A message record of an answer may also hold "reply_to" {"class",
"function", "ms"}, "error" and "slow": a replay works them out again, as it does the "unanswered"
records, which it skips; "start" and "end" tell a replayed session its addresses and its end.
"text" holds a line that is not a JSON object exactly as received: a byte that is not UTF-8
becomes a lone surrogate (written \\udcff), which a replay turns back into the byte.
A replay turns each direction's records back into lines of bytes: the events of a source
(events.py) that the same analysis as live traffic takes, so a tool shows offline what it
would have shown live.  It reads the recording as it goes (from a pipe, each record is shown
as it arrives).
"""

import collections
import datetime
import json

from .events import SessionInfo
from .filters import CLIENT, SERVER

Record = collections.namedtuple('Record', 'session direction time line notice number event')
Record.__new__.__defaults__ = (None,)
EVENTS = ('start', 'end', 'unanswered')

# Two directions of a session are stamped by two threads, so a recording's times may go back by a few
# milliseconds from one record to the next; a replay takes such a time as the one before it, quietly.
# Going back by more than this many seconds (an edited or concatenated recording) is said once.
TIME_SLACK = 1.0


class RecordingError(Exception):
    """A recording line that cannot be read (the message names the line)."""


class IncompleteRecording(RecordingError):
    """The last line of a recording is cut short, as a recorder killed while writing leaves it."""


def iso_time(when):
    """'2026-11-27T13:01:02.123456+01:00': local time with its UTC offset."""
    return datetime.datetime.fromtimestamp(when).astimezone().isoformat(timespec='microseconds')


def _entry(session_number, when):
    return {'time': iso_time(when), 'session': session_number}


def message_record(session_number, direction, when, message, line):
    """The record for one line: its JSON object, or else the line itself as "text"."""
    entry = _entry(session_number, when)
    entry['direction'] = direction
    if message is not None:
        entry['message'] = message
    else:
        entry['text'] = line.decode('utf-8', 'surrogateescape')
    return entry


def notice_record(session_number, when, text):
    entry = _entry(session_number, when)
    entry['notice'] = text
    return entry


def event_record(session_number, when, event, **fields):
    """A session's start or end, or a request it never answered (see EVENTS)."""
    entry = _entry(session_number, when)
    entry['event'] = event
    entry.update(fields)
    return entry


def _fail(name, number, reason):
    raise RecordingError('%s, line %d: %s' % (name, number, reason))


def _line_bytes(text):
    """A "text" record's line as it was received."""
    try:
        return text.encode('utf-8', 'surrogateescape')
    except UnicodeEncodeError:          # a surrogate that was not a byte: keep it visible
        return text.encode('utf-8', 'backslashreplace')


class TimeOutOfRange(ValueError):
    """A record's "time" is a date, but one that cannot be shown as a local time."""


def record_time(text):
    """A record's "time" as a timestamp; ValueError if it is not a date, TimeOutOfRange if it is one out of
    the range shown."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(text)
    try:
        when = moment.timestamp()
        datetime.datetime.fromtimestamp(when)               # shown as local time, it must be one
    except (ValueError, OverflowError, OSError):
        raise TimeOutOfRange(text)
    return when


def _checked_entries(lines, name):
    """Yield (line number, record as a dict, session, time) for each record whose common fields are right."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except (ValueError, RecursionError) as error:
            if not raw.endswith('\n'):      # only the last line may lack one
                raise IncompleteRecording('%s, line %d: the last line is cut short (the recording stops in '
                                          'the middle of a record); everything before it was read' % (name, number))
            _fail(name, number, 'not a JSON record (%s)' % getattr(error, 'msg', 'nested too deep'))
        if not isinstance(entry, dict):
            _fail(name, number, 'a record must be a JSON object')
        session = entry.get('session')
        if session.__class__ is not int or session < 1:
            _fail(name, number, '"session" must be a whole number from 1 up')
        try:
            when = record_time(entry.get('time'))
        except TimeOutOfRange:
            _fail(name, number, '"time" is out of range: %s' % json.dumps(entry['time'][:40]))
        except ValueError:
            _fail(name, number, '"time" must be a time like "2026-11-27T13:01:02.123456"')
        yield number, entry, session, when


def read_records(lines, name):
    """Yield a Record for each record of a recording (lines of text), as they are read; RecordingError
    names a bad line (IncompleteRecording, a last line cut short)."""
    for number, entry, session, when in _checked_entries(lines, name):
        if 'event' in entry:
            if entry['event'] in EVENTS:
                yield Record(session, None, when, None, None, number, entry)
            elif not isinstance(entry['event'], str):
                _fail(name, number, '"event" must be a string')
            continue                    # an event this version does not know: nothing to show
        if 'notice' in entry:
            if not isinstance(entry['notice'], str):
                _fail(name, number, '"notice" must be a string')
            yield Record(session, None, when, None, entry['notice'], number)
            continue
        direction = entry.get('direction')
        if direction not in (CLIENT, SERVER):
            _fail(name, number, '"direction" must be "client" or "server"')
        if isinstance(entry.get('message'), dict):
            line = json.dumps(entry['message'], ensure_ascii=False).encode('utf-8', 'surrogatepass')
        elif isinstance(entry.get('text'), str):
            line = _line_bytes(entry['text'])
        else:
            _fail(name, number, 'a record needs a "message" object or a "text" string')
        yield Record(session, direction, when, line, None, number)


def last_records(lines, name):
    """{session: the line number of its last record}, up to the first line that cannot be read."""
    last = {}
    try:
        for number, _, session, _ in _checked_entries(lines, name):
            last[session] = number
    except RecordingError:
        pass                            # the replay stops there too, and says why
    return last


def _text_or_none(value):
    return value if isinstance(value, str) else None


class Replay:
    """A recording as a source: its records, one by one as they are read, become an observer's events
    (events.Observer, the Analysis) on this thread; then the observer finishes (closes its output).

    A session opens at its first record and ends at its last: when `ends` ({session: line number}) tells
    which that is, else at the end of the recording.  A record earlier than its session's latest is taken
    at that time, so that durations and reply times are never negative; `went_back` counts those earlier
    by more than TIME_SLACK, `first_went_back` is the first one's line number.
    """

    def __init__(self, observer, ends=None):
        self.observer = observer
        self.ends = ends
        self.sessions = {}              # number: SessionInfo
        self.latest = {}                # number: the time of its latest record so far
        self.went_back = 0
        self.first_went_back = None
        self.numbers = set()            # the session numbers given so far
        self.highest = 0

    def run(self, records):
        """Replay; when the records stop on a bad line or Ctrl-C, end what was read before saying so."""
        try:
            for record in records:
                self._take(record)
        except (RecordingError, KeyboardInterrupt):
            self._end_all()
            raise
        self._end_all()

    def _take(self, record):
        observer = self.observer
        event = record.event or {}
        session = self.sessions.get(record.session)
        if session is None:
            session = self.sessions[record.session] = SessionInfo(self._number(record.session), record.time)
            if event.get('event') == 'start':
                client, server = _text_or_none(event.get('client')), _text_or_none(event.get('server'))
                if client and server:
                    session.client, session.server = client, server
            self.latest[record.session] = record.time
            observer.session_opened(session)
        when = self._clock(record)
        if record.notice is not None:
            observer.notice(session, when, record.notice)
        elif record.line is not None:
            observer.received(session, record.direction, when, record.line + b'\n')
        ended = event.get('event') == 'end'
        if ended:
            closed_by = event.get('closed_by')
            session.failure = _text_or_none(event.get('error'))
            if closed_by in (CLIENT, SERVER):
                session.ended_first = closed_by
        if ended or self.ends is not None and self.ends.get(record.session) == record.number:
            del self.sessions[record.session]
            observer.session_closed(session, when)

    def _number(self, recorded):
        """The number of a session that opens: as recorded, unless a session of this replay had it already
        (recordings put end to end, each numbering its sessions from 1): then the next number no session had, so
        that every output (the web view's list, --json-lines read again) tells the two apart."""
        number = recorded if recorded not in self.numbers else self.highest + 1
        self.numbers.add(number)
        self.highest = max(self.highest, number)
        return number

    def _clock(self, record):
        """The record's time, or its session's latest if earlier."""
        latest = self.latest[record.session]
        if record.time >= latest:
            self.latest[record.session] = latest = record.time
        elif latest - record.time > TIME_SLACK:
            self.went_back += 1
            if self.first_went_back is None:
                self.first_went_back = record.number
        return latest

    def _end_all(self):
        sessions, self.sessions = self.sessions, {}
        for number, session in sessions.items():
            self.observer.session_closed(session, self.latest[number])
        self.observer.finish()
