"""The web view's store: an output that keeps every session's rows for the HTTP server.  No I/O.

The analysis calls it on one thread (the Analyzer's live, the main thread for --read); the HTTP
server's threads read it.  Everything is kept under one lock, `changed`, a Condition whose waiters
(the event streams) are woken at each change, with `version` counting the changes.

It is ctispy's --json-lines output (with --loop's start and end records) writing into memory, one
buffer per session: the download of a session is exactly what --json-lines writes for it, and the
answers are paired by the same AnswerMarks.
"""

import argparse
import collections
import json
import shlex
import threading

from ..escaping import json_bytes
from ..filters import CLIENT, SERVER, MessageFilter
from ..framing import parse_message
from ..options import key_value
from ..outputs import JsonLinesOutput, end_text, mark_fields, one_line_json, start_text
from ..pairing import class_name, function_of, request_label
from ..recording import iso_time

MAX_ROWS = 5000           # rows one /rows answer holds at most
MAX_REPLIES = 10000       # reply times a timeline keeps (the latest)
PREVIEW = 200             # characters of a row's line in its preview
DOWNLOAD_BATCH = 1000      # records written at once in a download
MAX_QUERY_WORDS = 64      # words in a match query (each is looked for in every row)
MATCHES_KEPT = 8          # queries whose matches a session keeps, to extend them as rows come
MAX_KEPT = 1 << 30        # bytes of rows and records the store keeps; beyond, the oldest closed sessions go
ROW_COST = 300            # bytes a row takes besides its line (its object, its time, its place in the lists, its
#                           record's object), roughly: as tracemalloc counts them
SECOND_COST = 350         # bytes a second of a session's timeline takes (its entry and its counts)
SESSION_COST = 2500       # bytes a session takes besides its rows (its view, their lists, dicts and deque)


EXACT_IN_JAVASCRIPT = 2 ** 53 - 1   # the largest whole number a page's script reads exactly


def session_id(number):
    """A session's number as the API gives it: a JSON number, or beyond what a script reads exactly, its digits
    as a string (a recording may number its sessions with any integer)."""
    return number if -EXACT_IN_JAVASCRIPT <= number <= EXACT_IN_JAVASCRIPT else str(number)


def finite_numbers(value):
    """A parsed message with NaN and the infinities as their text (strings), which JSON (and a page) can read."""
    if value.__class__ is float and (value != value or value in (_INFINITY, -_INFINITY)):
        return _number_text(value)
    if isinstance(value, dict):
        return {key: finite_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_numbers(item) for item in value]
    return value


_INFINITY = float('inf')


def _number_text(value):
    return 'NaN' if value != value else ('Infinity' if value > 0 else '-Infinity')


class QueryError(ValueError):
    """A match query that cannot be read (the message says why, on one line)."""


class Row:
    """One row of a session's table: a line (a message, or text that is not one) or a notice of the tool."""

    __slots__ = ('when', 'direction', 'kind', 'kind_class', 'text_class', 'function', 'line', 'reply_to', 'answer',
                 'reply_ms', 'error', 'slow', 'unanswered', 'fields')

    def __init__(self, when, direction, kind, line, kind_class=None, function=None, text_class=False):
        self.when = when
        self.direction = direction
        self.kind = kind                # 'message', 'text' or 'notice'
        self.kind_class = kind_class    # the message's class named (pairing.class_name), or None
        self.text_class = text_class    # whether that class is a string (not a name made for another value)
        self.function = function
        self.line = line                # bytes; a notice's text in UTF-8
        self.reply_to = self.answer = self.reply_ms = self.error = None
        self.slow = self.unanswered = False
        self.fields = None              # an answer's mark_fields, for its --json-lines record

    def summary(self, index):
        """The row as /rows gives it."""
        return {'i': index, 't': self.when, 'time': iso_time(self.when), 'dir': self.direction, 'kind': self.kind,
                'class': self.kind_class, 'function': self.function, 'size': len(self.line),
                'reply_to': self.reply_to, 'answer': self.answer, 'reply_ms': self.reply_ms, 'error': self.error,
                'slow': self.slow, 'unanswered': self.unanswered,
                'preview': self.line[:4 * PREVIEW].decode('utf-8', 'replace')[:PREVIEW]}

    def text(self):
        return self.line.decode('utf-8', 'replace')

    def message(self):
        return parse_message(self.line) if self.kind == 'message' else None

    def class_and_function(self):
        """The message's class and function, where they are strings: all a query on them alone needs."""
        fields = {}
        if self.text_class:
            fields['class'] = self.kind_class
        if self.function is not None:
            fields['function'] = self.function
        return fields


