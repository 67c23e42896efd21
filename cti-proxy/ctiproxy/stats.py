"""Statistics: what ctistat counts in a session, and its report.

The report is one dict, printed as JSON (--json) or as text for people (format_report); each count has one
name in both (the text's "invalid" row is the JSON's "invalid").  Memory is bounded whatever the session's
length: the tops keep TOP entries, the timeline SPARK_WIDTH buckets per direction, error answers their first
FIRST_ERRORS texts per request, the requests waiting for an answer the pairing's MAX_WAITING.
"""

import array
import collections
import datetime
import heapq
import json
import math
import time

from .escaping import escape_text, json_bytes
from .filters import CLIENT, SERVER
from .outputs import ARROWS, Output
from .pairing import RequestPairing, error_of, label_of, request_label

BAR_WIDTH = 40
TOP = 5                   # the slowest answers and the biggest messages kept
FIRST_ERRORS = 3          # error texts kept per request label
ERROR_TEXT_MOST = 200     # characters kept of an error text
SHOWN_TEXT_MOST = 80      # characters of a name from the traffic in a list of the text report
UNANSWERED_SHOWN = 20     # requests never answered listed in the text report (--json lists all those kept)
SPARK_WIDTH = 60          # buckets of the timeline, characters of its line
FIRST_BUCKET = 1 / 1024   # seconds: a timeline's buckets start this short, and double as the session outgrows them
SPARKS = '\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588'     # ▁▂▃▄▅▆▇█; an empty bucket is a space
COUNT_ROWS = ('bytes', 'chunks', 'messages', 'invalid')   # the counts of each direction, a row each in the text
CAPTURE_ROWS = ('retransmitted', 'missing')                 # and those of a session read from a capture
NO_REQUEST = '(no request)'   # the label of an error message that answers no request waiting
TOOL = 'tool'             # closed_by of a session that the tool ended (a stop signal)


class DirectionStats:
    """Counts for one direction of a session."""

    def __init__(self):
        self.bytes = 0
        self.chunks = 0
        self.invalid = 0
        self.labels = {}           # (class, function or None): messages of that class with that function
        self.retransmitted = 0     # bytes a capture saw again (counted once in bytes)
        self.missing = 0           # bytes a capture lost

    @property
    def messages(self):
        return sum(self.labels.values())

    def as_dict(self, captured=False):
        """The counts; a capture's also have retransmitted and missing bytes."""
        counts = {'bytes': self.bytes, 'chunks': self.chunks, 'messages': self.messages, 'invalid': self.invalid}
        if captured:
            counts.update(retransmitted=self.retransmitted, missing=self.missing)
        classes = collections.Counter()
        with_function = collections.Counter()
        for (kind, function), count in self.labels.items():     # in the order each first came
            classes[kind] += count
            if function is not None:
                with_function[kind, function] = count
        functions = {}
        for (kind, function), count in with_function.most_common():
            functions.setdefault(kind, {})[function] = count
        counts.update(classes=dict(classes.most_common()), functions=functions)
        return counts


class TopN:
    """The `size` items of largest value added so far (the earliest first among equal values), in a heap."""

    def __init__(self, size=TOP):
        self.size = size
        self.floor = -math.inf         # an item's value must be above this to be kept
        self._heap = []
        self._added = 0

    def add(self, value, item):
        if value <= self.floor:
            return
        heap = self._heap
        self._added += 1
        entry = (value, -self._added, item)
        if len(heap) < self.size:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)
        if len(heap) == self.size:
            self.floor = heap[0][0]

    def largest(self):
        """The items kept, largest value first."""
        return [item for _, _, item in sorted(self._heap, key=lambda entry: entry[:2], reverse=True)]

    def __len__(self):
        return len(self._heap)


