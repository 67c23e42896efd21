"""Outputs: what each tool does with the messages it is shown.

Each output reacts to named events, all called by the analysis (analysis.py) but the first; session is
an events.SessionInfo:
    session_opening(session)                    on the session's own thread, before session_started:
        open what the session needs (files_per_session descriptors at most)
    session_started(session)
    chunk(session, direction, when, data)      every chunk relayed, as received
    seen(session, direction, when, message)     every line, before any filter, if the output sees_all
    message(session, direction, when, message, line)
        a line: message is its JSON object, or None when the line is not one; unless the output needs_line,
        a line over BIG_LINE bytes is a framing.BigLine: its len(), and bytes() if it is not a message, or if
        shows_unwritable and json may fail to write the message
    notice(session, when, text)                 news about a session (STARTTLS, bytes a capture lost)
    missing(session, direction, when, size)     a capture lost size bytes of direction's stream (None: its start)
    retransmitted(session, direction, size)     a capture saw size bytes of direction's stream again
    encrypted(session, direction, when)         what follows from direction's side is TLS
    session_ended(session, when)
    stopping(when)                              the tool is about to end the sessions still open (a stop signal)
    flush()                                     after each chunk's messages
    close()                                     once, when the tool ends
and, on the main thread, start() once the tool knows it can start, before any session.
"""

import collections
import datetime
import errno
import itertools
import json
import math
import os
import re
import stat
import threading

from .escaping import SLICE, escape_text, json_bytes, json_string_pieces, shown_pieces
from .filters import CLIENT, SERVER
from .framing import BigLine, line_bytes
from .pairing import RequestPairing, error_of, request_label
from .recording import event_record, iso_time, message_record, notice_record


class OutputError(Exception):
    """An output cannot go on (a file that cannot be written); the message names it and says why."""


class BatchedStream:
    """Hands what an output writes to a binary stream in big writes: at flush(), or every BATCH bytes.

    Many small writes to a buffered file let the analysis thread hold the interpreter
    lock for long stretches while a pump waits to forward bytes (measured here:
    milliseconds, up to half a second, whatever the switch interval); a few big
    writes do not.
    """

    BATCH = 256 * 1024

    def __init__(self, stream, name='stdout'):
        self.stream = stream
        self.name = name
        self._parts = []
        self._size = 0

    def write(self, data):
        if len(data) >= self.BATCH:         # a big piece goes as it is, not copied to be joined to what waits
            if self._parts:
                self._write_out()
            self.stream.write(data)
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self.BATCH:
            self._write_out()

    def flush(self):
        if self._parts:
            self._write_out()
        self.stream.flush()

    def close(self):
        try:
            self.flush()
        finally:
            self.stream.close()

    def _write_out(self):
        data = self._parts[0] if len(self._parts) == 1 else b''.join(self._parts)
        self._parts = []
        self._size = 0
        self.stream.write(data)


class Output:
    """The events an output may react to; each does nothing unless overridden."""

    wants_messages = True
    sees_all = False                # seen() is called for every line, whatever the filters hide
    needs_line = True               # message() gets every line's bytes (else a big message's line is a BigLine)
    shows_unwritable = True         # it shows the line of a message that json cannot write (BigLine's bytes())
    files_per_session = 0           # file descriptors that session_opening opens

    def session_opening(self, session):
        """Out of file descriptors, this raises the OSError (EMFILE...), which the relay waits on and
        calls it again; any other failure is an OutputError."""

    def session_started(self, session):
        pass

    def chunk(self, session, direction, when, data):
        pass

    def seen(self, session, direction, when, message):
        pass

    def message(self, session, direction, when, message, line):
        pass

    def notice(self, session, when, text):
        pass

    def encrypted(self, session, direction, when):
        pass

    def missing(self, session, direction, when, size):
        pass

    def retransmitted(self, session, direction, size):
        pass

    def session_ended(self, session, when):
        pass

    def stopping(self, when):
        pass

    def flush(self):
        pass

    def close(self):
        pass

    def start(self):
        """Called once the tool knows it can start (the port bound, or the recording opened), before
        any session: the moment to open files, not before."""


def _one_line_encoder(sort_keys=False):
    """json.dumps(message, ensure_ascii=False, sort_keys=sort_keys), and the same text as parts to join (a list
    or tuple of str), with json's C encoder built once instead of per call."""
    make_encoder = getattr(json.encoder, 'c_make_encoder', None)
    if make_encoder is None:
        encode_text = json.JSONEncoder(ensure_ascii=False, sort_keys=sort_keys).encode
        return encode_text, lambda message: (encode_text(message),)
    # markers, default, string encoder, indent, key and item separators, sort_keys, skipkeys, allow_nan
    encode = make_encoder(None, None, json.encoder.encode_basestring, None, ': ', ', ', sort_keys, False, True)
    return (lambda message: ''.join(encode(message, 0))), (lambda message: encode(message, 0))


one_line_json, one_line_parts = _one_line_encoder()
_one_line_sorted = _one_line_encoder(sort_keys=True)[0]

_string = json.encoder.encode_basestring       # a JSON string literal, non-ASCII kept as is
_LITERALS = {True: 'true', False: 'false', None: 'null'}
_INFINITY = float('inf')

