"""Relay: accept CTI clients, connect each to the server, and pump bytes both ways.

Every byte is forwarded unchanged.  Just before a chunk is forwarded, it is handed
to the observer (the analysis side), which only queues it: no decoding happens on
the relay's path, and queueing first keeps the analysis in causal order (a request
is queued before its answer can exist).  The queue is bounded; only when it is full
does the relay wait.

The observer gets these calls, from the session's threads:
    session_opened(session)            the client is connected to the server
    received(session, direction, when, data)   data came from direction's side
    encrypted(session, direction, when)         what follows from that side is TLS (STARTTLS)
    notice(session, when, text)                 something to tell the user about the session
    direction_ended(session, direction)         that side will send nothing more
    session_closed(session)            both directions are over
"""

import socket
import socketserver
import ssl
import sys
import threading
import time

from .escaping import escape_text, shown_traceback
from .filters import CLIENT, SERVER
from .tls import PlainConnection, StarttlsWatch, TlsConnection, TlsFailure, TlsOptions, tls_reason

# The pumps and the analysis share one interpreter lock.  While the analysis is busy,
# a pump that has data to forward waits for the lock at most this long (Python's
# default is 5 ms, which would let a busy analysis hold back the wire).
SWITCH_INTERVAL = 0.0001

CONNECT_TIMEOUT = 15.0      # seconds to reach the server


class Log:
    """One-line notes on stderr, each after the tool's name: what the user must know (the start
    line, warnings, errors) always; connection events with --verbose.  A note may quote the
    network (a TLS reason, a server's error): it is escaped, and stays on one line."""

    def __init__(self, prog, verbose=False):
        self.prog = prog
        self.verbose = verbose

    def say(self, text):
        sys.stderr.write('%s: %s\n' % (self.prog, escape_text(text)))
        sys.stderr.flush()

    error = say

    def event(self, text):
        if self.verbose:
            self.say(text)


class Upstream:
    """Where the CTI server is."""

    def __init__(self, host, port):
        self.host = host
        self.port = port

    def __str__(self):
        return '%s:%d' % (self.host, self.port)

    def check_resolves(self):
        """Raise OSError (socket.gaierror), or UnicodeError for a malformed name, if the host
        name cannot be resolved."""
        socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)

    def connect(self, tls):
        """Return (socket, connection): TLS from the first byte with --tls, else plain.

        Connecting (and the TLS handshake) may take CONNECT_TIMEOUT seconds: a server
        behind a firewall that drops packets is reported, not waited for for minutes."""
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = PlainConnection(sock)
            if tls.to_server:
                connection = TlsConnection(sock, tls.upstream_context, server_side=False, server_hostname=self.host)
                connection.handshake()
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return sock, connection