class SessionView:
    """What the store keeps of one session."""

    def __init__(self, session):
        self.number = session.number
        self.peers = session.peer_names() or (None, None)
        self.opened = session.opened
        self.ended = None
        self.end = None
        self.encrypted = False
        self.counts = {CLIENT: 0, SERVER: 0}
        self.errors = 0
        self.unanswered = 0
        self.kept = 0                   # bytes of rows and records, roughly
        self.rows = []
        self.records = []               # the --json-lines records of the session: bytes as written, or the Row
        #                                 of a line, whose record is written when downloaded (not re-encoded for each)
        self.per_second = collections.OrderedDict()     # whole second -> {CLIENT: n, SERVER: n}
        self.replies = collections.deque(maxlen=MAX_REPLIES)     # (answer's time, ms, request's class)
        self.waiting = {}               # id(Request) -> (Request, its row): requests shown, not yet answered
        self.matches = collections.OrderedDict()        # query -> [rows looked at, indices]

    def summary(self):
        return {'number': session_id(self.number), 'client': self.peers[0], 'server': self.peers[1],
                'opened': self.opened, 'opened_time': iso_time(self.opened), 'ended': self.ended,
                'state': 'open' if self.ended is None else 'closed', 'end': self.end,
                'messages': dict(self.counts), 'rows': len(self.rows), 'errors': self.errors,
                'unanswered': self.unanswered, 'encrypted': self.encrypted}

    def add(self, row):
        self.rows.append(row)
        return len(self.rows) - 1

    def count(self, row):
        """Count a line in the message counts and the timeline; return whether its second is a new one there."""
        self.counts[row.direction] += 1
        second = int(row.when)
        counts = self.per_second.get(second)
        new = counts is None
        if new:
            counts = self.per_second[second] = {CLIENT: 0, SERVER: 0}
        counts[row.direction] += 1
        return new

    def timeline(self):
        return {'session': session_id(self.number),
                'per_second': [{'t': second, 'client': counts[CLIENT], 'server': counts[SERVER]}
                               for second, counts in sorted(self.per_second.items())],
                'replies': [{'t': when, 'ms': ms, 'class': kind} for when, ms, kind in self.replies]}


class _RecordSink:
    """Where the --json-lines output writes: the records of the session whose event is being handled."""

    def __init__(self, store):
        self.store = store
        self.view = None

    def write(self, data):
        self.view.records.append(data)
        self.store.keep(self.view, len(data))

    def flush(self):
        pass

    def close(self):
        pass


def _records_written(number, records):
    """The bytes of a session's records: a line's record written as --json-lines writes it, a batch at a time."""
    written = []
    writer = JsonLinesOutput(None)
    writer.stream = _ListSink(written)
    for record in records:
        if record.__class__ is bytes:
            written.append(record)
        else:
            writer.write_message(number, record.direction, record.when, record.message(), record.line, record.fields)
        if len(written) >= DOWNLOAD_BATCH:
            yield b''.join(written)
            written.clear()
    if written:
        yield b''.join(written)


class _ListSink:
    def __init__(self, parts):
        self.write = parts.append