# pretty_json indents objects and arrays nested up to this deep (their items at 64 columns at most);
# a deeper one is written on one line, so that nesting cannot make the output many times its size.
MAX_INDENT_DEPTH = 16
_TOO_DEEP = 1 + 4 * MAX_INDENT_DEPTH         # the length of the newline and indentation one level deeper


def _number(value):
    """A float as json writes it."""
    if value != value:
        return 'NaN'
    if value == _INFINITY:
        return 'Infinity'
    if value == -_INFINITY:
        return '-Infinity'
    return float.__repr__(value)


def _scalar_json(value):
    """An int, a float, True, False or None as json writes it."""
    kind = value.__class__
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        return _number(value)
    return _LITERALS[value]


# '"class": ' for the keys met so far: the next messages have the same keys.  At most KEYS_KEPT keys of at most
# KEPT_KEY_SIZE characters are kept, so that no traffic can make it grow beyond a few hundred KB.
_key_texts = {}
KEYS_KEPT = 4096
KEPT_KEY_SIZE = 64


def _key_text(key):
    """'"key": ', kept in _key_texts if there is room."""
    text = _string(key) + ': '
    if len(_key_texts) < KEYS_KEPT and len(key) <= KEPT_KEY_SIZE:
        _key_texts[key] = text
    return text


def pretty_json(value, newline='\n'):
    """A message indented by 4 with sorted keys, as ctispy --pretty-print and ctisave write it.

    The same text as json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False) for a
    message nested at most MAX_INDENT_DEPTH deep, two to three times faster before Python 3.13,
    whose json does this in C.  Deeper objects and arrays are written on one line, with sorted keys.
    """
    kind = value.__class__
    if kind is str:
        return _string(value)
    if kind is dict:
        return _pretty_object(value, newline) if value else '{}'
    if kind is list:
        if not value:
            return '[]'
        if len(newline) >= _TOO_DEEP:
            return _one_line_sorted(value)
        inner = newline + '    '
        items = [_string(item) if item.__class__ is str else pretty_json(item, inner) for item in value]
        items[0] = '[' + inner + items[0]           # the brackets with the items: the list is joined once
        items[-1] += newline + ']'
        return (',' + inner).join(items)
    return _scalar_json(value)


def _pretty_object(value, newline):
    """pretty_json of a dict that is not empty: its parts joined once (a big item is not copied into a bigger one
    with its key, then again with its brackets)."""
    if len(newline) >= _TOO_DEEP:
        return _one_line_sorted(value)
    inner = newline + '    '
    comma = ',' + inner
    key_texts = _key_texts
    parts = []
    for key in sorted(value):
        item = value[key]
        kind = item.__class__
        if kind is str:
            text = _string(item)
        elif kind is dict or kind is list:
            text = pretty_json(item, inner)
        else:
            text = _scalar_json(item)
        parts += (comma, key_texts.get(key) or _key_text(key), text)
    parts[0] = '{' + inner
    parts.append(newline + '}')
    return ''.join(parts)


def _indenting_encoder():
    """json.dumps(message, indent=4, sort_keys=True, ensure_ascii=False) by json's C encoder, built once; None
    before Python 3.13, whose C encoder takes an indent and ignores it."""
    make_encoder = getattr(json.encoder, 'c_make_encoder', None)
    if make_encoder is None:
        return None
    encode = make_encoder(None, None, json.encoder.encode_basestring, '    ', ': ', ',', True, False, True)
    if ''.join(encode({'a': [1]}, 0)) != '{\n    "a": [\n        1\n    ]\n}':
        return None
    return lambda message: ''.join(encode(message, 0))


_indented_in_c = _indenting_encoder()
_TOO_DEEP_ITEM = '\n' + ' ' * (4 * MAX_INDENT_DEPTH + 4)     # an item that pretty_json writes on its container's line


def pretty_message(message):
    """pretty_json(message), by json's C encoder where it can (Python 3.13 and later): the same text unless the
    message nests deeper than MAX_INDENT_DEPTH (a newline is never inside a JSON string, so the layout shows it),
    in which case, or if json cannot write it, pretty_json writes it."""
    if _indented_in_c is not None:
        try:
            text = _indented_in_c(message)
        except (ValueError, RecursionError):
            text = None
        if text is not None and _TOO_DEEP_ITEM not in text:
            return text
    return pretty_json(message)


def pretty_parts(message):
    """pretty_message(message) as parts to join, as one_line_parts gives them."""
    return (pretty_message(message),)


BATCH = 1024        # the items of a big list or object that are written in one piece


def _batches(value, keys=None):
    """A list's items, or an object's items (in keys' order, or its own), BATCH at a time as lists or objects."""
    if value.__class__ is list:
        for start in range(0, len(value), BATCH):
            yield value[start:start + BATCH]
    else:
        keys = list(value) if keys is None else keys
        for start in range(0, len(keys), BATCH):
            yield {key: value[key] for key in keys[start:start + BATCH]}


