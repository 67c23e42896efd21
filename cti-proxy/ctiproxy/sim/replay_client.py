"""`ctisim client HOST --replay FILE`: the recorded client's requests, played to a live server.

Each request goes out as recorded (commandid kept) once the answers that the recorded client had when
it sent it have arrived (or --timeout passed), after the recorded gap scaled by --speed.  login_pass
carries the password the way the recording did: a plain "password" as recorded (or --password), a
"hashedpassword" computed with the new session id (SHA-1 hex of "sessionid:password").
"""

import hashlib
import json
import socket
import time

from ..escaping import escape_text
from .client import SimulatedClient
from .protocol import LONGEST_WAIT, TIMEOUT, wire_line
from .recorded import decoded, describe_request, json_key

MARK_THRESHOLD = 0.1        # seconds: a reply slower or faster than recorded by more than this is marked


class PasswordNeeded(Exception):
    """The recording logs in with a hashed password, and none was given (one line for the user)."""


def hashed_password(sessionid, password):
    """login_pass's hashedpassword (protocol 1.x): the SHA-1 hex digest of 'sessionid:password'."""
    return hashlib.sha1(('%s:%s' % (sessionid, password)).encode('utf-8')).hexdigest()


def login_pass_request(recorded):
    """The recorded login_pass request, or None."""
    for exchange in recorded.exchanges:
        if exchange.request.get('class') == 'login_pass':
            return exchange.request
    return None


def needs_password(recorded):
    """Whether replaying the recording needs the password: its login_pass carries a hashedpassword."""
    request = login_pass_request(recorded)
    return request is not None and 'hashedpassword' in request


class Outcome:
    """What became of one replayed request."""

    def __init__(self, exchange):
        self.exchange = exchange
        self.sent = None            # monotonic time it was sent
        self.answered = None        # monotonic time its first answer came
        self.error = None           # the answer's error_string, if any

    def reply_time(self):
        return self.answered - self.sent if self.answered is not None else None


class ReplayClient(SimulatedClient):
    """Plays a recorded session's requests to a server; run() returns the Outcomes, closed() says whether the
    server ended the connection before the replay did."""

    def __init__(self, recorded, host, port, password=None, speed=1.0, timeout=TIMEOUT, tls_context=None,
                 starttls=False):
        super().__init__(host, port, password=password, timeout=timeout, tls_context=tls_context, starttls=starttls)
        self.recorded = recorded
        self.speed = speed
        self.outcomes = [Outcome(exchange) for exchange in recorded.exchanges]
        self.waiting = {}           # json_key(commandid) -> Outcome not answered yet
        self.sessionid = None
        self.server_closed = False
        if needs_password(recorded) and password is None:
            raise PasswordNeeded('the recording logs in with a hashedpassword: give the password with --password')

    def play(self):
        for index, outcome in enumerate(self.outcomes):
            if index and not self.wait_turn(index):
                return self.outcomes
            self.send(outcome)
        if self.await_answers([outcome for outcome in self.outcomes if outcome.exchange.answers]):
            self.finish()
        return self.outcomes

    def wait_turn(self, index):
        """Wait until request index is due: the answers it waited for in the recording have come (or the timeout
        passed), then its recorded gap, scaled; False if the server closed first."""
        if not self.await_answers([self.outcomes[earlier] for earlier in self.recorded.awaited_by(index)]):
            return False
        ready = max(self.outcomes[index - 1].sent, time.monotonic())
        gap = self.recorded.gap_before(index) * self.speed
        return self.read_until(ready + gap, lambda: False)

    def send(self, outcome):
        request = self.prepared(outcome.exchange.request)
        if 'commandid' in request:
            self.waiting[json_key(request['commandid'])] = outcome
        outcome.sent = time.monotonic()
        self.stream.write(wire_line(request))

    def prepared(self, request):
        """The request to send: as recorded, but login_pass with this password and session id."""
        if request.get('class') != 'login_pass' or self.password is None:
            return request
        request = dict(request)
        if 'hashedpassword' in request:
            request['hashedpassword'] = hashed_password(self.sessionid, self.password)
        else:
            request['password'] = self.password
        return request

    def await_answers(self, outcomes):
        """Read until each of outcomes is answered, or the timeout; False if the server closed first."""
        return self.read_until(time.monotonic() + self.timeout,
                               lambda: all(outcome.answered is not None for outcome in outcomes))

    def read_until(self, deadline, done):
        """Read the server's messages until done() or the deadline; False if the server closed first."""
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            self.sock.settimeout(min(remaining, LONGEST_WAIT))
            try:
                line = self.stream.readline()
            except socket.timeout:
                continue
            if not line.endswith(b'\n'):
                self.server_closed = True
                return False
            self.take(line)
        return True

    def take(self, line):
        """One line from the server: an answer to a waiting request, or a message unasked."""
        received = time.monotonic()
        message = decoded(line)
        outcome = None
        if message is not None and 'replyid' in message:
            outcome = self.waiting.pop(json_key(message['replyid']), None)
        if outcome is None:
            self.unsolicited.append(message)
            return
        outcome.answered = received
        if 'error_string' in message:
            outcome.error = message['error_string']
        if outcome.exchange.request.get('class') == 'login_id':
            self.sessionid = message.get('sessionid')

    def finish(self):
        """End as the recorded client did: stop sending, read what is left until the server closes."""
        self.stream.shutdown_write()
        self.read_until(time.monotonic() + self.timeout, lambda: False)
        self.server_closed = False          # its end, after the replay: as it should be


def milliseconds(seconds):
    return '-' if seconds is None else '%d ms' % round(seconds * 1000)


def summary(outcomes, name, number, where):
    """The replay's summary, as lines: the counts, then each request's reply time next to the recorded one."""
    sent = [outcome for outcome in outcomes if outcome.sent is not None]
    answered = [outcome for outcome in sent if outcome.answered is not None]
    errors = [outcome for outcome in answered if outcome.error is not None]
    lines = ['replayed session %d of %s to %s: %d of %d requests sent, %d answered, %d not answered, '
             '%d answered with an error' % (number, name, where, len(sent), len(outcomes), len(answered),
                                            len(sent) - len(answered), len(errors)),
             'reply times (marked when they differ by more than %d ms):' % round(MARK_THRESHOLD * 1000),
             '%9s %9s  %s' % ('recorded', 'now', 'request')]
    for outcome in sent:
        request = outcome.exchange.request
        said = mark(outcome)
        lines.append('%9s %9s  #%s %s%s' % (
            milliseconds(outcome.exchange.reply_time()), milliseconds(outcome.reply_time()),
            json.dumps(request.get('commandid')), describe_request(request), '  <- ' + said if said else ''))
    return [escape_text(line).rstrip() for line in lines]


def mark(outcome):
    """What to say of one request beside its times."""
    now, recorded = outcome.reply_time(), outcome.exchange.reply_time()
    if now is None:
        return 'not answered'
    words = []
    if outcome.error is not None:
        words.append('error: %s' % outcome.error)
    if recorded is not None and now - recorded > MARK_THRESHOLD:
        words.append('slower')
    elif recorded is not None and recorded - now > MARK_THRESHOLD:
        words.append('faster')
    return ', '.join(words)
