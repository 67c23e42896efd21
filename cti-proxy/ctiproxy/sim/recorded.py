"""A recorded session as replay sees it: what the server said first, then each request of the client with
its answers and the messages the server sent unasked after it.  I/O-free: built from recording records.

Where the records come from is one function, session_records(): a ctispy --json-lines recording
(recording.py's reader), or a tcpdump or Wireshark capture (its lines, framed by the same analysis as the tools').
"""

import collections
import json

from ..analysis import Analysis
from ..capture import MAGIC_SIZE, CaptureError, capture_format
from ..capture_source import CaptureSource, NoTraffic
from ..filters import CLIENT
from ..outputs import Output
from ..recording import Record, read_records

# A request is answered by the recorded answer to a request of the same class with the same values of these
# fields (a field absent from both is the same).  The login requests match by class alone: any credentials
# log in.  STARTTLS is never replayed from the recording: the replaying side does it live.
IDENTIFYING_FIELDS = ('function', 'listname', 'tipbxid', 'tid', 'command', 'destination', 'channelids', 'pattern',
                      'mode', 'size', 'xuserid')
LOGIN_CLASSES = ('login_id', 'login_pass', 'login_capas')
STARTTLS = 'starttls'
CAPTURE_PORT = 5003       # a capture's sessions are its TCP connections to this port (--capture-port)


class RecordingProblem(Exception):
    """A recording that cannot be replayed (one line naming it)."""


class Exchange:
    """One recorded request, the recorded answers to it, and the messages the server sent unasked after it
    (before the client's next request), each (message, time)."""

    def __init__(self, request, time):
        self.request = request
        self.time = time
        self.answers = []
        self.followers = []

    def reply_time(self):
        """Seconds from the request to its first recorded answer, or None if it had none."""
        return self.answers[0][1] - self.time if self.answers else None

    def describe(self):
        return describe_request(self.request)


def describe_request(request):
    """'class=getlist, function=listid, listname=users': a request by the fields that identify it."""
    parts = ['class=%s' % shown_value(request.get('class'))]
    parts.extend('%s=%s' % (field, shown_value(request[field])) for field in IDENTIFYING_FIELDS if field in request)
    return ', '.join(parts)