def one_line_pieces(value):
    """one_line_json(value) in pieces: a big list's or object's items BATCH at a time, so that a big message's text
    is never held whole.  For a message nested at most framing.SAFE_DEPTH deep (json could fail half way)."""
    kind = value.__class__
    if (kind is not dict and kind is not list) or not value:
        yield one_line_json(value)
        return
    yield '{' if kind is dict else '['
    if len(value) > BATCH:
        for index, batch in enumerate(_batches(value)):
            if index:
                yield ', '
            yield one_line_json(batch)[1:-1]
    else:
        separator = ''
        for key, item in value.items() if kind is dict else zip(_NO_KEYS, value):
            prefix = separator if key is None else separator + _string(key) + ': '
            separator = ', '
            if (item.__class__ is dict or item.__class__ is list) and item:
                yield prefix
                yield from one_line_pieces(item)
            else:
                yield prefix + one_line_json(item)
    yield '}' if kind is dict else ']'


def pretty_pieces(value, newline='\n'):
    """pretty_message(value) in pieces, as one_line_pieces gives one_line_json."""
    kind = value.__class__
    if (kind is not dict and kind is not list) or not value or len(newline) >= _TOO_DEEP:
        yield pretty_json(value, newline)
        return
    inner = newline + '    '
    comma = ',' + inner
    keys = sorted(value) if kind is dict else None
    yield ('{' if kind is dict else '[') + inner
    if len(value) > BATCH:
        for index, batch in enumerate(_batches(value, keys)):
            if index:
                yield comma
            yield pretty_json(batch, newline)[len(inner) + 1:-len(newline) - 1]
    else:
        separator = ''
        for key in keys if kind is dict else range(len(value)):
            item = value[key]
            prefix = separator if keys is None else separator + (_key_texts.get(key) or _key_text(key))
            separator = comma
            if (item.__class__ is dict or item.__class__ is list) and item:
                yield prefix
                yield from pretty_pieces(item, inner)
            else:
                yield prefix + pretty_json(item, inner)
    yield newline + ('}' if kind is dict else ']')


_NO_KEYS = itertools.repeat(None)


def write_pieces(stream, header, pieces, ending=b'\n'):
    """Write header, a message's JSON text from pieces (one_line_pieces, pretty_pieces) made safe on a terminal
    (json_bytes) a slice at a time, and ending: a big message's text is never held whole, as text or as bytes."""
    stream.write(header)
    for piece in pieces:
        if len(piece) <= SLICE:
            stream.write(json_bytes(piece))
        else:
            for start in range(0, len(piece), SLICE):
                stream.write(json_bytes(piece[start:start + SLICE]))
    stream.write(ending)


def write_message(stream, header, message, to_parts, ending=b'\n'):
    """Write header, the message's JSON text (to_parts gives it in parts) in UTF-8 made safe on a terminal
    (json_bytes), and ending; return False, writing nothing, if the message is nested deeper than json can write.

    A small message goes in one write; a big one's text is encoded a slice at a time, so that it is never held
    whole twice (as text and as bytes), nor joined from its parts."""
    try:
        parts = to_parts(message)
    except (ValueError, RecursionError):
        return False
    if len(parts) == 1 and len(parts[0]) <= COPIED_BODY:
        stream.write(header + json_bytes(parts[0]) + ending)
    else:
        write_pieces(stream, header, parts, ending)
    return True


def write_line(stream, pieces):
    """Write a line that comes in pieces (a long one is escaped a slice at a time), then its newline."""
    write = stream.write
    for piece in pieces:
        write(piece)
    write(b'\n')


def shown_text(line):
    """A line that is not a message, made safe to show on a terminal (without the CR of a CRLF):
    UTF-8 bytes, in pieces of bounded size."""
    if line.endswith(b'\r'):
        line = memoryview(line)[:-1]
    return shown_pieces(line)


ARROWS = {CLIENT: 'Client > Server', SERVER: 'Server > Client'}
SHORT_ARROWS = {CLIENT: 'C>S', SERVER: 'S>C'}
COLOURS = {CLIENT: '\x1b[1;32m', SERVER: '\x1b[1;36m'}
ERROR_COLOUR = '\x1b[1;31m'
SLOW_COLOUR = '\x1b[1;33m'
RESET = '\x1b[0m'

TIME_FORMS = ('clock', 'date', 'epoch', 'since-start', 'delta')
COPIED_BODY = 64 * 1024         # a message's text up to this size is joined to its header and end in one write
MAX_SHOWN_ERROR = 200           # characters of an error text shown in a header; the message holds it all


def microseconds(when):
    """A time in whole microseconds, rounded as datetime.fromtimestamp rounds it for a recording: live and
    replayed times then give the same durations to the microsecond."""
    fraction, seconds = math.modf(when)
    return int(seconds) * 1000000 + round(fraction * 1000000)


