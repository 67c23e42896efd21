"""Statistics: what ctistat counts in a session, and its report."""

import array
import collections
import json
import math
import time

from .escaping import escape_text, json_bytes
from .filters import CLIENT, SERVER
from .outputs import ARROWS, Output

BAR_WIDTH = 40
MAX_WAITING = 10000       # requests a session keeps waiting for their answer; beyond, the oldest is forgotten


class DirectionStats:
    """Counts for one direction of a session."""

    def __init__(self):
        self.bytes = 0
        self.chunks = 0
        self.messages = 0
        self.invalid = 0
        self.classes = collections.Counter()
        self.retransmitted = 0     # bytes a capture saw again (counted once in bytes)
        self.missing = 0           # bytes a capture lost

    def as_dict(self, captured=False):
        """The counts; a capture's also have retransmitted and missing bytes."""
        counts = {'bytes': self.bytes, 'chunks': self.chunks, 'messages': self.messages, 'invalid': self.invalid}
        if captured:
            counts.update(retransmitted=self.retransmitted, missing=self.missing)
        counts['classes'] = dict(self.classes.most_common())
        return counts


def _hashable(value):
    return value.__class__ in (str, int, float)


SMALL_CLASS = 16      # a list or object class of at most this many values is named by its JSON text


def class_name(kind):
    """How a class that is not a string is counted: its JSON text if small, else '(a big list)' or '(a big
    object)', so that a class nested as deep as json reads costs no recursion and makes no long name."""
    if kind.__class__ in (dict, list) and not _at_most(kind, SMALL_CLASS):
        return '(a big list)' if kind.__class__ is list else '(a big object)'
    return json.dumps(kind)


def _at_most(value, count):
    """Whether value holds at most count values, itself included, at any depth (counted without recursion)."""
    waiting = [value]
    while waiting:
        count -= 1
        if count < 0:
            return False
        value = waiting.pop()
        if value.__class__ in (dict, list):
            if len(value) > count:
                return False
            waiting.extend(value.values() if value.__class__ is dict else value)
    return True