class Timeline:
    """Messages per bucket of time since the session's start, for each direction, in at most `width` buckets:
    when the session outgrows them, neighbours merge pairwise and buckets last twice as long."""

    def __init__(self, start, width=SPARK_WIDTH, bucket=FIRST_BUCKET):
        self.start = start
        self.width = width
        self.bucket = bucket
        self.counts = {CLIENT: [], SERVER: []}

    def add(self, direction, when):
        index = int((when - self.start) / self.bucket)
        counts = self.counts[direction]
        if 0 <= index < len(counts):        # most often: a bucket that direction has counted in already
            counts[index] += 1
        else:
            self._add_in_new_bucket(direction, when, index)

    def _add_in_new_bucket(self, direction, when, index):
        """add() where index, when's bucket at today's bucket length, is not yet one of direction's."""
        if not 0 <= index < self.width:
            index = self._index(when)
        counts = self.counts[direction]
        if index >= len(counts):
            counts.extend([0] * (index + 1 - len(counts)))
        counts[index] += 1

    def reach(self, when):
        """Make the buckets span the session up to `when` (its end)."""
        self._index(when)

    def buckets(self, when):
        """The number of buckets from the start to `when`."""
        return min(self.width, int(max(0.0, when - self.start) / self.bucket) + 1)

    def _index(self, when):
        """The bucket of `when`, merging buckets until there is one."""
        index = int(max(0.0, when - self.start) / self.bucket)
        while index >= self.width:
            self._merge()
            index = int(max(0.0, when - self.start) / self.bucket)
        return index

    def _merge(self):
        for direction, counts in self.counts.items():
            self.counts[direction] = [sum(counts[index:index + 2]) for index in range(0, len(counts), 2)]
        self.bucket *= 2

    def as_dict(self, ended):
        self.reach(ended)
        size = self.buckets(ended)
        shown = {direction: counts + [0] * (size - len(counts)) for direction, counts in self.counts.items()}
        return {'bucket_seconds': self.bucket, CLIENT: shown[CLIENT], SERVER: shown[SERVER]}


def sparkline(counts, peak):
    """One character per bucket: a space for none, else ▁ to █ in proportion to peak."""
    if peak <= 0:
        return ' ' * len(counts)
    return ''.join(SPARKS[math.ceil(len(SPARKS) * count / peak) - 1] if count > 0 else ' ' for count in counts)


class ErrorAnswers:
    """Error answers by the label of the request they answer (NO_REQUEST for none): a count and the first
    FIRST_ERRORS texts of each."""

    def __init__(self):
        self.counts = collections.Counter()
        self.first = {}

    def add(self, label, text):
        self.counts[label] += 1
        kept = self.first.setdefault(label, [])
        if len(kept) < FIRST_ERRORS:
            kept.append(text if len(text) <= ERROR_TEXT_MOST else text[:ERROR_TEXT_MOST] + '...')

    def as_dict(self):
        return {label: {'count': count, 'first': self.first[label]} for label, count in self.counts.most_common()}