def duration(micro):
    """'00:00:01.250000' (hours grow past 99), '-00:00:00.000120' for a time that went back."""
    sign = '-' if micro < 0 else ''
    seconds, fraction = divmod(abs(micro), 1000000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return '%s%02d:%02d:%02d.%06d' % (sign, hours, minutes, seconds, fraction)


class Clock:
    """How ctispy shows a time (--time): 'clock' 13:01:02.125470 (local), 'date' 2026-11-28 13:01:02.125470,
    'epoch' 1795870862.125470, 'since-start' the time since the session opened, 'delta' since the previous
    message shown of that session (since-start for its first), both as 00:00:00.001400."""

    SECOND_FORMATS = {'clock': '%H:%M:%S', 'date': '%Y-%m-%d %H:%M:%S'}

    def __init__(self, form='clock'):
        self.form = form
        self.advances = form == 'delta'     # each stamp depends on the one before: headers are not reused
        self._previous = {}                 # session -> the time of its latest message shown, in microseconds
        self._second = None                 # the latest second shown as local time, and its text
        self._second_text = None

    def stamp(self, session, when, message=True):
        """The time as shown; message: a message's time (the next delta counts from it), not a notice's."""
        form = self.form
        micro = microseconds(when)
        if form in self.SECOND_FORMATS:
            return self._local_time(micro)
        if form == 'epoch':
            return '%d.%06d' % divmod(micro, 1000000)
        start = microseconds(session.opened)
        if form == 'since-start':
            return duration(micro - start)
        previous = self._previous.get(session, start)
        if message:
            self._previous[session] = micro
        return duration(micro - previous)

    def _local_time(self, micro):
        """datetime.fromtimestamp(when).strftime(...'.%f'), each second formatted once (strftime is slow)."""
        second, fraction = divmod(micro, 1000000)
        if second != self._second:
            self._second_text = datetime.datetime.fromtimestamp(second).strftime(self.SECOND_FORMATS[self.form])
            self._second = second
        return '%s.%06d' % (self._second_text, fraction)

    def forget(self, session):
        self._previous.pop(session, None)


Mark = collections.namedtuple('Mark', 'reply error slow')
Mark.__doc__ = 'What a server message is: the Reply it is (or None), its error text (or None), whether slow.'


class AnswerMarks:
    """Pairs every message of each session (before any filter hides it) and marks the server's answers:
    the request each answers and how long it took, error answers, answers slower than slow_ms."""

    def __init__(self, slow_ms=None):
        self.slow_ms = slow_ms
        self.latest = None          # the Mark of the line seen last, or None
        self.latest_request = None  # the pairing's Request for the client line seen last, or None
        self._pairings = {}

    def start(self, session):
        self._pairings[session] = RequestPairing()

    def see(self, session, direction, when, message):
        self.latest = self.latest_request = None
        pairing = self._pairings.get(session)
        if message is None or pairing is None:
            return
        if direction == CLIENT:
            self.latest_request = pairing.request(message, microseconds(when) / 1000000.0)
            return
        reply = pairing.answer(message, microseconds(when) / 1000000.0) if 'replyid' in message else None
        error = error_of(message)
        if reply is not None or error is not None:
            slow = reply is not None and self.slow_ms is not None and reply.ms > self.slow_ms
            self.latest = Mark(reply, error, slow)

    def end(self, session):
        """The session's requests never answered, in the order they came."""
        pairing = self._pairings.pop(session, None)
        return pairing.unanswered() if pairing is not None else []


class FanOut(Output):
    """Several outputs at once (ctispy's terminal and its web view): each event goes to each part that
    takes it; sees_all and wants_messages if any part does."""

    def __init__(self, *parts):
        self.parts = parts
        self.wants_messages = any(part.wants_messages for part in parts)
        self.sees_all = any(part.sees_all for part in parts)
        self.files_per_session = sum(part.files_per_session for part in parts)
        self.needs_line = any(part.needs_line for part in parts if part.wants_messages)
        self.shows_unwritable = any(part.shows_unwritable for part in parts if part.wants_messages)
        self._seeing = [part for part in parts if part.sees_all]
        self._reading = [part for part in parts if part.wants_messages]

    def seen(self, *args):
        for part in self._seeing:
            part.seen(*args)

    def message(self, *args):
        for part in self._reading:
            part.message(*args)


def _to_each_part(name):
    """FanOut's handler of an event that every part gets."""
    def event(self, *args):
        for part in self.parts:
            getattr(part, name)(*args)
    event.__name__ = name
    return event


for _event in ('session_opening', 'session_started', 'chunk', 'notice', 'encrypted', 'missing', 'retransmitted',
               'session_ended', 'stopping', 'flush', 'close', 'start'):
    setattr(FanOut, _event, _to_each_part(_event))


def shown_error(text):
    """An error text for a header: escaped, and cut after MAX_SHOWN_ERROR characters."""
    if len(text) > MAX_SHOWN_ERROR:
        text = text[:MAX_SHOWN_ERROR] + '...'
    return escape_text(text)


def mark_parts(mark, colour=False):
    """['reply to login_id, 1.4 ms', 'SLOW', 'ERROR: unknown class'], each from the network escaped."""
    parts = []
    if mark.reply is not None:
        request = mark.reply.request
        label = escape_text(request_label(request.kind, request.function))
        parts.append('reply to %s, %.1f ms' % (label, mark.reply.ms))
    if mark.slow:
        parts.append(SLOW_COLOUR + 'SLOW' + RESET if colour else 'SLOW')
    if mark.error is not None:
        text = 'ERROR: ' + shown_error(mark.error)
        parts.append(ERROR_COLOUR + text + RESET if colour else text)
    return parts


def start_text(session):
    """'session #1 started: client 127.0.0.1:40512, server xivo-new:5003'."""
    peers = session.peer_names()
    text = 'session #%d started' % session.number
    return text if peers is None else '%s: client %s, server %s' % (text, peers[0], peers[1])


def end_text(session):
    """'session #1 ended: the client closed', or the failure that ended it."""
    text = 'session #%d ended' % session.number
    failure = session.failure
    if failure:
        return '%s: %s' % (text, failure)
    first = session.ended_first
    return '%s: the %s closed' % (text, first) if first in (CLIENT, SERVER) else text


def unanswered_text(request, sent):
    """'never answered: getlist/updateconfig (commandid 3), sent 13:01:02.125470'."""
    return 'never answered: %s (commandid %s), sent %s' % (
        request_label(request.kind, request.function), json.dumps(request.commandid), sent)


class MarkingOutput(Output):
    """What ctispy's outputs share: answers marked (AnswerMarks), the requests never answered listed at each
    session's end, and with `loop` each session's start and end."""

    sees_all = True
    needs_line = False

    def __init__(self, loop=False, slow_ms=None):
        self.loop = loop
        self.marks = AnswerMarks(slow_ms)

    def seen(self, session, direction, when, message):
        self.marks.see(session, direction, when, message)

    def session_started(self, session):
        self.marks.start(session)
        if self.loop:
            self.session_start(session)

    def session_ended(self, session, when):
        for request in self.marks.end(session):
            self.never_answered(session, when, request)
        if self.loop:
            self.session_end(session, when)

    def session_start(self, session):
        """Show the start of a session (with --loop)."""

    def session_end(self, session, when):
        """Show the end of a session (with --loop)."""

    def never_answered(self, session, when, request):
        """Show a request that was never answered, at its session's end."""


class SpyOutput(MarkingOutput):
    """ctispy's display: a header with time and direction (and what an answer answers), then the message;
    or, with oneline, all of it on one line."""

    def __init__(self, stream, pretty=False, raw=False, colour=False, oneline=False, loop=False, slow_ms=None,
                 clock=None):
        super().__init__(loop, slow_ms)
        self.stream = BatchedStream(stream)
        self.to_parts = pretty_parts if pretty else one_line_parts
        self.to_pieces = pretty_pieces if pretty else one_line_pieces
        self.raw = raw
        self.wants_messages = not raw
        self.sees_all = not raw
        self.colour = colour
        self.oneline = oneline
        self.clock = clock or Clock()
        self.open_sessions = set()
        self.tagged = loop          # every line is tagged with its session: with --loop, or once two sessions
        self._header_key = None     # were open at once
        self._header = None

    def session_started(self, session):
        self.open_sessions.add(session)
        self.tagged = self.tagged or len(self.open_sessions) > 1
        super().session_started(session)

    def session_ended(self, session, when):
        super().session_ended(session, when)
        self.open_sessions.discard(session)
        self.clock.forget(session)

    def header(self, session, direction, when, mark=None):
        """The line above a message: '    13:01:02.123456 Client > Server', tagged '[#2]' with --loop or when
        several sessions are open, and for an answer '  reply to login_id, 1.4 ms' (SLOW, ERROR: ...);
        with oneline, the start of the message's line: '13:01:02.123456 [#2] S>C '."""
        key = (session, direction, when, self.tagged)
        if mark is None and key == self._header_key and not self.clock.advances:
            return self._header
        stamp = self.clock.stamp(session, when)
        tag = '[#%d]' % session.number if key[3] else None
        if self.oneline:
            text = '%s %s%s' % (stamp, tag + ' ' if tag else '', SHORT_ARROWS[direction])
        else:
            text = '%s %s %s' % (tag or '   ', stamp, ARROWS[direction])
        if self.colour:
            text = COLOURS[direction] + text + RESET
        if mark is not None and not self.oneline:
            text = '  '.join([text] + mark_parts(mark, self.colour))
        header = (text + (' ' if self.oneline else '\n')).encode('utf-8', 'backslashreplace')
        if mark is None:
            self._header_key, self._header = key, header
        return header

    def _notice_stamp(self, session, when):
        tagged = self.tagged
        stamp = self.clock.stamp(session, when, message=False)
        if self.oneline:
            return '%s [#%d]' % (stamp, session.number) if tagged else stamp
        return '%s %s' % ('[#%d]' % session.number if tagged else '   ', stamp)

    def notice(self, session, when, text):
        """'    13:01:02.123456 -- STARTTLS: ...': a line of its own, between messages."""
        line = '%s -- %s' % (self._notice_stamp(session, when), escape_text(text))
        self.stream.write(line.encode('utf-8', 'backslashreplace') + b'\n')

    def session_start(self, session):
        self.notice(session, session.opened, start_text(session))

    def session_end(self, session, when):
        self.notice(session, when, end_text(session))

    def never_answered(self, session, when, request):
        self.notice(session, when, unanswered_text(request, self._sent_stamp(session, request.time)))

    def _sent_stamp(self, session, when):
        """When a request was sent, in the --time form (since-start for delta)."""
        if self.clock.advances:
            return Clock('since-start').stamp(session, when)
        return self.clock.stamp(session, when, message=False)

    def chunk(self, session, direction, when, data):
        """--raw: the chunk's bytes, control characters escaped, newlines kept."""
        if self.raw:
            self._write_pieces(self.header(session, direction, when), shown_pieces(data, keep_newlines=True))

    def message(self, session, direction, when, message, line):
        mark = self.marks.latest
        header = self.header(session, direction, when, mark)
        ending = b'\n'
        if self.oneline and mark is not None:
            ending = ('  # ' + ', '.join(mark_parts(mark, self.colour)) + '\n').encode('utf-8', 'backslashreplace')
        if line.__class__ is BigLine and line.in_pieces:         # a big message json can write
            write_pieces(self.stream, header, self.to_pieces(message), ending)
        elif message is None or not write_message(self.stream, header, message, self.to_parts, ending):
            self.stream.write(header)
            for piece in shown_text(line_bytes(line)):
                self.stream.write(piece)
            self.stream.write(ending)

    def _write_pieces(self, header, pieces):
        self.stream.write(header)
        write_line(self.stream, pieces)

    def flush(self):
        self.stream.flush()


def mark_fields(mark):
    """The fields a record gets for an answer: "reply_to" {"class", "function", "ms"}, "error", "slow"."""
    fields = {}
    if mark.reply is not None:
        request = mark.reply.request
        fields['reply_to'] = {'class': request.kind, 'function': request.function, 'ms': round(mark.reply.ms, 3)}
    if mark.error is not None:
        fields['error'] = mark.error
    if mark.slow:
        fields['slow'] = True
    return fields


class JsonLinesOutput(MarkingOutput):
    """ctispy --json-lines: one JSON record per line, for jq, scripts and --read."""

    def __init__(self, stream, loop=False, slow_ms=None):
        super().__init__(loop, slow_ms)
        self.stream = BatchedStream(stream)

    def message(self, session, direction, when, message, line):
        fields = mark_fields(self.marks.latest) if self.marks.latest is not None else None
        self.write_message(session.number, direction, when, message, line, fields)

    def write_message(self, number, direction, when, message, line, fields=None):
        """The record of a line of session `number`, with an answer's mark_fields."""
        if message is not None:
            record = message_record(number, direction, when, message, line)
            if fields:
                record.update(fields)
            if line.__class__ is BigLine and line.in_pieces:    # a big message json can write
                return write_pieces(self.stream, b'', one_line_pieces(record))
            try:
                return self._write(one_line_json(record))
            except (ValueError, RecursionError):          # nested deeper than json can write: as text
                pass
        line = line_bytes(line)
        if len(line) > SLICE:
            self._write_long_text(number, direction, when, line)
        else:
            self._write(one_line_json(message_record(number, direction, when, None, line)))

    def _write_long_text(self, number, direction, when, line):
        """The same record as for a short line, its text written a slice at a time (bounded memory)."""
        empty = one_line_json(message_record(number, direction, when, None, b''))
        write = self.stream.write
        write(json_bytes(empty[:-len('"}')]))          # ... "text": "
        for piece in json_string_pieces(line):
            write(piece)
        write(b'"}\n')

    def notice(self, session, when, text):
        self._write(one_line_json(notice_record(session.number, when, text)))

    def session_start(self, session):
        peers = session.peer_names() or (None, None)
        self._write(one_line_json(event_record(session.number, session.opened, 'start',
                                               client=peers[0], server=peers[1])))

    def session_end(self, session, when):
        first = session.ended_first
        self._write(one_line_json(event_record(session.number, when, 'end', closed_by=first,
                                               error=session.failure)))

    def never_answered(self, session, when, request):
        self._write(one_line_json(event_record(
            session.number, when, 'unanswered', request={'class': request.kind, 'function': request.function,
                                                         'commandid': request.commandid},
            sent=iso_time(request.time))))

    def _write(self, encoded):
        # A lone surrogate (a byte that was not UTF-8) comes out as the JSON escape \udcff.
        self.stream.write(json_bytes(encoded) + b'\n')

    def flush(self):
        self.stream.flush()


# How ctisave opens the files it saves into (the README's rule):
#  - a file that does not exist is created, readable and writable by its owner only (0600, whatever
#    the umask), with O_EXCL: a symbolic link planted at the path is never followed;
#  - an existing path is opened only if it is a regular file (never a symbolic link, FIFO, device,
#    socket or directory: that is refused with one line naming it), without O_TRUNC and with
#    O_NONBLOCK, so that opening cannot hang; it keeps its mode and owner;
#  - a file is emptied only once both files of a session have passed these checks, and a file the
#    tool created for a session that cannot start is removed again.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOCTTY | getattr(os, 'O_CLOEXEC', 0)
_OPEN_EXISTING = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, 'O_CLOEXEC', 0)
PRIVATE_MODE = 0o600
OUT_OF_DESCRIPTORS = frozenset((errno.EMFILE, errno.ENFILE))
SHOWN_TO_OTHERS = 0o044          # readable by the group or by anyone


