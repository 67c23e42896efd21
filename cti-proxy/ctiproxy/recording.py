"""Recordings: `ctispy --json-lines` writes one record per line; `--read` replays them.

A record is one of
    {"time": "2026-11-27T13:01:02.123456", "session": 1, "direction": "client", "message": {...}}
    {"time": ..., "session": 1, "direction": "server", "text": "XiVO CTI Server Version 1.2.3"}
    {"time": ..., "session": 1, "notice": "STARTTLS: ..."}
"text" holds a line that is not a JSON object exactly as received: a byte that is not UTF-8
becomes a lone surrogate (written \\udcff), which a replay turns back into the byte.
A replay turns each direction's records back into lines of bytes and hands them to the
same analysis as live traffic, so a tool shows offline what it would have shown live.
"""

import collections
import datetime
import json

from .filters import CLIENT, SERVER

Record = collections.namedtuple('Record', 'session direction time line notice')


class RecordingError(Exception):
    """A recording line that cannot be read (the message names the line)."""


def _entry(session_number, when):
    return {'time': datetime.datetime.fromtimestamp(when).isoformat(timespec='microseconds'),
            'session': session_number}


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


def _fail(name, number, reason):
    raise RecordingError('%s, line %d: %s' % (name, number, reason))


def _line_bytes(text):
    """A "text" record's line as it was received."""
    try:
        return text.encode('utf-8', 'surrogateescape')
    except UnicodeEncodeError:          # a surrogate that was not a byte: keep it visible
        return text.encode('utf-8', 'backslashreplace')


def read_records(lines, name):
    """Yield a Record for each record of a recording (lines of text); RecordingError names a bad one."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except (ValueError, RecursionError) as error:
            _fail(name, number, 'not a JSON record (%s)' % getattr(error, 'msg', 'nested too deep'))
        if not isinstance(entry, dict):
            _fail(name, number, 'a record must be a JSON object')
        session = entry.get('session')
        if session.__class__ is not int:
            _fail(name, number, '"session" must be a whole number')
        try:
            when = datetime.datetime.fromisoformat(entry.get('time')).timestamp()
        except (TypeError, ValueError):
            _fail(name, number, '"time" must be a time like "2026-11-27T13:01:02.123456"')
        if isinstance(entry.get('notice'), str):
            yield Record(session, None, when, None, entry['notice'])
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
        yield Record(session, direction, when, line, None)


class RecordedSession:
    """A session as a recording tells it."""

    client_address = None
    upstream = None

    def __init__(self, number, opened):
        self.number = number
        self.opened = opened


def replay(records, analyzer):
    """Run recorded records through an analyzer, on this thread; then close its output.

    A session is open from its first record to its last."""
    records = list(records)
    last = {record.session: index for index, record in enumerate(records)}
    sessions = {}
    for index, record in enumerate(records):
        session = sessions.get(record.session)
        if session is None:
            session = sessions[record.session] = RecordedSession(record.session, record.time)
            analyzer.open_session(session)
        if record.notice is not None:
            analyzer.output.notice(session, record.time, record.notice)
        else:
            analyzer.take_chunk(session, record.direction, record.time, record.line + b'\n')
        if last[record.session] == index:
            analyzer.close_session(session, record.time)
    analyzer.output.close()