def shown_value(value):
    """A field's value in a one-line description: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def request_key(request):
    """What makes two requests the same request for replay (see IDENTIFYING_FIELDS)."""
    kind = request.get('class')
    if kind in LOGIN_CLASSES:
        return (json.dumps(kind),)
    return (json.dumps(kind, sort_keys=True),) + tuple(
        (field, json.dumps(request[field], sort_keys=True)) for field in IDENTIFYING_FIELDS if field in request)


def json_key(value):
    """A commandid or replyid as a key (1 and 1.0 are one; a list is hashable)."""
    return json.dumps(value, sort_keys=True)


class RecordedSession:
    """One session of a recording: opening (the server's lines before the first request, as (line, message or
    None, time)), exchanges (in the client's order) and whether the server offered STARTTLS."""

    def __init__(self, name, number):
        self.name = name
        self.number = number
        self.opening = []
        self.exchanges = []
        self.offered_starttls = False
        self._waiting = {}          # json_key(commandid) -> the exchange of that request

    def take(self, direction, line, time):
        """Take one record of this session (line: its bytes)."""
        message = decoded(line)
        kind = message.get('class') if message is not None else None
        if direction == CLIENT:
            if message is not None and kind != STARTTLS:
                self._take_request(message, time)
        elif kind == STARTTLS:
            self.offered_starttls = self.offered_starttls or not self.exchanges and 'starttls' not in message
        else:
            self._take_server_line(line, message, time)

    def _take_request(self, request, time):
        exchange = Exchange(request, time)
        self.exchanges.append(exchange)
        if 'commandid' in request:
            self._waiting[json_key(request['commandid'])] = exchange

    def _take_server_line(self, line, message, time):
        answered = None
        if message is not None and 'replyid' in message:
            answered = self._waiting.get(json_key(message['replyid']))
        if answered is not None:
            answered.answers.append((message, time))
        elif not self.exchanges:
            self.opening.append((line, message, time))
        elif message is not None:
            self.exchanges[-1].followers.append((message, time))

    def check(self):
        """A RecordingProblem if there is nothing to replay: no request, or no answer to any."""
        where = '%s, session %d' % (self.name, self.number)
        if not self.exchanges:
            raise RecordingProblem('%s: no message from the client in it, nothing to replay' % where)
        if not any(exchange.answers for exchange in self.exchanges):
            raise RecordingProblem('%s: no answer from the server in it (no message with the replyid of a request)'
                                   % where)

    def awaited_by(self, index):
        """The indexes of the earlier requests whose first answer the recorded client had when it sent request
        index: what a replay waits for before sending it."""
        sent_at = self.exchanges[index].time
        return [earlier for earlier, exchange in enumerate(self.exchanges[:index])
                if exchange.answers and exchange.answers[0][1] <= sent_at]

    def gap_before(self, index):
        """Seconds the recorded client took to send request index (not the first) once it had what it awaited:
        from the later of the previous request and the awaited answers."""
        ready = [self.exchanges[index - 1].time]
        ready.extend(self.exchanges[earlier].answers[0][1] for earlier in self.awaited_by(index))
        return max(0.0, self.exchanges[index].time - max(ready))

    def answers_by_request(self):
        """{request_key: [exchanges that were answered, oldest first]}."""
        found = collections.OrderedDict()
        for exchange in self.exchanges:
            if exchange.answers:
                found.setdefault(request_key(exchange.request), []).append(exchange)
        return found


def decoded(line):
    """The JSON object a line holds, or None."""
    try:
        message = json.loads(line.decode('utf-8', 'surrogateescape'))
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def session_records(path, capture_port=CAPTURE_PORT):
    """The records of the recording or capture at path (its sessions to capture_port), as recording.read_records
    yields them."""
    with open(path, 'rb') as stream:
        head = stream.read(MAGIC_SIZE)
        if capture_format(head) is not None:
            return captured_records(stream, head, path, capture_port)
    return recorded_records(path)


def recorded_records(path):
    """The records of a ctispy --json-lines recording."""
    with open(path, encoding='utf-8', errors='replace') as stream:
        yield from read_records(stream, path)


class CapturedLines(Output):
    """Keeps the lines of a capture's sessions as records."""

    def __init__(self):
        self.records = []

    def message(self, session, direction, when, message, line):
        self.records.append(Record(session.number, direction, when, bytes(line), None, len(self.records) + 1))


def captured_records(stream, head, path, port=CAPTURE_PORT):
    """The lines of the TCP sessions to port in a capture, as records (RecordingProblem if it has none)."""
    lines = CapturedLines()
    try:
        CaptureSource(Analysis(lines), port, lambda text: None, port_option='--capture-port').run(stream, head)
    except (CaptureError, NoTraffic) as error:
        raise RecordingProblem('%s: %s' % (path, error))
    return lines.records


def _numbers_text(numbers):
    """'session 1', 'sessions 1, 2, 3', or the first ten and how many in all."""
    if len(numbers) == 1:
        return 'session %d' % numbers[0]
    shown = ', '.join(str(number) for number in numbers[:10])
    if len(numbers) > 10:
        shown += ', ... (%d sessions)' % len(numbers)
    return 'sessions ' + shown


def load_session(path, number=None, records=None, capture_port=CAPTURE_PORT):
    """Session number (default: the first) of the recording at path (of a capture: its sessions to capture_port),
    checked; RecordingProblem (or recording.RecordingError, OSError) for one that cannot be replayed."""
    held = collections.OrderedDict()            # every session's number; only the chosen one's records are kept
    session = None
    for record in records(path) if records else session_records(path, capture_port):
        if record.line is None:         # a notice or an event (a session's start or end, a request never answered)
            continue
        held[record.session] = True
        if number is None:
            number = record.session
        if record.session == number:
            if session is None:
                session = RecordedSession(path, number)
            session.take(record.direction, record.line, record.time)
    if not held:
        raise RecordingProblem('%s: no session in it' % path)
    if session is None:
        raise RecordingProblem('%s: no session %d in it (it holds %s)' % (path, number, _numbers_text(list(held))))
    session.check()
    return session