def _not_regular(mode):
    """What a path that is not a regular file is, for the one line that refuses it; None for a regular file."""
    for test, kind in ((stat.S_ISREG, None),
                       (stat.S_ISLNK, 'it is a symbolic link, which ctisave does not follow: name the file itself'),
                       (stat.S_ISDIR, 'it is a directory'),
                       (stat.S_ISFIFO, 'it is a FIFO (named pipe), not a regular file'),
                       (stat.S_ISCHR, 'it is a device, not a regular file'),
                       (stat.S_ISBLK, 'it is a device, not a regular file'),
                       (stat.S_ISSOCK, 'it is a socket, not a regular file')):
        if test(mode):
            return kind
    return 'it is not a regular file'


class PrivateFile:
    """A file opened to save into, checked but not yet emptied: see the rule above."""

    def __init__(self, path):
        self.path = path
        self.fd, self.created = self._open()
        try:
            status = os.fstat(self.fd)
            refused = _not_regular(status.st_mode)     # swapped in after the check before opening
            if refused:
                raise OutputError('cannot write %s: %s' % (path, refused))
            if self.created:
                os.fchmod(self.fd, PRIVATE_MODE)       # the umask may have taken the owner's rights
            os.set_blocking(self.fd, True)
        except BaseException:
            self.abandon()
            raise
        self.identity = (status.st_dev, status.st_ino)
        self.mode = stat.S_IMODE(status.st_mode)

    def _open(self):
        """Return (descriptor, whether this created the file)."""
        for _ in range(3):                  # the path may come and go between the two ways of opening
            try:
                return os.open(self.path, _CREATE, PRIVATE_MODE), True
            except FileExistsError:
                pass
            self._refuse_unless_regular()   # before opening: a FIFO or a device is never opened
            try:
                return os.open(self.path, _OPEN_EXISTING), False
            except FileNotFoundError:
                continue
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENXIO):    # a link or a FIFO swapped in
                    self._refuse_unless_regular()
                raise
        raise OutputError('cannot write %s: it keeps being replaced' % self.path)

    def _refuse_unless_regular(self):
        try:
            refused = _not_regular(os.lstat(self.path).st_mode)
        except FileNotFoundError:
            return
        if refused:
            raise OutputError('cannot write %s: %s' % (self.path, refused))

    def shown_to_others(self):
        """Whether a file that was already there lets others read what will be saved in it."""
        return not self.created and self.mode & SHOWN_TO_OTHERS

    def empty(self):
        os.ftruncate(self.fd, 0)

    def stream(self):
        """A stream that writes to the file (which then owns the descriptor)."""
        return BatchedStream(os.fdopen(self.fd, 'wb'), self.path)

    def abandon(self):
        """Close the file without writing; remove it if this created it (and it is still the one created)."""
        try:
            if self.created and os.path.samestat(os.lstat(self.path), os.fstat(self.fd)):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self.fd)


