"""ctisim: a simulated XiVO CTI server and client, to try the tools without a XiVO.

The server speaks a small subset of the CTI protocol (one JSON object per line, after a
plain-text banner): the login sequence, getlist for users, phones, queues and agents,
ipbxcommand dial and hangup, history, directory and keepalive.  Answers carry the request's
commandid as replyid; every server message carries timenow.  The client plays one short
session against a server (or a proxy in front of one); `ctisim demo` runs both with ctispy
in between.
"""

import argparse
import datetime
import hashlib
import json
import queue
import random
import re
import signal
import socket
import socketserver
import string
import subprocess
import sys
import threading
import time
import unicodedata

from . import __version__
from .cli import HelpFormatter, listen_port, port_number
from .launch import release_stop_signals, tool_command
from .relay import ListenAddress, ListeningServer, Log, describe_error, peer_name
from .simtls import CertificateError, LineConnection, certificate_for_run, client_context, server_context

BANNER = 'XiVO CTI Server Version 1.2.3 (simulated)'
XIVO_VERSION = '1.2'
IPBX_ID = 'xivo'
LISTNAMES = ('users', 'phones', 'queues', 'agents')
DEFAULT_PORT = 5003
DEFAULT_TLS_PORT = 5013
DEFAULT_PROXY_PORT = 50030
DEFAULT_USERS = 5
DEFAULT_EVENT_INTERVAL = 10.0
TIMEOUT = 10.0                 # seconds the client and the demo wait for any one thing

PEOPLE = [('Alice', 'Martin', 'alice'), ('H\u00e9l\u00e8ne', 'Dupr\u00e9', 'helene'),
          ('J\u00fcrgen', 'Gro\u00df', 'jurgen'), ('Zo\u00eb', '\U0001f600', 'zoe'), ('Bob', 'Smith', 'bob'),
          ('\u0141ukasz', '\u017b\u00f3\u0142w', 'lukasz'), ('Ana', 'N\u00fa\u00f1ez', 'ana'),
          ('S\u00f8ren', '\u00d8deg\u00e5rd', 'soren')]
QUEUES = [('support', 'Support'), ('sales', 'Sales'), ('accueil', 'Accueil \u2014 R\u00e9ception')]
CONTACTS = [('H\u00e9l\u00e8ne Dupr\u00e9', '1002', 'Simulated Inc.', 'helene@example.com'),
            ('J\u00fcrgen Gro\u00df', '+49 30 1234567', 'Gro\u00df & S\u00f6hne', 'jurgen@example.de'),
            ('Zo\u00eb \U0001f600', '+33 6 12 34 56 78', '', 'zoe@example.fr'),
            ('Fran\u00e7ois Lef\u00e8vre', '+33 1 23 45 67 89', 'Caf\u00e9 de la Gare', ''),
            ('\u674e\u5a1c (Li Na)', '+86 10 1234 5678', '\u5317\u4eac', 'lina@example.cn'),
            ('Bob Smith', '1005', 'Simulated Inc.', 'bob@example.com')]
DIRECTORY_HEADERS = ['Name', 'Number', 'Company', 'E-mail']
USER_STATUSES = {
    'available': ('Available', '#08FD20'), 'away': ('Away', '#FDE50A'),
    'outtolunch': ('Out to lunch', '#001AFF'), 'donotdisturb': ('Do not disturb', '#FF032D'),
    'berightback': ('Be right back', '#FFB545'), 'disconnected': ('Disconnected', '#202020')}
PHONE_STATUSES = {'-2': ('Does not exist', '#030303'), '-1': ('Deactivated', '#000000'),
                  '0': ('Available', '#0DFF25'), '1': ('On the phone', '#FF032D'), '2': ('Busy', '#FF0008'),
                  '4': ('Unavailable', '#FFFFFF'), '8': ('Ringing', '#1B0AFF'),
                  '9': ('On the phone and ringing', '#FF0526'), '16': ('On hold', '#F7FF05')}
PRESENCE_CYCLE = ['away', 'donotdisturb', 'outtolunch', 'berightback', 'available']
SERVICES = ['enablednd', 'fwdunc', 'fwdbusy', 'fwdrna']


def encode(message):
    """One message on the wire, as a Python CTI server writes it: ASCII JSON and a newline."""
    return (json.dumps(message, allow_nan=False) + '\n').encode('ascii')


