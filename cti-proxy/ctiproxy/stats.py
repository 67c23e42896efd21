"""Statistics: what ctistat counts in a session, and its report."""

import array
import collections
import json
import math
import time

from .escaping import escape_text, json_bytes
from .filters import CLIENT, SERVER
from .outputs import ARROWS, Output
from .pairing import RequestPairing, class_name
from .relay import peer_name

BAR_WIDTH = 40


class DirectionStats:
    """Counts for one direction of a session."""

    def __init__(self):
        self.bytes = 0
        self.chunks = 0
        self.messages = 0
        self.invalid = 0
        self.classes = collections.Counter()

    def as_dict(self):
        return {'bytes': self.bytes, 'chunks': self.chunks, 'messages': self.messages,
                'invalid': self.invalid, 'classes': dict(self.classes.most_common())}


def percentile(ordered, fraction):
    """The nearest-rank percentile of a sorted, non-empty list."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def median(ordered):
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


class SessionStats:
    """Counts and reply times for one session.

    A server message whose replyid equals the commandid of an earlier client
    request is that request's answer; the reply time runs from the arrival of
    the request's last byte to the arrival of the answer's.
    """

    def __init__(self, number, started, label=''):
        self.number = number
        self.started = started
        self.ended = None
        self.label = label
        self.directions = {CLIENT: DirectionStats(), SERVER: DirectionStats()}
        self.pairing = RequestPairing()
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
        counts.classes[class_name(message.get('class'))] += 1
        if direction == CLIENT:
            self.pairing.request(message, when)
        else:
            reply = self.pairing.answer(message, when)
            if reply is not None:
                self.reply_ms[reply.request.kind].append(reply.ms)

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
                CLIENT: self.directions[CLIENT].as_dict(), SERVER: self.directions[SERVER].as_dict(),
                'replies': replies, 'unanswered': self.pairing.kept, 'not_timed': self.pairing.forgotten}


def format_report(report, label=''):
    """The report as text for people: counts, messages by class with bars, reply times.

    Class names come from the traffic: they are shown escaped (escape_text)."""
    label = escape_text(label)
    lines = ['Session #%d%s, %.3f s' % (report['session'], ', ' + label if label else '', report['duration']), '']
    rows = [('bytes', 'bytes'), ('chunks', 'chunks'), ('messages', 'messages'), ('not JSON', 'invalid')]
    lines.append('%-12s %16s %16s' % ('', ARROWS[CLIENT], ARROWS[SERVER]))
    for title, key in rows:
        lines.append('%-12s %16d %16d' % (title, report[CLIENT][key], report[SERVER][key]))
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
        self.sessions[session] = SessionStats(session.number, session.opened, describe_session(session))

    def chunk(self, session, direction, when, data):
        self.sessions[session].add_chunk(direction, data)

    def message(self, session, direction, when, message, line):
        self.sessions[session].add_line(direction, when, message)

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


def describe_session(session):
    """'client 127.0.0.1:40512, server xivo-new:5003' for a relayed session."""
    client = getattr(session, 'client_address', None)
    upstream = getattr(session, 'upstream', None)
    if client is None or upstream is None:
        return ''
    return 'client %s, server %s' % (peer_name(client), upstream)