class Query:
    """A match query: KEY=VALUE words include, -KEY=VALUE exclude (combined as --include and --exclude are),
    any other word is text that the line must hold (case-insensitively); all must hold.

    The decision is MessageFilter's, on the parsed message.  Parsing is what costs, so a line without a
    backslash (where every key and string is written as itself) is first looked at as bytes: one that lacks
    a key an include names, or every string value it may equal, cannot match and is not parsed."""

    def __init__(self, text):
        try:
            words = shlex.split(text)
        except ValueError as error:
            raise QueryError('%s in the query' % error)
        if len(words) > MAX_QUERY_WORDS:
            raise QueryError('%d words in the query: at most %d' % (len(words), MAX_QUERY_WORDS))
        include, exclude, self.texts = [], [], []
        for word in words:
            if word.startswith('-') and '=' in word:
                exclude.append(self._key_value(word[1:]))
            elif '=' in word:
                include.append(self._key_value(word))
            else:
                self.texts.append(word.lower())
        self.ascii_texts = [word.encode('ascii') for word in self.texts if word.isascii()]
        self.filter = MessageFilter(include=include, exclude=exclude)
        self.needed = needed_bytes(self.filter.include)
        # Only class and function, as strings: the filter decides on them alone, without parsing the line.
        self.on_class_and_function = all(
            test.path in (['class'], ['function']) and not test.json_values
            for selection in (self.filter.include, self.filter.exclude) for test in selection.tests.values())

    @staticmethod
    def _key_value(word):
        try:
            return key_value(word)
        except argparse.ArgumentTypeError as error:
            raise QueryError(str(error))

    def select(self, rows, start=0):
        """The indices (counted from start) of the rows that match: one loop, without a call per row where the
        bytes decide."""
        found = []
        texts, needed, shows = self.texts, self.needed, self.filter.shows
        passes_all = self.filter.passes_all
        for index, row in enumerate(rows, start):
            line = row.line
            if texts and not self._has_texts(line):
                continue
            if passes_all:
                found.append(index)
                continue
            if self.on_class_and_function and row.kind == 'message':
                if shows(row.class_and_function()):
                    found.append(index)
                continue
            if needed and row.kind == 'message' and b'\\' not in line and not _holds_all(line, needed):
                continue
            if shows(row.message()):
                found.append(index)
        return found

    def matches(self, row):
        return bool(self.select([row]))

    def _has_texts(self, line):
        if len(self.ascii_texts) == len(self.texts) and line.isascii():
            line = line.lower()
            return all(word in line for word in self.ascii_texts)
        text = line.decode('utf-8', 'replace').lower()
        return all(word in text for word in self.texts)


def _holds_all(line, needed):
    """Whether line holds one of each alternatives of needed."""
    for choices in needed:
        for needle in choices:
            if needle in line:
                break
        else:
            return False
    return True


def needed_bytes(selection):
    """What a line written without backslashes must hold to match a filters.Selection: a list of alternatives
    (tuples of bytes), one of each to be found: each key as a JSON string, and for a key whose values can only
    match as strings, one of them as a JSON string."""
    needed = []
    for test in selection.tests.values():
        needed.append((_json_bytes(test.path[-1]),))
        if not test.json_values:
            choices = tuple(_json_bytes(text) for text in test.texts)
            if None not in choices:
                needed.append(choices)
    return [choices for choices in needed if None not in choices]


def _json_bytes(text):
    """A string as JSON writes it unescaped, in UTF-8 (None for one that cannot be: a lone surrogate)."""
    try:
        return json.dumps(text, ensure_ascii=False).encode('utf-8')
    except UnicodeEncodeError:
        return None


