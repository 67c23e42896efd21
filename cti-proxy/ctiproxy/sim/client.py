"""The simulated CTI client: one short session against a server, or a tool in front of one."""

import hashlib
import json
import socket

from .protocol import IPBX_ID, LISTNAMES, TIMEOUT, XIVO_VERSION, encode
from .tls import LineConnection


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
        """Connect, read the banner, take STARTTLS if asked, then play(): return what it returns."""
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.stream = LineConnection(self.sock)
            if self.tls_context is not None and not self.starttls:
                self.stream.start_tls(self.tls_context, server_side=False, server_hostname=self.host)
            self.banner = self.read_line().decode('utf-8', 'replace').rstrip('\r\n')
            if self.starttls:
                self.start_tls()
            return self.play()
        finally:
            self.sock.close()

    def play(self):
        """The session after the banner (and STARTTLS); return (requests answered, unsolicited messages)."""
        self.log_in()
        self.read_lists()
        self.refused_request('getlist', function='listid', listname='voicemails', tipbxid=IPBX_ID)
        self.call('1002')
        self.request('history', mode='0', size='8', xuserid='%s/%s' % (IPBX_ID, self.userid))
        self.request('directory', pattern='e')
        self.request('keepalive')
        self.quit()
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
        """Send one request with the next commandid; return its answer, keeping what came before it; a
        ProtocolError if the server refuses it."""
        answer = self.answer_to(class_, fields)
        if 'error_string' in answer:
            raise ProtocolError('the server refused %s: %s' % (class_, answer['error_string']))
        return answer

    def refused_request(self, class_, **fields):
        """Send one request that the server must refuse (a list it does not have): the session's error answer."""
        if 'error_string' not in self.answer_to(class_, fields):
            raise ProtocolError('the server did not refuse %s %s' % (class_, fields))

    def answer_to(self, class_, fields):
        """Send one request with the next commandid; return its answer, keeping what came before it."""
        self.commandid += 1
        message = {'class': class_, 'commandid': self.commandid}
        message.update(fields)
        self.stream.write(encode(message))
        while True:
            received = self.read_message()
            if isinstance(received, dict) and received.get('replyid') == self.commandid:
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
