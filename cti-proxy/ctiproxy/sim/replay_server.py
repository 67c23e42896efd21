"""`ctisim server --replay FILE`: a recorded XiVO, playing the recorded server to any client.

Each client gets the recorded opening (banner; the STARTTLS offer is made live), then for each request
the recorded answer to the same request (recorded.request_key), the oldest unused one first, then the
latest again; replyid becomes the request's commandid and timenow now.  The messages the server sent
unasked after that request follow, each after its recorded gap.  Gaps (the answer's recorded reply
time too) are multiplied by the speed factor: 0 sends at once.
"""

import threading
import time

from .recorded import describe_request, request_key
from .protocol import LONGEST_WAIT, wire_line
from .server import SimulatedSession, SimulatorServer

UNKNOWN_REQUEST = 'unknown request'


def replayed(message, request=None):
    """A recorded message to send now: timenow now, and replyid the request's commandid (none if it has none)."""
    message = dict(message)
    if 'timenow' in message:
        message['timenow'] = round(time.time(), 3)
    if request is not None:
        message.pop('replyid', None)
        if 'commandid' in request:
            message['replyid'] = request['commandid']
    return message


class ReplayCursor:
    """Which recorded answer a session gives next to each request: the oldest unused one, then the latest."""

    def __init__(self, answers_by_request):
        self.answers = answers_by_request
        self.used = {}

    def next_for(self, request):
        """The recorded exchange that answers request, or None."""
        key = request_key(request)
        exchanges = self.answers.get(key)
        if not exchanges:
            return None
        count = self.used.get(key, 0)
        self.used[key] = count + 1
        return exchanges[min(count, len(exchanges) - 1)]


class ReplaySession(SimulatedSession):
    """One client of the replaying server."""

    def setup(self):
        super().setup()
        self.recorded = self.server.recorded
        self.cursor = ReplayCursor(self.server.answers)

    def greet(self):
        for line, _, _ in self.recorded.opening:
            self.wfile.write(line + b'\n')
        self.offer_starttls()

    def respond(self, request):
        if request.get('class') == 'starttls':
            return self.starttls(request)
        exchange = self.cursor.next_for(request)
        if exchange is None:
            self.server.missing(request)
            return self.error(request, UNKNOWN_REQUEST)
        previous = exchange.time
        for message, when in exchange.answers:
            previous = self.after_gap(previous, when)
            self.write_now(replayed(message, request))
        for message, when in exchange.followers:
            previous = self.after_gap(previous, when)
            self.write_now(replayed(message))

    def after_gap(self, previous, when):
        """Wait the recorded gap from previous to when, scaled; return when."""
        gap = (when - previous) * self.server.speed
        deadline = time.monotonic() + gap
        while gap > 0 and not self.stopped.wait(min(gap, LONGEST_WAIT)):
            gap = deadline - time.monotonic()
        return max(when, previous)

    def write_now(self, message):
        with self._lock:
            self.wfile.write(wire_line(message))


class ReplayServer(SimulatorServer):
    """The replaying server: a ReplaySession for each client."""

    session_class = ReplaySession

    def __init__(self, listen, recorded, speed=1.0, log=None, tls_context=None, starttls=False):
        self.recorded = recorded
        self.answers = recorded.answers_by_request()
        self.speed = speed
        self._missing_lock = threading.Lock()
        super().__init__(listen, log=log, tls_context=tls_context, starttls=starttls)

    def missing(self, request):
        """Say on stderr that the recording has no answer to request."""
        with self._missing_lock:
            self.log.error('not in the recording: %s' % describe_request(request))
