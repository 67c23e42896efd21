"""Recordings: `ctispy --json-lines` writes one record per line; `--read` replays them.

A record: {"time": "2026-11-27T13:01:02.123456", "session": 1, "direction": "client",
"message": {...}}, with "text" instead of "message" for a line that is not a JSON object.
A replay turns each direction's records back into lines of bytes and hands them to the
same analysis as live traffic, so a tool shows offline what it would have shown live.
"""

import datetime
import json

from .filters import CLIENT, SERVER


class RecordingError(Exception):
    """A recording line that cannot be read (the message names the line)."""


def record(session_number, direction, when, message, text):
    """The record for one line: message is its JSON object, else text is the line's text."""
    entry = {'time': datetime.datetime.fromtimestamp(when).isoformat(timespec='microseconds'),
             'session': session_number, 'direction': direction}
    if message is not None:
        entry['message'] = message
    else:
        entry['text'] = text
    return entry


def _fail(name, number, reason):
    raise RecordingError('%s, line %d: %s' % (name, number, reason))


def read_records(lines, name):
    """Yield (session number, direction, time, line bytes) for each record of a recording."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError as error:
            _fail(name, number, 'not a JSON record (%s)' % getattr(error, 'msg', error))
        if not isinstance(entry, dict):
            _fail(name, number, 'a record must be a JSON object')
        session = entry.get('session')
        if session.__class__ is not int:
            _fail(name, number, '"session" must be a whole number')
        direction = entry.get('direction')
        if direction not in (CLIENT, SERVER):
            _fail(name, number, '"direction" must be "client" or "server"')
        try:
            when = datetime.datetime.fromisoformat(entry.get('time')).timestamp()
        except (TypeError, ValueError):
            _fail(name, number, '"time" must be a time like "2026-11-27T13:01:02.123456"')
        if isinstance(entry.get('message'), dict):
            line = json.dumps(entry['message'], ensure_ascii=False)
        elif isinstance(entry.get('text'), str):
            line = entry['text']
        else:
            _fail(name, number, 'a record needs a "message" object or a "text" string')
        yield session, direction, when, line.encode('utf-8', 'backslashreplace')


class RecordedSession:
    """A session as a recording tells it."""

    client_address = None
    upstream = None

    def __init__(self, number, opened):
        self.number = number
        self.opened = opened


def replay(records, analyzer):
    """Run recorded records through an analyzer, on this thread; then close its output."""
    records = list(records)
    last = {number: index for index, (number, _, _, _) in enumerate(records)}
    sessions = {}
    for index, (number, direction, when, line) in enumerate(records):
        session = sessions.get(number)
        if session is None:
            session = sessions[number] = RecordedSession(number, when)
            analyzer.open_session(session)
        analyzer.take_chunk(session, direction, when, line + b'\n')
        if last[number] == index:
            analyzer.close_session(session, when)
    analyzer.output.close()
