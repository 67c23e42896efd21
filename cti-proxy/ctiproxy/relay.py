"""Relay: accept CTI clients, connect each to the server, and pump bytes both ways.

Every byte is forwarded first and unchanged; only then is a copy handed to the
observer (the analysis side), which may not alter or delay what was forwarded
beyond its own bounded buffer.

The observer gets four calls, from the session's threads:
    session_opened(session)            the client is connected to the server
    received(session, direction, when, data)   data came from direction's side
    direction_ended(session, direction)         that side will send nothing more
    session_closed(session)            both directions are over
"""

import socket
import socketserver
import sys
import threading
import time
import traceback

from .filters import CLIENT, SERVER

CHUNK_SIZE = 256 * 1024


class Log:
    """One-line notes on stderr: errors always, connection events with --verbose."""

    def __init__(self, prog, verbose=False):
        self.prog = prog
        self.verbose = verbose

    def error(self, text):
        sys.stderr.write('%s: %s\n' % (self.prog, text))
        sys.stderr.flush()

    def event(self, text):
        if self.verbose:
            self.error(text)


class Upstream:
    """Where the CTI server is."""

    def __init__(self, host, port):
        self.host = host
        self.port = port

    def __str__(self):
        return '%s:%d' % (self.host, self.port)

    def check_resolves(self):
        """Raise OSError (socket.gaierror) if the host name cannot be resolved."""
        socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)

    def connect(self):
        sock = socket.create_connection((self.host, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


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
    return error.strerror or str(error) or error.__class__.__name__


class Session(socketserver.BaseRequestHandler):
    """One client, its own connection to the server, and a pump thread for each direction."""

    def setup(self):
        self.number = self.server.new_session_number()
        self.upstream = self.server.upstream
        self.log = self.server.log
        self.client_sock = self.request
        self.server_sock = None
        self.opened = None
        self._ending = threading.Lock()
        self._aborted = False

    def handle(self):
        self.log.event('session #%d: client %s connected' % (self.number, peer_name(self.client_address)))
        try:
            self.server_sock = self.upstream.connect()
        except OSError as error:
            self.server.report_connect_failure(self, error)
            return
        self.client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened = time.time()
        self.log.event('session #%d: connected to server %s' % (self.number, self.upstream))
        self.server.session_started(self)
        try:
            self.server.observer.session_opened(self)
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
            self.server.observer.session_closed(self)

    def finish(self):
        self.server.session_finished(self)

    def _pump(self, side):
        """Relay what side sends to the other side until side ends or the session aborts."""
        if side == CLIENT:
            source, destination, other = self.client_sock, self.server_sock, SERVER
        else:
            source, destination, other = self.server_sock, self.client_sock, CLIENT
        received = self.server.observer.received
        try:
            while True:
                at_fault = side
                data = source.recv(CHUNK_SIZE)
                if not data:
                    break
                when = time.time()
                at_fault = other
                try:
                    destination.sendall(data)
                finally:
                    received(self, side, when, data)
        except OSError as error:
            if not self._aborted:
                self.log.event('session #%d: %s connection failed: %s' % (self.number, at_fault, describe_error(error)))
            self.abort()
        else:
            if not self._aborted:
                self.log.event('session #%d: %s ended its sending' % (self.number, side))
            _quietly(destination.shutdown, socket.SHUT_WR)
        finally:
            self.server.observer.direction_ended(self, side)

    def abort(self):
        """End the session now: wake both pumps and close both connections."""
        with self._ending:
            self._aborted = True
            for sock in (self.client_sock, self.server_sock):
                if sock is not None:
                    _quietly(sock.shutdown, socket.SHUT_RDWR)


def peer_name(address):
    """'127.0.0.1:40512' or '[::1]:40512' for a socket address."""
    host, port = address[:2]
    if host.startswith('::ffff:') and '.' in host:
        host = host[len('::ffff:'):]      # an IPv4 client on a dual-stack socket
    return ('[%s]:%d' if ':' in host else '%s:%d') % (host, port)


class RelayServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Listens for CTI clients and runs a Session for each, on its own thread."""

    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, listen, upstream, observer, log):
        self.listen = listen
        self.upstream = upstream
        self.observer = observer
        self.log = log
        self.address_family = listen.family
        self.connect_failures = []     # (session number, error) for each server connection that failed
        self._lock = threading.Condition()
        self._numbers = 0
        self._running = 0              # sessions accepted and not finished
        self._sessions = set()         # sessions connected to the server
        super().__init__((listen.addr, listen.port), Session)

    @property
    def port(self):
        return self.socket.getsockname()[1]

    def server_bind(self):
        if self.listen.dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def process_request(self, request, client_address):
        with self._lock:
            self._running += 1
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        """A session failed in a way it did not expect (a bug): report it, keep serving."""
        self.log.error('internal error in the session with %s; please report:' % peer_name(client_address))
        traceback.print_exc()

    def new_session_number(self):
        with self._lock:
            self._numbers += 1
            return self._numbers

    def session_started(self, session):
        with self._lock:
            self._sessions.add(session)

    def report_connect_failure(self, session, error):
        with self._lock:
            self.connect_failures.append((session.number, error))
        self.log.error('cannot connect to server %s: %s' % (session.upstream, describe_error(error)))

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