class WebStore(JsonLinesOutput):
    """ctispy's output for the web view: every session's rows, marks, timeline and --json-lines records."""

    needs_line = True           # each row keeps its line

    def __init__(self, slow_ms=None, strip=None, max_kept=MAX_KEPT):
        super().__init__(None, loop=True, slow_ms=slow_ms)
        self.stream = _RecordSink(self)
        self.strip = strip              # the command line strips fields: a message's line is what is shown
        self.max_kept = max_kept
        self.kept = 0                   # bytes of rows and records, roughly
        self._closed = collections.deque()          # the numbers of the closed sessions, oldest first
        self.changed = threading.Condition(threading.Lock())
        self.version = 0                # counts the changes
        self._touched = collections.OrderedDict()   # number -> version of its last change, the latest last
        self._full_since = 0            # the version from which an event stream gets the whole list (forgotten ones)
        self._info_since = 0            # the version of the latest change to the info that the list announces
        self.stopped = False
        self.info = {'tool': 'ctispy', 'source': 'live', 'what': '', 'filters': '', 'done': False, 'forgotten': 0}
        self._views = collections.OrderedDict()     # number -> SessionView
        self._by_session = {}                       # SessionInfo -> SessionView

    # -- the output's events (on the analysis's thread) --

    def seen(self, session, direction, when, message):
        with self.changed:
            super().seen(session, direction, when, message)

    def session_started(self, session):
        with self.changed:
            view = self._by_session[session] = self._views[session.number] = SessionView(session)
            self.stream.view = view
            self.keep(view, SESSION_COST)
            super().session_started(session)
            self._add(view, Row(session.opened, None, 'notice', start_text(session).encode('utf-8', 'replace')))
            self._changed(view)

    def message(self, session, direction, when, message, line):
        with self.changed:
            view = self._by_session[session]
            self.stream.view = view
            row = self._row(direction, when, message, line)
            if self.marks.latest is not None:
                row.fields = mark_fields(self.marks.latest)
            view.records.append(row)
            index = self._add(view, row)
            if view.count(row):
                self.keep(view, SECOND_COST)
            if direction == CLIENT:
                request = self.marks.latest_request
                if request is not None:
                    view.waiting[id(request)] = (request, index)
            elif self.marks.latest is not None:
                self._mark_answer(view, row, index, self.marks.latest)
            self._changed(view)

    def _row(self, direction, when, message, line):
        if message is None:
            return Row(when, direction, 'text', bytes(line))
        if self.strip:
            try:
                line = json_bytes(one_line_json(message))
            except (ValueError, RecursionError):
                pass
        kind = message.get('class')
        return Row(when, direction, 'message', bytes(line), None if kind is None else class_name(kind),
                   function_of(message), kind.__class__ is str)

    @staticmethod
    def _mark_answer(view, row, index, mark):
        if mark.reply is not None:
            request = mark.reply.request
            row.reply_ms = round(mark.reply.ms, 3)
            view.replies.append((row.when, row.reply_ms, request_label(request.kind, None)))
            waiting = view.waiting.pop(id(request), None)
            if waiting is not None and waiting[0] is request:
                row.reply_to = waiting[1]
                view.rows[waiting[1]].answer = index
        if mark.error is not None:
            row.error = mark.error
            view.errors += 1
        row.slow = mark.slow

    def notice(self, session, when, text):
        with self.changed:
            view = self._by_session[session]
            self.stream.view = view
            super().notice(session, when, text)
            self._add(view, Row(when, None, 'notice', text.encode('utf-8', 'replace')))
            self._changed(view)

    def encrypted(self, session, direction, when):
        """Marks the session encrypted: the source's notice, which follows, is the row that says so."""
        with self.changed:
            view = self._by_session[session]
            view.encrypted = True
            self._changed(view)

    def never_answered(self, session, when, request):
        super().never_answered(session, when, request)
        view = self._by_session[session]
        view.unanswered += 1
        waiting = view.waiting.pop(id(request), None)
        if waiting is not None and waiting[0] is request:
            view.rows[waiting[1]].unanswered = True

    def session_ended(self, session, when):
        with self.changed:
            view = self._by_session[session]
            self.stream.view = view
            super().session_ended(session, when)
            del self._by_session[session]
            self._add(view, Row(when, None, 'notice', end_text(session).encode('utf-8', 'replace')))
            view.ended = when
            view.end = end_text(session)
            view.waiting.clear()
            self._closed.append(view.number)
            self._changed(view)

    def _add(self, view, row):
        """Under the lock: a row at the end of a session; return its index."""
        self.keep(view, len(row.line) + ROW_COST)
        return view.add(row)

    def keep(self, view, size):
        """Under the lock: count size more bytes kept for a session."""
        view.kept += size
        self.kept += size

    def _forget_closed_sessions(self):
        """Under the lock: forget the oldest closed sessions until what is kept fits in max_kept again."""
        while self.kept > self.max_kept and self._closed:
            view = self._views.pop(self._closed.popleft())
            self.kept -= view.kept
            self._touched.pop(view.number, None)
            self.info['forgotten'] += 1
            self._full_since = self.version + 1

    def _changed(self, view=None):
        """Under the lock: count a change (to a session's view, if given), forget what does not fit, and wake the
        event streams."""
        if self.kept > self.max_kept:
            self._forget_closed_sessions()
        self.version += 1
        if view is not None and view.number in self._views:
            self._touched[view.number] = self.version
            self._touched.move_to_end(view.number)
        self.changed.notify_all()

    # -- what the tool says (main thread) --

    def describe(self, source, what, filters=None):
        with self.changed:
            self.info.update(source=source, what=what)
            if filters is not None:
                self.info['filters'] = filters

    def has_input(self):
        """Whether a recording or capture was opened (describe()d), however far it was read."""
        with self.changed:
            return self.info['source'] != 'live'

    def read_to_the_end(self):
        with self.changed:
            self.info['done'] = True
            self._info_since = self.version + 1
            self._changed()

    def stop(self):
        """The tool stops: the event streams end."""
        with self.changed:
            self.stopped = True
            self.changed.notify_all()

    # -- what the HTTP server asks (its threads); a KeyError for an unknown session or row --

    def get_info(self):
        with self.changed:
            return dict(self.info)

    def sessions(self):
        with self.changed:
            views = list(self._views.values())
        # Summed up outside the lock (as rows() does): each field is read whole, as it was or as it is.
        return [view.summary() for view in views]

    def rows(self, number, start, count):
        with self.changed:
            rows = self._views[number].rows
            total, chosen = len(rows), rows[start:start + min(count, MAX_ROWS)]
        # Summed up outside the lock, which the analysis waits for: a row's marks may change meanwhile, each
        # read whole (an attribute at a time), as they were or as they are.
        return {'session': session_id(number), 'total': total,
                'rows': [row.summary(index) for index, row in enumerate(chosen, start)]}

    def row(self, number, index):
        with self.changed:
            rows = self._views[number].rows
            if not 0 <= index < len(rows):
                raise KeyError(index)
            row = rows[index]
            summary = row.summary(index)
        return {'row': summary, 'line': row.text(), 'message': row.message()}

    def match(self, number, text):
        """The indices of the rows that the query matches: a QueryError if it cannot be read."""
        query = Query(text)
        with self.changed:
            view = self._views[number]
            looked, indices = view.matches.pop(text, (0, []))
            rows = view.rows[looked:]
        indices = indices + query.select(rows, looked)
        with self.changed:
            view.matches[text] = (looked + len(rows), indices)
            while len(view.matches) > MATCHES_KEPT:
                view.matches.popitem(last=False)
        return {'session': session_id(number), 'total': looked + len(rows), 'indices': indices}

    def timeline(self, number):
        with self.changed:
            return self._views[number].timeline()

    def download(self, number):
        """The session's --json-lines records so far: an iterator of bytes, to be written one after the other
        (a KeyError at once for an unknown session)."""
        with self.changed:
            records = list(self._views[number].records)
        return _records_written(number, records)

    def wait(self, version, timeout):
        """Wait until the version differs from `version` or the store stops, at most timeout seconds; return
        (version, stopped)."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != version or self.stopped, timeout)
            return self.version, self.stopped

    def news(self, since):
        """What changed for an event stream since the version `since` (None: it knows nothing yet): (whether the
        list is whole, [(summary, its rows), ...] of the sessions that changed (or of all), or None if there is
        no news about the list; the version now).  Only the sessions that changed are looked at, and summed up
        outside the lock (as rows() does)."""
        with self.changed:
            version = self.version
            if since is None or since < self._full_since:
                views, whole = list(self._views.values()), True
            else:
                views, whole = [], False
                for number in reversed(self._touched):
                    if self._touched[number] <= since:
                        break
                    views.append(self._views[number])
                views.reverse()
                if not views and since >= self._info_since:
                    return False, None, version
        return whole, [(view.summary(), len(view.rows)) for view in views], version