def same_file(first, second):
    """Whether two paths name one file: through a link or a hard link, or once links are resolved
    (for a file that does not exist yet)."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return os.path.realpath(first) == os.path.realpath(second)


def numbered_file_of(path, other):
    """N if path is other's numbered file other.N (N >= 2), which ctisave --loop writes for session N, in any
    spelling (through links, or a link to one that exists); else None."""
    match = re.match(r'(.+)\.([1-9][0-9]*)\Z', path, re.DOTALL)
    if match and int(match.group(2)) >= 2 and same_file(match.group(1), other):
        return int(match.group(2))
    for numbered in numbered_files(other):
        if same_file(path, numbered):
            return int(numbered.rsplit('.', 1)[1])
    return None


def _cannot_write(path, error):
    return OutputError('cannot write %s: %s' % (path, error.strerror or error))


class SaveOutput(Output):
    """ctisave's files: each direction's messages, pretty-printed with sorted keys, in its own file.

    The first session writes CLIENTFILE and SERVERFILE; the Nth, CLIENTFILE.N and SERVERFILE.N.
    A file that cannot be opened or written ends the tool (OutputError), rather than lose messages;
    so does a file this run already saved into (SERVERFILE being CLIENTFILE.2, say).  Running out of
    file descriptors to open them is left to the relay (an OSError), which waits for some.
    warn(text) is told of a file that was already there and that others may read.  With empty_late (--read,
    where a capture may turn out to hold no session), the first session's files are checked at start but
    emptied only when that session starts: a run that saves nothing leaves them as they were.
    """

    files_per_session = 2
    needs_line = False

    def __init__(self, client_path, server_path, warn=None, empty_late=False):
        self.paths = {CLIENT: client_path, SERVER: server_path}
        self.warn = warn or (lambda text: None)
        self.empty_late = empty_late
        self._unemptied = None         # the first session's files (PrivateFile), checked, if empty_late
        self.sessions_seen = 0
        self.files = {}
        self._lock = threading.Lock()  # guards what follows: sessions open their files on their own threads
        self._next_files = None
        self._opened = {}              # session -> its files, opened on its thread, not yet started
        self._closed = False
        self._changed = set()          # the files written since the last flush
        self._saved = set()            # (device, inode) of every file this run has saved into

    def start(self):
        """Open the first session's files now, so that a bad path is known before any session."""
        if self.empty_late:
            self._unemptied = self._checked_files('')
        else:
            self._next_files = self._open_files('')

    def _open_files(self, suffix):
        """Open both files of a session; empty them only once both are known to be fit."""
        return self._emptied(self._checked_files(suffix))

    def _checked_files(self, suffix):
        """Open both files of a session (PrivateFiles), and check that they are fit; nothing is written."""
        opened = []
        path = None
        try:
            for base in self.paths.values():
                path = base + suffix
                opened.append(PrivateFile(path))
            self._refuse_saved_into(opened)
        except BaseException as error:
            for file in opened:
                file.abandon()
            if isinstance(error, OSError) and error.errno not in OUT_OF_DESCRIPTORS:
                raise _cannot_write(error.filename or path, error)
            raise
        return opened

    def _emptied(self, opened):
        """Empty a session's checked files; return their streams by direction."""
        path = None
        try:
            for file in opened:
                path = file.path
                file.empty()
        except BaseException as error:
            for file in opened:
                file.abandon()
            if isinstance(error, OSError):
                raise _cannot_write(error.filename or path, error)
            raise
        streams = [file.stream() for file in opened]
        for file in opened:
            self._saved.add(file.identity)
            if file.shown_to_others():
                self.warn('warning: %s was already there and others may read it (mode %04o): it keeps its mode; '
                          'what is saved may hold passwords' % (file.path, file.mode))
        return dict(zip(self.paths, streams))

    def _refuse_saved_into(self, opened):
        """A session's two files must be two files, and neither one that this run saved into already."""
        client, server = opened
        if client.identity == server.identity:
            raise OutputError('cannot write %s: it is the same file as %s' % (server.path, client.path))
        for file in opened:
            if file.identity in self._saved:
                raise OutputError('cannot write %s: this run already saved into it' % file.path)

    def session_opening(self, session):
        """On the session's thread: open its files, so that one out of file descriptors waits there."""
        with self._lock:
            if not self._closed:
                self._opened[session] = self._next_session_files()

    def session_started(self, session):
        with self._lock:
            files = self._opened.pop(session, None)
            if files is None:              # not opened beforehand (a replay)
                files = self._next_session_files()
        for side, file in files.items():
            self.files[session, side] = file

    def _next_session_files(self):
        """Under _lock: the files of the next session, numbered from 2 after the first."""
        if self._unemptied is not None:
            files, self._unemptied = self._emptied(self._unemptied), None
        elif self._next_files is not None:
            files, self._next_files = self._next_files, None
        else:
            files = self._open_files('.%d' % (self.sessions_seen + 1) if self.sessions_seen else '')
        self.sessions_seen += 1
        return files

    def message(self, session, direction, when, message, line):
        """The message pretty-printed, or else the line as ctispy shows it; escaped as on the display."""
        file = self.files[session, direction]
        self._changed.add(file)
        try:
            if line.__class__ is BigLine and line.in_pieces:     # a big message json can write
                write_pieces(file, b'', pretty_pieces(message))
            elif message is None or not write_message(file, b'', message, pretty_parts):
                write_line(file, shown_text(line_bytes(line)))
        except OSError as error:
            raise _cannot_write(file.name, error)

    def encrypted(self, session, direction, when):
        """Noted in the file, so that it does not stop unexplained."""
        file = self.files[session, direction]
        self._changed.add(file)
        self._do(file, file.write, b'-- STARTTLS: encrypted from here on; nothing more can be saved\n')

    def session_ended(self, session, when):
        files = [self.files.pop((session, side)) for side in self.paths if (session, side) in self.files]
        self._changed.difference_update(files)
        self._close(files)

    def flush(self):
        """Flush the files written since the last flush (not every open session's)."""
        changed, self._changed = self._changed, set()
        for file in changed:
            self._do(file, file.flush)

    def close(self):
        with self._lock:
            self._closed = True
            waiting = [self._next_files or {}] + list(self._opened.values())
            self._next_files = None
            self._opened.clear()
        files = list(self.files.values()) + [file for files in waiting for file in files.values()]
        self.files.clear()
        self._changed.clear()
        unemptied, self._unemptied = self._unemptied or [], None
        for file in unemptied:          # no session came: left as they were (removed if this run made them)
            file.abandon()
        self._close(files)

    def _close(self, files):
        """Close every file, then report the first that failed."""
        failure = None
        for file in files:
            try:
                file.close()
            except OSError as error:
                failure = failure or _cannot_write(file.name, error)
        if failure is not None:
            raise failure

    @staticmethod
    def _do(file, action, *args):
        try:
            action(*args)
        except OSError as error:
            raise _cannot_write(file.name, error)


def numbered_files(path):
    """The numbered files that ctisave writes for path's later sessions (path.2, path.3...) that exist as
    regular files, in order."""
    folder, name = os.path.split(path)
    try:
        entries = os.listdir(folder or '.')
    except OSError:
        return []
    numbered = re.compile(re.escape(name) + r'\.([1-9][0-9]*)\Z')
    numbers = sorted(int(match.group(1)) for match in map(numbered.match, entries) if match)
    return [numbered_path for numbered_path in ('%s.%d' % (path, number) for number in numbers if number >= 2)
            if _is_regular_file(numbered_path)]


def _is_regular_file(path):
    """Whether path is a regular file itself (not a link to one, which ctisave refuses to write through)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