def dual_stack_available():
    """Whether one IPv6 socket can accept both IPv6 and IPv4 clients here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(('::', 0))
    except OSError:
        return False
    return True


class ListenAddress:
    """Where the tool accepts clients: an address, or None for all interfaces."""

    def __init__(self, addr, port):
        self.port = port
        self.given = addr is not None
        self.dual_stack = addr is None and dual_stack_available()
        if addr is None:
            addr = '::' if self.dual_stack else '0.0.0.0'
            self.family = socket.AF_INET6 if self.dual_stack else socket.AF_INET
        else:
            info = socket.getaddrinfo(addr, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
            self.family = info[0][0]
        self.addr = addr

    def describe(self, port=None):
        port = self.port if port is None else port
        if not self.given:
            stacks = 'IPv4 and IPv6' if self.dual_stack else 'IPv4'
            return 'port %d of all interfaces (%s)' % (port, stacks)
        return 'port %d of %s' % (port, self.addr)


def _quietly(action, *args):
    try:
        action(*args)
    except OSError:
        pass


def describe_error(error):
    """A short reason for a socket error: 'Connection refused', not '[Errno 111] ...'."""
    if isinstance(error, socket.timeout):
        return 'timed out'
    if isinstance(error, ssl.SSLError):
        return 'TLS: ' + tls_reason(error)
    if isinstance(error, UnicodeError):       # a host name the IDNA codec rejects
        return 'not a valid host name'
    return getattr(error, 'strerror', None) or str(error) or error.__class__.__name__


class Session(socketserver.BaseRequestHandler):
    """One client, its own connection to the server, and a pump thread for each direction.

    Each pump reads its side's connection and writes to the other side's.  When the
    server confirms STARTTLS, the pumps change connections at that exact byte: with
    the tool's certificate each side gets its own TLS session and the pumps go on
    with clear text; without, the bytes flow on as they are and the analysis is told
    that they are encrypted.
    """

    def setup(self):
        self.number = self.server.new_session_number()
        self.upstream = self.server.upstream
        self.log = self.server.log
        self.observer = self.server.observer
        self.tls = self.server.tls
        self.client_sock = self.request
        self.server_sock = None
        self.connections = {}
        self.opened = None
        self.watch = StarttlsWatch(hide_offer=self.tls.hide_offer)
        self._client_tls_expected = False   # the server confirmed STARTTLS: the client's TLS comes next
        self._writable = {CLIENT: threading.Event(), SERVER: threading.Event()}   # cleared while upgrading
        for event in self._writable.values():
            event.set()
        self._ending = threading.Lock()
        self._aborted = False

    def handle(self):
        self.log.event('session #%d: client %s connected' % (self.number, peer_name(self.client_address)))
        self.client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.connections[CLIENT] = self._accept_client()
        except TlsFailure as failure:
            self.server.report_failure(self, str(failure))
            return
        try:
            self.server_sock, self.connections[SERVER] = self.upstream.connect(self.tls)
        except (OSError, UnicodeError) as error:
            self.server.report_failure(self, 'cannot connect to server %s: %s' % (self.upstream, describe_error(error)))
            return
        self.opened = time.time()
        self.log.event('session #%d: connected to server %s' % (self.number, self.upstream))
        self.server.session_started(self)
        try:
            self.observer.session_opened(self)
            pumps = [threading.Thread(target=self._pump, name='pump-%d-%s' % (self.number, side),
                                      args=(side,), daemon=True)
                     for side in (CLIENT, SERVER)]
            for pump in pumps:
                pump.start()
            for pump in pumps:
                pump.join()
        finally:
            self.server_sock.close()
            self.log.event('session #%d: closed' % self.number)
            self.observer.session_closed(self)

    def finish(self):
        self.server.session_finished(self)

    def _accept_client(self):
        if not self.tls.from_client:
            return PlainConnection(self.client_sock)
        connection = TlsConnection(self.client_sock, self.tls.listen_context, server_side=True)
        self._handshake(connection, 'the client %s' % peer_name(self.client_address))
        return connection

    def _handshake(self, connection, who):
        """Complete a TLS handshake in CONNECT_TIMEOUT seconds at most (nobody else uses the
        socket meanwhile: the other pump waits for the upgrade)."""
        connection.sock.settimeout(CONNECT_TIMEOUT)
        try:
            connection.handshake()
        except OSError as error:     # ssl.SSLError and socket.timeout are OSErrors
            raise TlsFailure('TLS handshake with %s failed: %s' % (who, tls_reason(error)))
        finally:
            connection.sock.settimeout(None)
        self.log.event('session #%d: TLS with %s (%s)' % (self.number, who, connection.describe()))

    def _pump(self, side):
        """Relay what side sends to the other side until side ends or the session aborts."""
        other = SERVER if side == CLIENT else CLIENT
        received = self.observer.received
        connections = self.connections
        writable = self._writable[other]
        try:
            while True:
                at_fault = side
                data = connections[side].recv()
                if not data:
                    break
                when = time.time()
                at_fault = other
                if side == SERVER and self.watch.watching:
                    self._relay_server_opening(data, when)
                    continue
                if side == CLIENT and self._client_tls_expected:
                    if self._client_starts_tls(data, when):
                        continue
                received(self, side, when, data)
                if not writable.is_set():   # the other side's STARTTLS upgrade is under way
                    writable.wait()
                connections[other].sendall(data)
        except TlsFailure as failure:
            if not self._aborted:           # not the echo of the other side's failure
                self.server.report_failure(self, str(failure))
            self.abort()
        except OSError as error:
            if not self._aborted:
                self.log.event('session #%d: %s connection failed: %s' % (self.number, at_fault, describe_error(error)))
            self.abort()
        else:
            if not self._aborted:
                self.log.event('session #%d: %s ended its sending' % (self.number, side))
            if not self._aborted and not self._writable[side].is_set():
                # side ended before completing its STARTTLS upgrade: the other pump would wait for ever
                self.server.report_failure(self, 'STARTTLS: the %s ended before its TLS handshake' % side)
                self.abort()
            if side == SERVER and self.watch.watching:
                _quietly(connections[CLIENT].sendall, self.watch.finish())
            _quietly(connections[other].shutdown_write)
        finally:
            self.observer.direction_ended(self, side)

    def _relay_server_opening(self, data, when):
        """Relay the server's opening lines, where STARTTLS may be offered and confirmed."""
        hidden = self.watch.offers_hidden
        forward, confirmed = self.watch.feed(data)
        if self.watch.offers_hidden > hidden:
            self.observer.notice(self, when, 'STARTTLS: the server\'s offer was hidden from the client '
                                             '(--no-starttls)')
        if confirmed is None:
            self.observer.received(self, SERVER, when, data)
            self.connections[CLIENT].sendall(forward)
            return
        # Everything after `confirmed` is TLS, and the client starts its handshake as soon as it
        # has the confirmation: be ready for it before sending it.
        clear, encrypted = forward[:confirmed], forward[confirmed:]
        seeing_through = self.tls.sees_through_starttls
        if seeing_through:
            self._writable[CLIENT].clear()
            self._writable[SERVER].clear()
        self._client_tls_expected = True
        self.observer.received(self, SERVER, when, data[:len(data) - len(encrypted)])   # what the server sent
        self.connections[CLIENT].sendall(clear)
        if seeing_through:
            connection = TlsConnection(self.server_sock, self.tls.upstream_context, server_side=False,
                                       server_hostname=self.upstream.host, received=encrypted)
            self._handshake(connection, 'the server %s (STARTTLS)' % self.upstream)
            self.connections[SERVER] = connection
            self.observer.notice(self, time.time(), 'STARTTLS: the tool decrypts this session with its certificate')
            self._writable[SERVER].set()
        else:
            self.observer.encrypted(self, SERVER, when)
            self.observer.notice(self, when, 'STARTTLS: the session is now encrypted and cannot be shown '
                                             '(give the tool --cert and --key to see through it)')
            if encrypted:
                self.observer.received(self, SERVER, when, encrypted)
                self.connections[CLIENT].sendall(encrypted)

    def _client_starts_tls(self, data, when):
        """The client's first bytes after the server's STARTTLS confirmation: its TLS handshake.

        Return True when the tool took them for its own TLS session with the client."""
        if data[:1] != TLS_HANDSHAKE_RECORD:
            if self.tls.sees_through_starttls:
                raise TlsFailure('STARTTLS: the client %s sent clear text instead of starting TLS'
                                 % peer_name(self.client_address))
            return False                        # passed through: clear text until it does
        self._client_tls_expected = False
        if not self.tls.sees_through_starttls:
            self.observer.encrypted(self, CLIENT, when)
            return False
        connection = TlsConnection(self.client_sock, self.tls.listen_context, server_side=True, received=data)
        self._handshake(connection, 'the client %s (STARTTLS)' % peer_name(self.client_address))
        self.connections[CLIENT] = connection
        self._writable[CLIENT].set()
        return True

    def abort(self):
        """End the session now: wake both pumps and close both connections."""
        with self._ending:
            self._aborted = True
            for sock in (self.client_sock, self.server_sock):
                if sock is not None:
                    _quietly(sock.shutdown, socket.SHUT_RDWR)
            for event in self._writable.values():
                event.set()


