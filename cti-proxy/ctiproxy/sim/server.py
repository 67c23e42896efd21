"""The simulated CTI server: the banner, then an answer to each request line, on a thread per client."""

import json
import random
import socketserver
import string
import threading
import time

from ..relay import ListeningServer, Log, describe_error, peer_name
from .pbx import DIRECTORY_HEADERS, PRESENCE_CYCLE, FakePBX, capabilities, directory_search
from .protocol import (BANNER, DEFAULT_USERS, DIRECTORY_DELAY, IPBX_ID, LISTNAMES, MAX_REQUEST_DEPTH, XIVO_VERSION,
                       encode, nested_deeper, strict_json, whole_number)
from .tls import LineConnection


class SimulatedSession(socketserver.StreamRequestHandler):
    """One client of the simulated server: the banner, then an answer to each request line."""

    disable_nagle_algorithm = True     # an answer and the events after it go out at once

    HANDLERS = {'login_id': 'login_id', 'login_pass': 'login_pass', 'login_capas': 'login_capas',
                'getlist': 'getlist', 'ipbxcommand': 'ipbxcommand', 'history': 'history',
                'directory': 'directory', 'keepalive': 'keepalive', 'starttls': 'starttls'}

    def setup(self):
        super().setup()
        self.pbx = self.server.pbx
        self.log = self.server.log
        self.number = self.server.new_session_number()
        self.userid = '1'
        self.overrides = {}            # (listname, tid) -> status fields changed in this session
        self.events = 0                # presence changes sent so far
        self.calls = 0
        self.call = None               # (caller phone, callee phone or None, channel)
        self.stopped = threading.Event()
        self._lock = threading.RLock()
        if self.server.tls_context is not None:      # lines over a connection that can start TLS
            self.rfile = self.wfile = LineConnection(self.request)

    def handle(self):
        self.log.event('session #%d: client %s connected' % (self.number, peer_name(self.client_address)))
        try:
            self.start_tls()
            self.greet()
            for line in self.rfile:
                if line.endswith(b'\n') and line.strip():
                    self.handle_line(line)
        except OSError as error:
            self.log.event('session #%d: connection failed: %s' % (self.number, describe_error(error)))
        finally:
            self.stopped.set()
            self.log.event('session #%d: closed' % self.number)

    def greet(self):
        """What the server says first: its banner, and the STARTTLS offer with --starttls."""
        self.wfile.write((BANNER + '\n').encode('ascii'))
        self.offer_starttls()

    def handle_line(self, line):
        """Answer one request line."""
        try:
            request = json.loads(line.decode('utf-8'))
        except (ValueError, RecursionError):
            request = None
        if not isinstance(request, dict):
            self.send({'class': 'error', 'error_string': 'not a JSON object'})
            return
        if nested_deeper(request, MAX_REQUEST_DEPTH):      # not echoed: its commandid may be the deep part
            self.send({'class': 'error', 'error_string': 'nested too deep'})
            return
        if not (strict_json(request.get('class')) and strict_json(request.get('commandid'))):
            self.send({'class': 'error', 'error_string': 'class or commandid is not finite'})   # not echoed
            return
        self.respond(request)

    def respond(self, request):
        """Answer one request (a JSON object whose class and commandid are finite)."""
        kind = request.get('class')
        handler = self.HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            self.error(request, 'unknown class')
        else:
            getattr(self, handler)(request)

    # sending

    def send(self, message):
        """Send one message, stamped with timenow; safe from any thread."""
        message['timenow'] = round(time.time(), 3)
        with self._lock:
            self.wfile.write(encode(message))

    def answer(self, request, **fields):
        """Send the answer to request: its class, fields, and replyid if the request had a commandid."""
        message = {'class': request.get('class')}
        message.update(fields)
        if 'commandid' in request:
            message['replyid'] = request['commandid']
        self.send(message)

    def error(self, request, text):
        """Answer request with an error_string, as the server does for what it cannot do."""
        self.answer(request, error_string=text)

    def status(self, listname, tid):
        """An item's status as this session sees it."""
        current = self.pbx.status(listname, tid)
        with self._lock:
            current.update(self.overrides.get((listname, tid), {}))
        return current

    def push(self, function, listname, tid):
        """Send an unsolicited getlist updateconfig or updatestatus for one item."""
        key, value = (('config', self.pbx.config(listname, tid)) if function == 'updateconfig'
                      else ('status', self.status(listname, tid)))
        self.send({'class': 'getlist', 'function': function, 'listname': listname, 'tipbxid': IPBX_ID,
                   'tid': tid, key: value})

    def change_status(self, listname, tid, **fields):
        """Change an item's status in this session and tell the client."""
        with self._lock:
            self.overrides.setdefault((listname, tid), {}).update(fields)
            self.push('updatestatus', listname, tid)

    def presence_change(self):
        """The next presence change: another user (in turn) moves to the next state (in turn)."""
        with self._lock:
            self.events += 1
            users = self.pbx.ids('users')
            tid = users[(int(self.userid) - 1 + self.events) % len(users)]
            self.change_status('users', tid, availstate=PRESENCE_CYCLE[(self.events - 1) % len(PRESENCE_CYCLE)])

    def tick(self, interval):
        """Send a presence change every interval seconds until the session ends."""
        while not self.stopped.wait(interval):
            try:
                self.presence_change()
            except (OSError, ValueError):
                return

    # the requests

    def login_id(self, request):
        """Who logs in: the user, and a session id for the password hash."""
        self.userid = self.pbx.user_for_login(str(request.get('userlogin', '')))
        rng = random.Random('%d-%s' % (self.number, self.userid))
        sessionid = ''.join(rng.choice(string.ascii_letters + string.digits) for _ in range(10))
        self.answer(request, sessionid=sessionid, xivoversion=XIVO_VERSION)

    def login_pass(self, request):
        """Any password is right: the user gets capability profile 1."""
        self.answer(request, capalist=[1])

    def login_capas(self, request):
        """The capabilities, then the user's own config and status, unasked."""
        state = str(request.get('state') or 'available')
        self.overrides[('users', self.userid)] = {'availstate': state, 'connection': 'yes'}
        self.answer(request, userid=self.userid, ipbxid=IPBX_ID, appliname='Client', presence=state,
                    capas=capabilities(),
                    capaxlets=[['identity', 'grid'], ['dial', 'grid'], ['search', 'tab'], ['history', 'tab']])
        self.push('updateconfig', 'users', self.userid)
        self.push('updatestatus', 'users', self.userid)
        interval = self.server.event_interval
        if interval:
            threading.Thread(target=self.tick, args=(interval,), name='events-%d' % self.number,
                             daemon=True).start()

    def getlist(self, request):
        """listid, updateconfig or updatestatus of users, phones, queues or agents."""
        function, listname = request.get('function'), request.get('listname')
        if listname not in LISTNAMES:
            return self.error(request, 'unknown listname')
        ids = self.pbx.ids(listname)
        common = {'function': function, 'listname': listname, 'tipbxid': IPBX_ID}
        if function == 'listid':
            return self.answer(request, list=ids, **common)
        if function not in ('updateconfig', 'updatestatus'):
            return self.error(request, 'unknown function')
        tid = str(request.get('tid'))
        if tid not in ids:
            return self.error(request, 'unknown id')
        if function == 'updateconfig':
            return self.answer(request, tid=tid, config=self.pbx.config(listname, tid), **common)
        return self.answer(request, tid=tid, status=self.status(listname, tid), **common)

    def ipbxcommand(self, request):
        """dial (the phones ring) and hangup (the phones are free again)."""
        command = request.get('command')
        if command == 'dial':
            self.hang_up()
            number = str(request.get('destination', '')).rpartition('/')[2].rpartition(':')[2]
            self.calls += 1
            caller = self.userid if self.userid in self.pbx.ids('phones') else '1'
            self.call = (caller, self.pbx.phone_for_number(number), 'SIP/sim%s-%08x' % (caller, self.calls))
            self.answer(request, command='dial', ipbxreply='ok')
            self.change_status('phones', caller, hintstatus='1', channels=[self.call[2]])
            if self.call[1] is not None and self.call[1] != caller:
                self.change_status('phones', self.call[1], hintstatus='8', channels=[])
        elif command == 'hangup':
            self.answer(request, command='hangup', ipbxreply='ok')
            self.hang_up()
        else:
            self.error(request, 'unknown command')

    def hang_up(self):
        """End this session's call, if any, and tell the client the phones are free."""
        if self.call is not None:
            caller, callee, _ = self.call
            self.call = None
            for phone in sorted({caller, callee} - {None}):
                self.change_status('phones', phone, hintstatus='0', channels=[])

    def history(self, request):
        """The last calls of the user."""
        try:
            size = min(max(whole_number(request.get('size', 8)), 0), 100)
            mode = whole_number(request.get('mode', 0))
        except (TypeError, ValueError, OverflowError):      # OverflowError: 1e400 reads as infinity
            return self.error(request, 'bad mode or size')
        self.answer(request, mode=mode, history=self.pbx.history(self.userid, mode, size))

    def directory(self, request):
        """The contacts whose name contains the pattern, with non-ASCII names, after DIRECTORY_DELAY: the slow
        answer of a session."""
        time.sleep(DIRECTORY_DELAY)
        results = directory_search(str(request.get('pattern', '')))
        self.answer(request, headers=DIRECTORY_HEADERS, resultlist=results, status='ok')

    def start_tls(self):
        """ctisim server --tls: TLS from the first byte."""
        if self.server.tls_context is not None and not self.server.starttls:
            self.rfile.start_tls(self.server.tls_context, server_side=True)
            self.log.event('session #%d: TLS (%s)' % (self.number, self.rfile.describe()))

    def offer_starttls(self):
        """ctisim server --starttls: the offer, after the banner."""
        if self.server.starttls:
            self.send({'class': 'starttls'})

    def starttls(self, request):
        """The client's answer to the STARTTLS offer: confirm, then TLS (status true), or stay in clear text."""
        if not self.server.starttls or self.rfile.encrypted:
            return self.error(request, 'STARTTLS was not offered')
        accepted = request.get('status') is True
        with self._lock:               # nothing else is sent between the confirmation and the handshake
            self.send({'class': 'starttls', 'starttls': accepted})
            if accepted:
                self.rfile.start_tls(self.server.tls_context, server_side=True)
        self.log.event('session #%d: STARTTLS %s' % (self.number, self.rfile.describe() if accepted else 'declined'))

    def keepalive(self, request):
        """An empty answer, then a presence change: something happens now and then."""
        self.answer(request)
        self.presence_change()


class SimulatorServer(ListeningServer):
    """The simulated CTI server: a SimulatedSession for each client, each on its own thread."""

    session_class = SimulatedSession

    def __init__(self, listen, users=DEFAULT_USERS, event_interval=None, log=None, tls_context=None, starttls=False):
        self.pbx = FakePBX(users)
        self.tls_context = tls_context     # with it: TLS from the first byte, or STARTTLS offered
        self.starttls = starttls
        self.event_interval = event_interval
        self.log = log or Log('ctisim')
        self._numbers = 0
        self._lock = threading.Lock()
        super().__init__(listen, self.session_class)

    def new_session_number(self):
        """1 for the first client, 2 for the next..."""
        with self._lock:
            self._numbers += 1
            return self._numbers