def percentile(ordered, fraction):
    """The nearest-rank percentile of a sorted, non-empty list."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def median(ordered):
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def iso_time(when):
    """A time as ISO 8601, local with its UTC offset: '2026-11-27T13:01:02.123456+01:00'."""
    return datetime.datetime.fromtimestamp(when).astimezone().isoformat(timespec='microseconds')


def request_record(request):
    """A request as the report lists it."""
    return {'class': request.kind, 'function': request.function, 'commandid': json_id(request.commandid),
            'time': iso_time(request.time)}


def json_id(commandid):
    """A commandid as strict JSON has it: NaN and the infinities (which Python's json reads) as their text."""
    if commandid.__class__ is float and not math.isfinite(commandid):
        return json.dumps(commandid)
    return commandid


class SessionStats:
    """Counts and reply times for one session.

    A server message whose replyid equals the commandid of an earlier client
    request is that request's answer; the reply time runs from the arrival of
    the request's last byte to the arrival of the answer's.
    """

    def __init__(self, number, started, label='', client_address=None, server_address=None, captured=False):
        self.number = number
        self.started = started
        self.ended = None
        self.label = label
        self.client_address = client_address
        self.server_address = server_address
        self.closed_by = None          # the side that ended its sending first, or TOOL
        self.error = None              # what ended the session, if not the ordinary way (the source's one line)
        self.captured = captured
        self.directions = {CLIENT: DirectionStats(), SERVER: DirectionStats()}
        self.pairing = RequestPairing()
        self.reply_ms = collections.defaultdict(lambda: array.array('d'))  # request class: milliseconds
        self.errors = ErrorAnswers()
        self.slowest = TopN()
        self.biggest = TopN()
        self.timeline = Timeline(started)

    def add_chunk(self, direction, data):
        counts = self.directions[direction]
        counts.bytes += len(data)
        counts.chunks += 1

    def add_line(self, direction, when, message, size=0):
        """A line of `size` bytes from direction's side: its JSON object, or None for a line that is not one."""
        counts = self.directions[direction]
        if message is None:
            counts.invalid += 1
            return
        label = label_of(message)
        labels = counts.labels
        labels[label] = labels.get(label, 0) + 1
        self.timeline.add(direction, when)
        if size > self.biggest.floor:
            self.biggest.add(size, label + (size, direction, when))
        if direction == CLIENT:
            self.pairing.request(message, when)
        elif 'replyid' in message:
            self._answer(message, when)
        else:                                   # a server message that answers nothing: is it an error?
            error = error_of(message)
            if error is not None:
                self.errors.add(NO_REQUEST, error)

    def _answer(self, message, when):
        """A server message with a replyid: time it if it answers a request, count it if it reports an error."""
        reply = self.pairing.answer(message, when)
        if reply is not None:
            self.reply_ms[reply.request.kind].append(reply.ms)
            if reply.ms > self.slowest.floor:
                self.slowest.add(reply.ms, reply)
        error = error_of(message)
        if error is not None:
            request = None if reply is None else reply.request
            self.errors.add(NO_REQUEST if request is None else request_label(request.kind, request.function), error)

    def report(self):
        """The report as a JSON-ready dict."""
        replies = {}
        for kind, times in sorted(self.reply_ms.items(), key=lambda item: (-len(item[1]), item[0])):
            ordered = sorted(times)
            replies[kind] = {'count': len(ordered), 'min_ms': round(ordered[0], 3),
                             'median_ms': round(median(ordered), 3),
                             'p95_ms': round(percentile(ordered, 0.95), 3),
                             'max_ms': round(ordered[-1], 3)}
        ended = self.ended if self.ended is not None else self.started
        slowest = [dict(request_record(reply.request), ms=round(reply.ms, 3)) for reply in self.slowest.largest()]
        biggest = [{'class': kind, 'function': function, 'bytes': size, 'direction': direction,
                    'time': iso_time(when)} for kind, function, size, direction, when in self.biggest.largest()]
        return {'session': self.number, 'started': iso_time(self.started), 'duration': round(ended - self.started, 6),
                'client_address': self.client_address, 'server_address': self.server_address,
                'closed_by': self.closed_by, 'error': self.error,
                CLIENT: self.directions[CLIENT].as_dict(self.captured),
                SERVER: self.directions[SERVER].as_dict(self.captured),
                'timeline': self.timeline.as_dict(ended),
                'replies': replies, 'errors': self.errors.as_dict(),
                'unanswered': self.pairing.kept,
                'unanswered_requests': [request_record(request) for request in self.pairing.unanswered()],
                'not_timed': self.pairing.forgotten, 'slowest': slowest, 'biggest': biggest}


def format_report(report, label=''):
    """The report as text for people: where and when, counts, messages by class and function with bars, the
    timeline, reply times, error answers, requests never answered, the slowest answers and biggest messages.

    Everything from the traffic (class and function names, error texts, commandids) is shown escaped."""
    lines = _heading(report, label)
    rows = COUNT_ROWS + (CAPTURE_ROWS if 'missing' in report[CLIENT] else ())   # a capture's: seen twice, lost
    width = max(12, max(len(key) for key in rows))
    lines.append('%-*s %16s %16s' % (width, '', ARROWS[CLIENT], ARROWS[SERVER]))
    for key in rows:
        lines.append('%-*s %16d %16d' % (width, key, report[CLIENT][key], report[SERVER][key]))
    for direction in (CLIENT, SERVER):
        lines.append('')
        lines.extend(_class_rows(direction, report[direction]))
    for section in (_timeline_rows(report['timeline']), _reply_rows(report['replies']), _error_rows(report['errors']),
                    _unanswered_rows(report), _slowest_rows(report['slowest']), _biggest_rows(report['biggest'])):
        if section:
            lines.append('')
            lines.extend(section)
    return '\n'.join(lines) + '\n'


def _heading(report, label):
    """'Session #1, client ..., server ..., 0.523 s', then when it started and who closed it."""
    label = escape_text(label)
    lines = ['Session #%d%s, %.3f s' % (report['session'], ', ' + label if label else '', report['duration'])]
    started = 'Started %s' % report['started'].replace('T', ' ')
    if report['closed_by'] == TOOL:
        started += '; the tool closed it (stopped by a signal)'
    elif report['closed_by']:
        started += '; the %s closed it (ended its sending first)' % report['closed_by']
    if report['error'] and report['closed_by'] != TOOL:
        started += '; ' + escape_text(report['error'])
    lines.extend([started, ''])
    return lines


def _class_rows(direction, counts):
    """'Client > Server messages by class', a row with a bar for each class, and below it one for each of its
    functions ('getlist/updateconfig')."""
    rows = []
    for kind, count in counts['classes'].items():
        rows.append(('  ' + escape_text(kind), count))
        for function, number in counts['functions'].get(kind, {}).items():
            rows.append(('    ' + escape_text(request_label(kind, function)), number))
    lines = ['%s messages by class' % ARROWS[direction]]
    if not rows:
        return lines + ['  (none)']
    width = max(len(name) for name, _ in rows)
    most = max(count for _, count in rows)
    for name, count in rows:
        lines.append('%-*s %8d  %s' % (width, name, count, '\u2588' * max(1, round(BAR_WIDTH * count / most))))
    return lines


def _timeline_rows(timeline):
    """'Messages per 1/128 s', then a sparkline for each direction, on one scale, with its peak per second."""
    bucket = timeline['bucket_seconds']
    per = '%g s' % bucket if bucket >= 1 else '1/%d s' % round(1 / bucket)      # buckets of 2**n seconds
    peak = max(timeline[CLIENT] + timeline[SERVER])
    lines = ['Messages per %s, from start to end (\u2588 = %d)' % (per, peak)]
    for direction in (CLIENT, SERVER):
        counts = timeline[direction]
        lines.append('  %s |%s| peak %.4g/s' % (ARROWS[direction], sparkline(counts, peak), max(counts) / bucket))
    return lines


def _reply_rows(replies):
    if not replies:
        return ['No request was answered (no replyid matched a commandid).']
    rows = _escaped_items(replies)
    width = max(12, max(len(kind) for kind, _ in rows))
    lines = ['  %-*s %8s %9s %9s %9s %9s' % (width, 'Reply times', 'count', 'min ms', 'median', 'p95', 'max')]
    for kind, row in rows:
        lines.append('  %-*s %8d %9.3f %9.3f %9.3f %9.3f' % (
            width, kind, row['count'], row['min_ms'], row['median_ms'], row['p95_ms'], row['max_ms']))
    return lines


def _slowest_rows(slowest):
    """'Slowest answers', each with its time, request and commandid; none if no request was answered."""
    if not slowest:
        return []
    return ['Slowest answers'] + ['  %10.3f ms  %s  commandid %s  (asked %s)' % (
        row['ms'], _shown_label(row), _shown_id(row['commandid']), _clock(row['time'])) for row in slowest]


def _biggest_rows(biggest):
    """'Biggest messages', each with its size, direction, class and function; none if there were no messages."""
    if not biggest:
        return []
    return ['Biggest messages'] + ['  %10d bytes  %s  %s  (%s)' % (
        row['bytes'], ARROWS[row['direction']], _shown_label(row), _clock(row['time'])) for row in biggest]


def _error_rows(errors):
    """'Error answers: 3', then for each request label its count and first error texts (escaped, quoted)."""
    lines = ['Error answers: %d' % sum(row['count'] for row in errors.values())]
    rows = _escaped_items(errors)
    width = max([len(label) for label, _ in rows] or [0])
    for label, row in rows:
        texts = ', '.join(_quoted(text) for text in row['first'])
        more = ', ...' if row['count'] > len(row['first']) else ''
        lines.append('  %-*s %8d  %s%s' % (width, label, row['count'], texts, more))
    return lines


def _unanswered_rows(report):
    """'Requests never answered: N', the first UNANSWERED_SHOWN of them (time asked, label, commandid)."""
    lines = ['Requests never answered: %d' % report['unanswered']]
    listed = report['unanswered_requests']
    for row in listed[:UNANSWERED_SHOWN]:
        lines.append('  %s  %s  commandid %s' % (_clock(row['time']), _shown_label(row), _shown_id(row['commandid'])))
    if len(listed) > UNANSWERED_SHOWN:
        lines.append('  and %d more (--json lists them all)' % (len(listed) - UNANSWERED_SHOWN))
    if report['not_timed']:
        lines.append('Requests not timed (too many waiting): %d' % report['not_timed'])
    return lines


def _shorten(text, most=SHOWN_TEXT_MOST):
    return text if len(text) <= most else text[:most] + '...'


def _shown_label(row):
    """A row's 'class/function', shortened and escaped."""
    return escape_text(_shorten(request_label(row['class'], row['function'])))


def _shown_id(commandid):
    """A commandid as JSON (a string quoted), shortened and escaped."""
    return escape_text(_shorten(json.dumps(commandid, ensure_ascii=False)))


def _quoted(text):
    return escape_text(json.dumps(_shorten(text), ensure_ascii=False))


def _clock(iso):
    """'13:01:02.123456' of an ISO 8601 time."""
    return iso[11:26]


def _escaped_items(table):
    """[(key, value)] of table, each key (a class name from the traffic) escaped for a terminal."""
    return [(escape_text(key), value) for key, value in table.items()]


class StatOutput(Output):
    """ctistat: count each session, and print its report when it ends (or when the tool stops)."""

    needs_line = False          # only its size
    shows_unwritable = False

    def __init__(self, stream, as_json=False):
        self.stream = stream
        self.as_json = as_json
        self.sessions = {}

    def session_started(self, session):
        names = session.peer_names() or (None, None)
        self.sessions[session] = SessionStats(session.number, session.opened, session.describe(), names[0], names[1],
                                              session.captured)

    def chunk(self, session, direction, when, data):
        self.sessions[session].add_chunk(direction, data)

    def message(self, session, direction, when, message, line):
        self.sessions[session].add_line(direction, when, message, len(line))

    def stopping(self, when):
        """The tool ends the sessions still open: it closes those that no side had closed yet."""
        for session, stats in self.sessions.items():
            if session.ended_first is None:
                stats.closed_by = TOOL

    def missing(self, session, direction, when, size):
        self.sessions[session].directions[direction].missing += size or 0

    def retransmitted(self, session, direction, size):
        self.sessions[session].directions[direction].retransmitted += size

    def session_ended(self, session, when):
        stats = self.sessions.pop(session)
        stats.ended = when
        self._print(session, stats)

    def close(self):
        """Report the sessions still open (the tool was stopped)."""
        for session, stats in list(self.sessions.items()):
            if stats.ended is None:
                stats.ended = time.time()
            self._print(session, stats)
        self.sessions.clear()
        self.stream.flush()

    def _print(self, session, stats):
        """Who closed the session is the side whose sending ended first the ordinary way, as its source says
        (session.ended_first), unless the tool closed it first."""
        if stats.closed_by is None:
            stats.closed_by = session.ended_first
        stats.error = session.failure
        report = stats.report()
        if self.as_json:
            text = json_bytes(json.dumps(report, ensure_ascii=False)) + b'\n'
        else:
            text = (format_report(report, stats.label) + '\n').encode('utf-8', 'backslashreplace')
        self.stream.write(text)
        self.stream.flush()