def strict_json(value):
    """Whether value can be written as JSON proper: no NaN or infinity anywhere in it."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def whole_number(value):
    """A request's number (5, 5.0 or "5") as an int; ValueError for a bool (true is not a number), as for
    "x"; OverflowError for infinity."""
    if value.__class__ is bool:
        raise ValueError(value)
    return int(value)


MAX_REQUEST_DEPTH = 32      # a request nested deeper is answered with an error, unread


def nested_deeper(value, limit):
    """Whether a decoded JSON value has lists or objects nested more than limit deep (found without
    recursion: the handlers' str() and json.dumps of a value recurse, and a client may nest ~1000 deep)."""
    waiting = [(value, 0)]
    while waiting:
        value, depth = waiting.pop()
        if value.__class__ in (dict, list):
            if depth == limit:
                return True
            waiting.extend((item, depth + 1) for item in (value.values() if value.__class__ is dict else value))
    return False


def folded(text):
    """Text for matching a directory search: case and accents ignored ('zoe' finds 'Zo\u00eb')."""
    decomposed = unicodedata.normalize('NFKD', text.casefold())
    return ''.join(char for char in decomposed if not unicodedata.combining(char))


# -- the simulated telephony system --

class FakePBX:
    """The simulated system's configuration: users, phones, agents (one each per user) and queues."""

    def __init__(self, users=DEFAULT_USERS):
        self.size = {'users': users, 'phones': users, 'agents': users, 'queues': (users + 3) // 4}

    def ids(self, listname):
        """The ids of a list, as strings, as the server sends them."""
        return [str(number) for number in range(1, self.size[listname] + 1)]

    def person(self, tid):
        """(first name, last name, login) of user, phone owner or agent number tid."""
        index = int(tid) - 1
        first, last, login = PEOPLE[index % len(PEOPLE)]
        round_ = index // len(PEOPLE)
        if round_:
            return first, '%s %d' % (last, round_ + 1), '%s%d' % (login, round_ + 1)
        return first, last, login

    def user_for_login(self, login):
        """The id of the user with this login; user 1 for any other login (the simulator is lenient)."""
        for tid in self.ids('users'):
            if self.person(tid)[2] == login:
                return tid
        return '1'

    def fullname(self, tid):
        """'First Last' of user tid."""
        first, last, _ = self.person(tid)
        return '%s %s' % (first, last)

    def phone_for_number(self, number):
        """The id of the phone with this number, or None."""
        for tid in self.ids('phones'):
            if str(1000 + int(tid)) == number:
                return tid
        return None

    def config(self, listname, tid):
        """What getlist updateconfig says about one item."""
        number = int(tid)
        if listname == 'users':
            first, last, login = self.person(tid)
            return {'firstname': first, 'lastname': last, 'fullname': self.fullname(tid), 'loginclient': login,
                    'mobilephonenumber': '+33 6 00 00 %02d %02d' % (number // 100 % 100, number % 100),
                    'enablednd': False, 'enableunc': False, 'destunc': '', 'enablebusy': False, 'destbusy': '',
                    'enablerna': False, 'destrna': '', 'linelist': ['%s/%s' % (IPBX_ID, tid)], 'agentid': tid}
        if listname == 'phones':
            return {'number': str(1000 + number), 'context': 'default', 'protocol': 'sip',
                    'identity': 'SIP/sim%d' % number, 'iduserfeatures': number}
        if listname == 'agents':
            first, last, _ = self.person(tid)
            return {'firstname': first, 'lastname': last, 'number': str(2000 + number), 'context': 'default'}
        name, displayname = QUEUES[(number - 1) % len(QUEUES)]
        round_ = (number - 1) // len(QUEUES)
        if round_:
            name, displayname = '%s%d' % (name, round_ + 1), '%s %d' % (displayname, round_ + 1)
        return {'name': name, 'displayname': displayname, 'number': str(3000 + number), 'context': 'default'}

    def status(self, listname, tid):
        """What getlist updatestatus says about one item before anything happened."""
        number = int(tid)
        if listname == 'users':
            return {'availstate': PRESENCE_CYCLE[number % len(PRESENCE_CYCLE)], 'connection': 'no'}
        if listname == 'phones':
            return {'hintstatus': '0', 'channels': []}
        if listname == 'agents':
            queue_ids = self.ids('queues')
            return {'availability': 'available' if number % 2 else 'logged_out',
                    'queues': [queue_ids[(number - 1) % len(queue_ids)]]}
        members = [agent for agent in self.ids('agents') if (int(agent) - 1) % self.size['queues'] == number - 1]
        return {'agentmembers': members, 'phonemembers': []}

    def history(self, userid, mode, size):
        """A deterministic call history of size entries for user userid."""
        users = self.ids('users')
        base = datetime.datetime.now().replace(minute=0, second=0, microsecond=0)
        entries = []
        for step in range(size):
            other = users[(int(userid) + step) % len(users)]
            entries.append({'calldate': (base - datetime.timedelta(hours=step)).strftime('%Y-%m-%dT%H:%M:%S'),
                            'duration': 30 + 17 * step, 'fullname': self.fullname(other),
                            'extension': str(1000 + int(other)), 'mode': mode})
        return entries


def capabilities():
    """The capas of the login_capas answer: what the user may do and the statuses it will see."""
    return {'regcommands': {}, 'ipbxcommands': {}, 'preferences': False,
            'userstatus': {name: {'longname': longname, 'color': colour, 'allowed': list(USER_STATUSES),
                                  'actions': {'enablednd': 'true' if name == 'donotdisturb' else 'false'}}
                           for name, (longname, colour) in USER_STATUSES.items()},
            'phonestatus': {code: {'longname': longname, 'color': colour}
                            for code, (longname, colour) in PHONE_STATUSES.items()},
            'services': list(SERVICES)}


def directory_search(pattern):
    """The directory's lines (fields joined by ';') whose name contains pattern, case and accents ignored."""
    wanted = folded(pattern)
    return [';'.join(contact) for contact in CONTACTS if wanted in folded(contact[0])]


# -- the server --

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
            self.wfile.write((BANNER + '\n').encode('ascii'))
            self.offer_starttls()
            for line in self.rfile:
                if line.endswith(b'\n') and line.strip():
                    self.handle_line(line)
        except OSError as error:
            self.log.event('session #%d: connection failed: %s' % (self.number, describe_error(error)))
        finally:
            self.stopped.set()
            self.log.event('session #%d: closed' % self.number)

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
        """The contacts whose name contains the pattern, with non-ASCII names."""
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

    def __init__(self, listen, users=DEFAULT_USERS, event_interval=None, log=None, tls_context=None, starttls=False):
        self.pbx = FakePBX(users)
        self.tls_context = tls_context     # with it: TLS from the first byte, or STARTTLS offered
        self.starttls = starttls
        self.event_interval = event_interval
        self.log = log or Log('ctisim')
        self._numbers = 0
        self._lock = threading.Lock()
        super().__init__(listen, SimulatedSession)

    def new_session_number(self):
        """1 for the first client, 2 for the next..."""
        with self._lock:
            self._numbers += 1
            return self._numbers


# -- the client --

class ProtocolError(Exception):
    """The server said something the simulated client did not expect."""


class SimulatedClient:
    """Plays one short CTI client session against a server (or a proxy in front of one)."""

    def __init__(self, host, port, login='alice', password='secret', timeout=TIMEOUT, tls_context=None,
                 starttls=False):
        self.host, self.port = host, port
        self.tls_context = tls_context     # with it: TLS from the first byte, or STARTTLS when offered
        self.starttls = starttls
        self.login, self.password = login, password
        self.timeout = timeout
        self.commandid = 0
        self.banner = None
        self.userid = None
        self.unsolicited = []          # server messages that answered no request
        self.sock = None
        self.stream = None

    def run(self):
        """The whole session; return (requests answered, unsolicited messages)."""
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.stream = LineConnection(self.sock)
            if self.tls_context is not None and not self.starttls:
                self.stream.start_tls(self.tls_context, server_side=False, server_hostname=self.host)
            self.banner = self.read_line().decode('utf-8', 'replace').rstrip('\r\n')
            if self.starttls:
                self.start_tls()
            self.log_in()
            self.read_lists()
            self.call('1002')
            self.request('history', mode='0', size='8', xuserid='%s/%s' % (IPBX_ID, self.userid))
            self.request('directory', pattern='e')
            self.request('keepalive')
            self.quit()
        finally:
            self.sock.close()
        return self.commandid, len(self.unsolicited)

    def start_tls(self):
        """STARTTLS: the server's offer after its banner, the client's yes, the confirmation, the handshake."""
        try:
            offer = self.read_message()
        except socket.timeout:
            raise ProtocolError('the server did not offer STARTTLS after its banner (nothing came in %g s)'
                                % self.timeout)
        if not isinstance(offer, dict) or offer.get('class') != 'starttls':
            raise ProtocolError('the server did not offer STARTTLS after its banner')
        self.stream.write(encode({'class': 'starttls', 'status': True}))
        confirmation = self.read_message()
        if not isinstance(confirmation, dict) or confirmation.get('starttls') is not True:
            raise ProtocolError('the server did not confirm STARTTLS')
        self.stream.start_tls(self.tls_context, server_side=False, server_hostname=self.host)

    def log_in(self):
        """login_id, login_pass (with the password hashed with the session id), login_capas."""
        answer = self.request('login_id', userlogin=self.login, company='default', ident='ctisim-client',
                              xivoversion=XIVO_VERSION, version='9999', git_hash='simulated')
        hashed = hashlib.sha1(('%s:%s' % (answer['sessionid'], self.password)).encode('utf-8')).hexdigest()
        answer = self.request('login_pass', hashedpassword=hashed)
        answer = self.request('login_capas', capaid=answer['capalist'][0], state='available',
                              lastconnwins=False, loginkind='user')
        self.userid = answer['userid']

    def read_lists(self, per_list=2):
        """Each list's ids, then the config and status of its first few items."""
        for listname in LISTNAMES:
            ids = self.request('getlist', function='listid', listname=listname, tipbxid=IPBX_ID)['list']
            for tid in ids[:per_list]:
                for function in ('updateconfig', 'updatestatus'):
                    self.request('getlist', function=function, listname=listname, tipbxid=IPBX_ID, tid=tid)

    def call(self, number):
        """Dial number, then hang up the channel the server reported."""
        self.request('ipbxcommand', command='dial', destination='exten:%s/%s' % (IPBX_ID, number))
        first = len(self.unsolicited)
        status = self.wait_for(lambda message: message.get('listname') == 'phones'
                               and message.get('status', {}).get('channels'), first)
        channel = status['status']['channels'][-1]
        self.request('ipbxcommand', command='hangup', channelids='chan:%s/%s' % (IPBX_ID, channel))

    def wait_for(self, wanted, first=0):
        """The first unsolicited message from index first on that wanted(message) accepts, reading as needed."""
        index = first
        while True:
            while index < len(self.unsolicited):
                message = self.unsolicited[index]
                if isinstance(message, dict) and wanted(message):
                    return message
                index += 1
            self.unsolicited.append(self.read_message())

    def request(self, class_, **fields):
        """Send one request with the next commandid; return its answer, keeping what came before it."""
        self.commandid += 1
        message = {'class': class_, 'commandid': self.commandid}
        message.update(fields)
        self.stream.write(encode(message))
        while True:
            received = self.read_message()
            if isinstance(received, dict) and received.get('replyid') == self.commandid:
                if 'error_string' in received:
                    raise ProtocolError('the server refused %s: %s' % (class_, received['error_string']))
                return received
            self.unsolicited.append(received)

    def read_message(self):
        """The next line from the server, as JSON."""
        line = self.read_line()
        try:
            return json.loads(line.decode('utf-8'))
        except ValueError:
            raise ProtocolError('the server sent a line that is not JSON: %r' % line[:80])

    def read_line(self):
        """The next line from the server; a ProtocolError if it ends first."""
        line = self.stream.readline()
        if not line.endswith(b'\n'):
            raise ProtocolError('the server ended the connection')
        return line

    def quit(self):
        """End the session as a client does: stop sending, and read what is left until the server closes."""
        self.stream.shutdown_write()
        for line in self.stream:
            try:
                self.unsolicited.append(json.loads(line.decode('utf-8')))
            except ValueError:
                self.unsolicited.append(line)


# -- the demo --

def start_spy(server_port, options=()):
    """Start ctispy between the simulated client and server; return (process, queue of its port)."""
    command = tool_command('ctispy') + ['127.0.0.1', '--port', str(server_port), '--listen-port', '0',
                                        '--listen-addr', '127.0.0.1', '--pretty-print'] + list(options)
    spy = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ports = queue.Queue()
    threading.Thread(target=relay_spy_stderr, args=(spy.stderr, ports), name='ctispy-stderr', daemon=True).start()
    return spy, ports


def relay_spy_stderr(stream, ports):
    """Copy ctispy's stderr to ours; put the port of its start line, then None at its end, on ports."""
    for line in stream:
        match = re.search(rb'listening on port (\d+)', line)
        if match:
            ports.put(int(match.group(1)))
        sys.stderr.buffer.write(line)
        sys.stderr.flush()
    ports.put(None)


def run_demo(args, log):
    """The simulated server, ctispy in front of it, and the simulated client through ctispy; with --starttls,
    the server offers STARTTLS and ctispy sees through it, with one certificate made for the run for both."""
    if not args.starttls:
        return demo_session(args, log)
    with certificate_for_run() as (cert, key, _):
        log.error('certificate made for this run: %s (the server\'s and ctispy\'s)' % cert)
        return demo_session(args, log, DemoTls(cert, key))


class DemoTls:
    """The demo's STARTTLS: the server offers it, ctispy sees through it and the client takes it, all with
    one certificate (for localhost and 127.0.0.1) that each trusts."""

    def __init__(self, cert, key):
        self.server_context = server_context(cert, key)
        self.spy_options = ['--cert', cert, '--key', key, '--tls-ca', cert]
        self.client_context = client_context(cert)


def demo_session(args, log, tls=None):
    """One session of the demo: in clear text, or with STARTTLS seen through (tls: a DemoTls)."""
    server = SimulatorServer(ListenAddress('127.0.0.1', 0), users=args.users, log=log,
                             tls_context=tls and tls.server_context, starttls=tls is not None)
    threading.Thread(target=server.serve_forever, name='simulator', daemon=True).start()
    spy = None
    try:
        log.error('simulated CTI server on 127.0.0.1:%d; starting ctispy in front of it' % server.port)
        spy, ports = start_spy(server.port, tls.spy_options if tls else ())
        try:
            spy_port = ports.get(timeout=TIMEOUT)
        except queue.Empty:
            spy_port = None
        if spy_port is None:
            log.error('ctispy did not start')
            return 1
        try:
            requests, unsolicited = SimulatedClient('127.0.0.1', spy_port, tls_context=tls and tls.client_context,
                                                    starttls=tls is not None).run()
        except (ProtocolError, OSError) as error:
            reason = describe_error(error) if isinstance(error, OSError) else str(error)
            log.error('the session through ctispy failed: %s' % reason)
            return 1
        try:
            status = spy.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error('ctispy did not exit at the end of the session')
            return 1
        if status != 0:
            log.error('ctispy exited with status %d' % status)
            return 1
        log.error('demo done: %d requests answered and %d messages from the server unasked, all shown above '
                  'by ctispy' % (requests, unsolicited))
        return 0
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        server.shutdown()
        server.server_close()


# -- the command line --

def positive_int(text):
    """--users: 1 to 100000."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100000:
        raise argparse.ArgumentTypeError('not a number from 1 to 100000: %r' % text)
    return value


def seconds(text):
    """--events: 0 to 86400 seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError('not a number of seconds (0 to 86400): %r' % text)
    return value


def examples(text):
    """The examples ending a --help, indented."""
    return 'examples:\n' + '\n'.join('  ' + line for line in text.strip().splitlines())


MAIN_EXAMPLES = '''
ctisim demo                           server, ctispy and client: a whole session on the terminal
ctisim demo --starttls                the same with STARTTLS, which ctispy sees through
ctisim server --port 5003 --users 50  a simulated CTI server for a real CTI client or the tools
ctisim client 127.0.0.1               one client session through a tool listening on port 50030
'''

SERVER_EXAMPLES = '''
ctisim server                                   listen on port 5003 of all interfaces
ctisim server --port 0 --listen-addr 127.0.0.1  a free port on loopback, said on start
ctisim server --users 200 --events 2            200 users; a presence change every 2 seconds
ctisim server --tls                             TLS on port 5013, with a certificate made for the run
ctisim server --starttls --cert c.pem --key c.key   STARTTLS offered on port 5003, with this certificate
Then: ctispy 127.0.0.1 --port 5003, and a CTI client (or ctisim client) on port 50030.
The certificate made for a run (by the openssl command) is said on start, for --tls-ca; it is removed
when ctisim ends.
'''

CLIENT_EXAMPLES = '''
ctisim client 127.0.0.1                through a tool listening on port 50030 (ctispy, ctisave, ctistat)
ctisim client 127.0.0.1 --port 5003    straight to a (simulated) server
ctisim client 127.0.0.1 --starttls --tls-ca tool.crt    STARTTLS through a tool seeing through it
ctisim client 127.0.0.1 --port 5013 --tls --tls-no-verify
'''

DEMO_EXAMPLES = '''
ctisim demo
ctisim demo --users 20
ctisim demo --starttls                 needs the openssl command, to make a certificate for the run
'''


def parser():
    """The options of ctisim and of its three commands."""
    main_parser = argparse.ArgumentParser(
        prog='ctisim', formatter_class=HelpFormatter, epilog=examples(MAIN_EXAMPLES),
        description='A simulated XiVO CTI server and client, to try cti-proxy without a XiVO.')
    main_parser.add_argument('--version', action='version', version='%(prog)s (cti-proxy) ' + __version__)
    commands = main_parser.add_subparsers(dest='command', metavar='COMMAND', title='commands')
    commands.required = True

    server = commands.add_parser('server', help='run a simulated CTI server until Ctrl-C',
                                 description='Run a simulated CTI server, several clients at once, until Ctrl-C.',
                                 formatter_class=HelpFormatter, epilog=examples(SERVER_EXAMPLES))
    server.add_argument('--port', type=listen_port,
                        help='the port to listen on (default: %d, or %d with --tls; 0 picks a free one, said on '
                             'start)' % (DEFAULT_PORT, DEFAULT_TLS_PORT))
    server.add_argument('--listen-addr', metavar='ADDR',
                        help='the address to listen on (default: all interfaces, IPv4 and IPv6)')
    add_users_option(server)
    server.add_argument('--events', type=seconds, default=DEFAULT_EVENT_INTERVAL, metavar='SECONDS',
                        help='after login, a presence change every SECONDS (default: %(default)g; 0: never)')
    server.add_argument('-v', '--verbose', action='store_true', help='report connections on stderr')
    add_server_tls_options(server)

    client = commands.add_parser('client', help='play one CTI client session against HOST',
                                 description='Play one CTI client session: log in, read the lists, dial,\n'
                                             'hang up, search the directory, send a keepalive, quit.',
                                 formatter_class=HelpFormatter, epilog=examples(CLIENT_EXAMPLES))
    client.add_argument('host', metavar='HOST', help='the CTI server, or a tool in front of it')
    client.add_argument('--port', type=port_number, default=DEFAULT_PROXY_PORT,
                        help='its port (default: %(default)s, where the tools listen)')
    add_client_tls_options(client)

    demo = commands.add_parser('demo', help='a simulated server and client with ctispy in between',
                               description='Start a simulated server on loopback, ctispy --pretty-print in front '
                                           'of it,\nand a simulated client through ctispy: ctispy shows the session.',
                               formatter_class=HelpFormatter, epilog=examples(DEMO_EXAMPLES))
    add_users_option(demo)
    demo.add_argument('--starttls', action='store_true',
                      help='the server offers STARTTLS, ctispy sees through it and the client takes it, with a '
                           'certificate made for the run (by the openssl command)')
    return main_parser


def add_tls_mode(command, tls_help, starttls_help):
    """The encryption group of a command, with --tls and --starttls (one or the other); return the group."""
    group = command.add_argument_group('encryption')
    mode = group.add_mutually_exclusive_group()
    mode.add_argument('--tls', action='store_true', help=tls_help)
    mode.add_argument('--starttls', action='store_true', help=starttls_help)
    return group


def add_server_tls_options(server):
    """--tls or --starttls, and --cert and --key, for ctisim server."""
    group = add_tls_mode(server, 'TLS from the first byte, as a XiVO on port 5013',
                         'offer STARTTLS after the banner; a client that takes it continues in TLS')
    group.add_argument('--cert', metavar='FILE',
                       help='the server\'s certificate (PEM) (default: one made for the run by the openssl '
                            'command, for localhost, 127.0.0.1 and ::1; its path is said on start)')
    group.add_argument('--key', metavar='FILE', help='the private key (PEM) of --cert')


def add_client_tls_options(client):
    """--tls or --starttls, and how to check the server's certificate, for ctisim client."""
    group = add_tls_mode(client, 'TLS from the first byte (port 5013 of a XiVO)',
                         'expect the server\'s STARTTLS offer after its banner, and take it')
    check = group.add_mutually_exclusive_group()
    check.add_argument('--tls-ca', metavar='FILE', help='trust this certificate or CA (default: the system\'s CAs)')
    check.add_argument('--tls-no-verify', action='store_true', help='do not check the server\'s certificate')


def check_tls_options(command, args):
    """Usage errors: TLS options without --tls or --starttls, --cert without --key."""
    encrypted = getattr(args, 'tls', False) or getattr(args, 'starttls', False)
    needing = [name for name in ('cert', 'key', 'tls_ca', 'tls_no_verify') if getattr(args, name, None)]
    if needing and not encrypted:
        command.error('--%s needs --tls or --starttls' % needing[0].replace('_', '-'))
    if bool(getattr(args, 'cert', None)) != bool(getattr(args, 'key', None)):
        command.error('--cert and --key go together')


def add_users_option(command):
    """--users, for server and demo."""
    command.add_argument('--users', type=positive_int, default=DEFAULT_USERS, metavar='N',
                         help='N users, phones and agents, and a queue for every 4 users (default: %(default)s)')


def run_server(args, log):
    """Serve until Ctrl-C or SIGTERM; with --tls or --starttls, with --cert and --key or a certificate made
    for the run."""
    if args.port is None:
        args.port = DEFAULT_TLS_PORT if args.tls else DEFAULT_PORT
    if not (args.tls or args.starttls):
        return serve(args, log)
    with certificate_for_run(args.cert, args.key) as (cert, key, made):
        return serve(args, log, server_context(cert, key), cert if made else None)


def serve(args, log, tls_context=None, made_cert=None):
    """Serve until Ctrl-C or SIGTERM (made_cert: the path of a certificate made for the run, to say)."""
    try:
        listen = ListenAddress(args.listen_addr, args.port)
    except (OSError, UnicodeError) as error:
        log.error('cannot use listen address %r: %s' % (args.listen_addr, describe_error(error)))
        return 1
    try:
        server = SimulatorServer(listen, users=args.users, event_interval=args.events or None, log=log,
                                 tls_context=tls_context, starttls=args.starttls)
    except OSError as error:
        log.error('cannot listen on %s: %s' % (listen.describe(), describe_error(error)))
        return 1
    encryption = '; TLS' if args.tls else '; STARTTLS offered' if args.starttls else ''
    log.error('simulated CTI server listening on %s; %d users%s'
              % (listen.describe(server.port), args.users, encryption))
    if made_cert is not None:
        log.error('certificate made for this run: %s (trust it with --tls-ca; removed when ctisim ends)' % made_cert)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    return 0


def run_client(args, log):
    """One client session; a one-line summary on stderr."""
    context = client_context(args.tls_ca, not args.tls_no_verify) if args.tls or args.starttls else None
    requests, unsolicited = SimulatedClient(args.host, args.port, tls_context=context, starttls=args.starttls).run()
    log.error('session done: %d requests answered, %d messages from the server unasked'
              % (requests, unsolicited))
    return 0


COMMANDS = {'server': run_server, 'client': run_client, 'demo': run_demo}


def main(argv=None):
    """Run ctisim; return its exit status."""
    # Ctrl-C stops it even when started with SIGINT ignored (a script's background job); one that came during
    # the start-up stops it now (KeyboardInterrupt: launch.run's exit status).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    release_stop_signals()
    main_parser = parser()
    args = main_parser.parse_args(sys.argv[1:] if argv is None else argv)
    check_tls_options(main_parser, args)
    log = Log('ctisim', verbose=getattr(args, 'verbose', False))
    try:
        return COMMANDS[args.command](args, log)
    except (ProtocolError, CertificateError) as error:
        log.error(str(error))
    except OSError as error:
        where = ' to %s:%d' % (args.host, args.port) if args.command == 'client' else ''
        log.error('connection%s failed: %s' % (where, describe_error(error)))
    except KeyboardInterrupt:
        return 130
    return 1