TLS_HANDSHAKE_RECORD = b'\x16'


def peer_name(address):
    """'127.0.0.1:40512' or '[::1]:40512' for a socket address."""
    host, port = address[:2]
    if host.startswith('::ffff:') and '.' in host:
        host = host[len('::ffff:'):]      # an IPv4 client on a dual-stack socket
    return ('[%s]:%d' if ':' in host else '%s:%d') % (host, port)


class ListeningServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A threaded TCP server on a ListenAddress: IPv4 and IPv6 at once on all interfaces."""

    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, listen, handler_class):
        self.listen = listen
        self.address_family = listen.family
        super().__init__((listen.addr, listen.port), handler_class)

    @property
    def port(self):
        """The port listened on (the one picked when 0 was asked)."""
        return self.socket.getsockname()[1]

    def server_bind(self):
        if self.listen.dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class RelayServer(ListeningServer):
    """Listens for CTI clients and runs a Session for each, on its own thread."""

    def __init__(self, listen, upstream, observer, log, tls=None):
        self.upstream = upstream
        self.tls = tls or TlsOptions()
        self.observer = observer
        self.log = log
        self.failures = 0              # sessions that could not start
        self._lock = threading.Condition()
        self._numbers = 0
        self._running = 0              # sessions accepted and not finished
        self._sessions = set()         # sessions connected to the server
        super().__init__(listen, Session)

    def process_request(self, request, client_address):
        with self._lock:
            self._running += 1
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        """A session failed in a way it did not expect (a bug): report it, keep serving."""
        self.log.error('internal error in the session with %s; please report:' % peer_name(client_address))
        sys.stderr.write(shown_traceback())

    def new_session_number(self):
        with self._lock:
            self._numbers += 1
            return self._numbers

    def session_started(self, session):
        with self._lock:
            self._sessions.add(session)

    def report_failure(self, session, reason):
        """A session could not start or go on (no server, a failed TLS handshake): say why on one line."""
        with self._lock:
            self.failures += 1
        self.log.error(reason if not self.log.verbose else 'session #%d: %s' % (session.number, reason))

    def session_finished(self, session):
        with self._lock:
            self._sessions.discard(session)
            self._running -= 1
            self._lock.notify_all()

    def abort_sessions(self):
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.abort()

    def wait_sessions(self, timeout=None):
        """Wait until every accepted session has finished; return whether they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._running:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True