def percentile(ordered, fraction):
    """The nearest-rank percentile of a sorted, non-empty list."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def median(ordered):
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


class WaitingRequests:
    """Client requests waiting for their answer, by commandid, each id's oldest first.

    Answered requests are dropped.  At most `limit` are kept: beyond that, the
    request waiting longest is forgotten and counted in `forgotten`.  Whether an
    answer comes for a forgotten request later cannot be told (its id is not kept),
    so it is neither timed nor counted as never answered: unanswered() is the number
    of requests still waiting, which no answer came for.
    """

    def __init__(self, limit=MAX_WAITING):
        self.limit = limit
        self.kept = 0
        self.forgotten = 0
        self._by_id = collections.OrderedDict()     # commandid: [(class, time), ...]; ids in order of arrival
        self._names = {}                            # one string per class name, shared by its requests

    def add(self, commandid, kind, when):
        if self.kept >= self.limit:
            self._forget_oldest()
        name = self._names.setdefault(kind, kind)
        waiting = self._by_id.get(commandid)
        if waiting is None:
            self._by_id[commandid] = [(name, when)]
        else:
            waiting.append((name, when))
        self.kept += 1

    def answer(self, replyid):
        """The (class, time) of the oldest request waiting with this commandid, taken out; None if none."""
        waiting = self._by_id.get(replyid)
        if waiting is None:
            return None
        request = waiting.pop(0)
        if not waiting:
            del self._by_id[replyid]
        self.kept -= 1
        return request

    def unanswered(self):
        """The requests kept and still waiting: none of them was answered."""
        return self.kept

    def _forget_oldest(self):
        commandid = next(iter(self._by_id))     # O(1): an OrderedDict starts at its oldest key
        self.answer(commandid)
        self.forgotten += 1


class SessionStats:
    """Counts and reply times for one session.

    A server message whose replyid equals the commandid of an earlier client
    request is that request's answer; the reply time runs from the arrival of
    the request's last byte to the arrival of the answer's.
    """

    def __init__(self, number, started, label='', captured=False):
        self.number = number
        self.started = started
        self.ended = None
        self.label = label
        self.captured = captured
        self.directions = {CLIENT: DirectionStats(), SERVER: DirectionStats()}
        self.waiting = WaitingRequests()
        self.reply_ms = collections.defaultdict(lambda: array.array('d'))  # request class: milliseconds

    def add_chunk(self, direction, data):
        counts = self.directions[direction]
        counts.bytes += len(data)
        counts.chunks += 1

    def add_line(self, direction, when, message):
        counts = self.directions[direction]
        if message is None:
            counts.invalid += 1
            return
        counts.messages += 1
        kind = message.get('class')
        counts.classes[kind if kind.__class__ is str else class_name(kind)] += 1
        if direction == CLIENT:
            commandid = message.get('commandid')
            if commandid is not None and _hashable(commandid):
                self.waiting.add(commandid, str(kind), when)
        else:
            replyid = message.get('replyid')
            if replyid is not None and _hashable(replyid):
                request = self.waiting.answer(replyid)     # the oldest request with that id
                if request is not None:
                    self.reply_ms[request[0]].append((when - request[1]) * 1000.0)

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
        return {'session': self.number, 'duration': round(ended - self.started, 6),
                CLIENT: self.directions[CLIENT].as_dict(self.captured),
                SERVER: self.directions[SERVER].as_dict(self.captured),
                'replies': replies, 'unanswered': self.waiting.unanswered(), 'not_timed': self.waiting.forgotten}


def format_report(report, label=''):
    """The report as text for people: counts, messages by class with bars, reply times.

    Class names come from the traffic: they are shown escaped (escape_text)."""
    label = escape_text(label)
    lines = ['Session #%d%s, %.3f s' % (report['session'], ', ' + label if label else '', report['duration']), '']
    rows = [('bytes', 'bytes'), ('chunks', 'chunks'), ('messages', 'messages'), ('not JSON', 'invalid')]
    if 'missing' in report[CLIENT]:             # from a capture: bytes seen twice, bytes lost
        rows += [('retransmitted', 'retransmitted'), ('missing', 'missing')]
    width = max(len(title) for title, _ in rows) if len(rows) > 4 else 12
    lines.append('%-*s %16s %16s' % (width, '', ARROWS[CLIENT], ARROWS[SERVER]))
    for title, key in rows:
        lines.append('%-*s %16d %16d' % (width, title, report[CLIENT][key], report[SERVER][key]))
    for direction in (CLIENT, SERVER):
        classes = _escaped_items(report[direction]['classes'])
        lines.append('')
        lines.append('%s messages by class' % ARROWS[direction])
        if not classes:
            lines.append('  (none)')
            continue
        width = max(len(kind) for kind, _ in classes)
        most = max(count for _, count in classes)
        for kind, count in classes:
            bar = '\u2588' * max(1, round(BAR_WIDTH * count / most))
            lines.append('  %-*s %8d  %s' % (width, kind, count, bar))
    lines.append('')
    replies = _escaped_items(report['replies'])
    if replies:
        width = max(12, max(len(kind) for kind, _ in replies))
        lines.append('  %-*s %8s %9s %9s %9s %9s' % (width, 'Reply times', 'count', 'min ms', 'median', 'p95', 'max'))
        for kind, row in replies:
            lines.append('  %-*s %8d %9.3f %9.3f %9.3f %9.3f' % (
                width, kind, row['count'], row['min_ms'], row['median_ms'], row['p95_ms'], row['max_ms']))
    else:
        lines.append('No request was answered (no replyid matched a commandid).')
    lines.append('Requests never answered: %d' % report['unanswered'])
    if report['not_timed']:
        lines.append('Requests not timed (too many waiting): %d' % report['not_timed'])
    return '\n'.join(lines) + '\n'


def _escaped_items(table):
    """[(key, value)] of table, each key (a class name from the traffic) escaped for a terminal."""
    return [(escape_text(key), value) for key, value in table.items()]


class StatOutput(Output):
    """ctistat: count each session, and print its report when it ends (or when the tool stops)."""

    def __init__(self, stream, as_json=False):
        self.stream = stream
        self.as_json = as_json
        self.sessions = {}

    def session_started(self, session):
        self.sessions[session] = SessionStats(session.number, session.opened, session.describe(), session.captured)

    def chunk(self, session, direction, when, data):
        self.sessions[session].add_chunk(direction, data)

    def message(self, session, direction, when, message, line):
        self.sessions[session].add_line(direction, when, message)

    def missing(self, session, direction, when, size):
        self.sessions[session].directions[direction].missing += size or 0

    def retransmitted(self, session, direction, size):
        self.sessions[session].directions[direction].retransmitted += size

    def session_ended(self, session, when):
        stats = self.sessions.pop(session)
        stats.ended = when
        self._print(stats)

    def close(self):
        """Report the sessions still open (the tool was stopped)."""
        for stats in list(self.sessions.values()):
            if stats.ended is None:
                stats.ended = time.time()
            self._print(stats)
        self.sessions.clear()
        self.stream.flush()

    def _print(self, stats):
        report = stats.report()
        if self.as_json:
            text = json_bytes(json.dumps(report, ensure_ascii=False)) + b'\n'
        else:
            text = (format_report(report, stats.label) + '\n').encode('utf-8', 'backslashreplace')
        self.stream.write(text)
        self.stream.flush()
