"""Relay: accept CTI clients, connect each to the server, and pump bytes both ways.

Every byte is forwarded unchanged.  Just before a chunk is forwarded, it is handed
to the observer (the analysis side), which only queues it: no decoding happens on
the relay's path, and queueing first keeps the analysis in causal order (a request
is queued before its answer can exist).  The queue is bounded; only when it is full
does the relay wait.

The observer (events.Observer; the Analyzer) gets these calls, from the session's threads, each with the
session's events.SessionInfo:
    session_opened(session)            the client is connected to the server; it may open files
        (descriptors_per_session of them, which the relay holds for it from the client's arrival) and
        return False to end the session unrelayed; out of descriptors, it raises the OSError and is called again
    received(session, direction, when, data)   data came from direction's side
    encrypted(session, direction, when)         what follows from that side is TLS (STARTTLS)
    notice(session, when, text)                 something to tell the user about the session
    direction_ended(session, direction)         that side will send nothing more (when: now)
    session_closed(session)            both directions are over (when: now)
By then the SessionInfo's ended_first is the side that ended first (None if neither did before an abort), and
its failure the one line that says what ended it, if it did not end the ordinary way.
"""

import errno
import os
import socket
import socketserver
import ssl
import sys
import threading
import time
import weakref

try:
    import resource
except ImportError:         # not on this system
    resource = None

from .escaping import escape_text, shown_traceback
from .events import SessionInfo, host_port
from .filters import CLIENT, SERVER
from .stopping import stop_signals_blocked
from .tls import (ENCRYPTED, REFUSE, START_TLS, ClearTextAnswer, PlainConnection, StarttlsHandover, TlsConnection,
                  TlsFailure, TlsOptions, starts_like_tls, tls_reason)

# The pumps and the analysis share one interpreter lock.  While the analysis is busy,
# a pump that has data to forward waits for the lock at most this long (Python's
# default is 5 ms, which would let a busy analysis hold back the wire).
SWITCH_INTERVAL = 0.0001

CONNECT_TIMEOUT = 15.0      # seconds to reach the server

# Out of file descriptors (ulimit -n) or of kernel memory, the tool cannot accept a client or connect
# to the server: it says so once, and tries again when a session ends, or after this many seconds.
OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
RESOURCE_BACKOFF = 0.1


class Log:
    """One-line notes on stderr, each after the tool's name: what the user must know (the start
    line, warnings, errors) always; connection events with --verbose.  A note may quote the
    network (a TLS reason, a server's error): it is escaped, and stays on one line."""

    def __init__(self, prog, verbose=False):
        self.prog = prog
        self.verbose = verbose

    def say(self, text):
        if sys.stderr is None:       # started with stderr closed (2>&-)
            return
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
        self.own = OwnConnections()
        self.limit = None           # a ResourceLimit to wait on, out of file descriptors (a RelayServer's)

    def __str__(self):
        return host_port(self.host, self.port)

    def check_resolves(self):
        """Raise OSError (socket.gaierror), or UnicodeError for a malformed name, if the host
        name cannot be resolved."""
        socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)

    def connect(self, tls, reserved=()):
        """Return (socket, connection): TLS from the first byte with --tls, else plain; reserved: file
        descriptors held for the socket, closed to make it.

        Connecting may take CONNECT_TIMEOUT seconds, and the TLS handshake as long: a server
        behind a firewall that drops packets is reported, not waited for for minutes."""
        sock = self._dial(reserved)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = PlainConnection(sock)
            sock.settimeout(None)
            if tls.to_server:
                connection = TlsConnection(sock, tls.upstream_context, server_side=False, server_hostname=self.host)
                self._tls_handshake(connection)
        except BaseException:
            sock.close()
            raise
        return sock, connection

    def _tls_handshake(self, connection):
        """--tls: the handshake with the server; a server that answers in clear text is said to be one."""
        try:
            connection.handshake()
        except OSError as error:
            if connection.first_received and not starts_like_tls(connection.first_received):
                raise ClearTextAnswer('the server answered in clear text, not TLS: port %d probably does not '
                                      'speak TLS (XiVO: TLS on 5013, clear text and STARTTLS on 5003)'
                                      % self.port) from error
            raise

    def _dial(self, reserved):
        """socket.create_connection(), each socket known to self.own before it connects, so that a connection
        coming back to the tool is recognised when accepted."""
        error = OSError('cannot resolve %s' % self.host)
        reserved = list(reserved)          # the first socket made takes them
        try:
            found = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)
            for family, kind, protocol, _, address in found:
                sock = self._new_socket(family, kind, protocol, reserved)
                try:
                    sock.settimeout(CONNECT_TIMEOUT)
                    self.own.add(sock)
                    sock.connect(address)
                    return sock
                except OSError as failure:
                    error = failure
                    sock.close()
        finally:
            close_all(reserved)
        raise error

    def _new_socket(self, family, kind, protocol, reserved):
        """A new socket, made once the descriptors reserved for it (a list, emptied) are closed; out of file
        descriptors, wait for some (as accepting clients does) for CONNECT_TIMEOUT seconds at most."""
        if self.limit is None:
            close_all(reserved)
            return socket.socket(family, kind, protocol)
        return self.limit.obtain(lambda: socket.socket(family, kind, protocol), CONNECT_TIMEOUT, reserved=reserved)


def plain_address(address):
    """(host, port) of a socket address, an IPv4 address mapped into IPv6 (a dual-stack socket's) as IPv4."""
    host, port = address[:2]
    if host.startswith('::ffff:') and '.' in host:
        host = host[len('::ffff:'):]
    return host, port


def _local_address(sock):
    try:
        return plain_address(sock.getsockname())
    except OSError:             # closed
        return None


class OwnConnections:
    """The tool's own connections to the server, to recognise one that comes back to the tool (a loop).

    A connection is known by both its ends: Linux gives connections to different places the same local port, so
    a client on this machine may come from the local address of one of the tool's connections, and be another."""

    def __init__(self):
        self._lock = threading.Lock()
        self._unplaced = weakref.WeakSet()                  # added before connecting: their ends are not known yet
        self._by_ends = weakref.WeakValueDictionary()       # (local (host, port), far (host, port)) -> socket

    def add(self, sock):
        """Know sock before it connects (its ends are known once it is connected)."""
        with self._lock:
            self._unplaced.add(sock)

    def owns(self, address, local_address):
        """Whether the connection from address to local_address (a client's, as the tool accepted it) is one of
        the connections, still open, seen from its other end."""
        wanted = (plain_address(address), plain_address(local_address))
        with self._lock:
            for sock in list(self._unplaced):
                ends = _ends(sock)
                if ends is not None:
                    self._by_ends[ends] = sock
                if ends is not None or _local_address(sock) is None:      # connected, or closed
                    self._unplaced.discard(sock)
            sock = self._by_ends.get(wanted)
        return sock is not None and _ends(sock) == wanted


def _ends(sock):
    """(local, far) (host, port) of a connected socket; None if it is not connected (or closed)."""
    try:
        return plain_address(sock.getsockname()), plain_address(sock.getpeername())
    except OSError:
        return None


class ResourceLimit:
    """Out of file descriptors (or kernel memory) to accept a client or connect to the server: said once,
    then whoever needs one waits until a session ends (or RESOURCE_BACKOFF seconds) and tries again.

    What obtain() makes, it makes one at a time: a descriptor reserved for a session and closed to make its
    socket or file cannot be taken meanwhile by a client being accepted."""

    def __init__(self, log):
        self.log = log
        self._said = False
        self._freed = threading.Condition()
        self._making = threading.Lock()

    def reached(self, error):
        with self._freed:
            if not self._said:
                self._said = True
                self.log.error('cannot accept more clients: %s; new clients wait until sessions end'
                               % limit_reason(error))
            self._freed.wait(RESOURCE_BACKOFF)

    def freed(self):
        with self._freed:
            self._freed.notify_all()

    def obtain(self, make, timeout=None, abandoned=None, reserved=None):
        """make()'s result, made once the descriptors reserved for it (a list, emptied) are closed; while it
        fails for want of resources, wait as reached() does and try again, for timeout seconds at most (None:
        as long as it takes), unless abandoned() says to stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                with self._making:
                    close_all(reserved or [])
                    return make()
            except OSError as error:
                if (error.errno not in OUT_OF_RESOURCES or (abandoned is not None and abandoned())
                        or (deadline is not None and time.monotonic() > deadline)):
                    raise
                self.reached(error)


def close_all(descriptors):
    """Close the file descriptors of a list, emptying it."""
    while descriptors:
        os.close(descriptors.pop())


def limit_reason(error):
    if error.errno != errno.EMFILE:
        return describe_error(error)
    if resource is None:
        return 'too many open files'
    return 'too many open files (the tool\'s limit is %d: ulimit -n)' % resource.getrlimit(resource.RLIMIT_NOFILE)[0]


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
        self.info = None            # the session as the observer sees it, once connected to the server
        self.handover = StarttlsHandover(self.tls.sees_through_starttls, self.tls.hide_offer)
        self._handover_changed = threading.Condition(threading.Lock())   # guards handover, connections, _aborted
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
            self.server_sock, self.connections[SERVER] = self.upstream.connect(
                self.tls, self.server.take_reserved(self.request, 1))
        except (OSError, UnicodeError) as error:
            self.server.report_failure(self, 'cannot connect to server %s: %s' % (self.upstream, describe_error(error)))
            return
        self.opened = time.time()
        self.info = SessionInfo(self.number, self.opened, plain_address(self.client_address),
                                (self.upstream.host, self.upstream.port))
        if not self.server.session_started(self):       # the tool is stopping
            self.server_sock.close()
            return
        self.log.event('session #%d: connected to server %s' % (self.number, self.upstream))
        announced = False
        try:
            announced = self._announce()
            if announced:
                self._relay()
        finally:
            self.server_sock.close()
            self.log.event('session #%d: closed' % self.number)
            if announced:
                self.observer.session_closed(self.info)

    def _announce(self):
        """Tell the observer of the session, which opens its files in place of the descriptors held for them;
        return whether it takes the session.  Should something else take them first, wait for some (said once)."""
        try:
            return self.server.limit.obtain(lambda: self.observer.session_opened(self.info),
                                            abandoned=lambda: self._aborted,
                                            reserved=self.server.take_reserved(self.request))
        except OSError as error:
            if not self._aborted:
                self.server.report_failure(self, 'cannot save the session of client %s: %s'
                                           % (peer_name(self.client_address), describe_error(error)))
            return False

    def _relay(self):
        pumps = [threading.Thread(target=self._pump, name='pump-%d-%s' % (self.number, side),
                                  args=(side,), daemon=True)
                 for side in (CLIENT, SERVER)]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join()

    def finish(self):
        self.server.session_finished(self)

    def _accept_client(self):
        if not self.tls.from_client:
            return PlainConnection(self.client_sock)
        connection = TlsConnection(self.client_sock, self.tls.listen_context, server_side=True)
        self._handshake(connection, 'the client %s' % peer_name(self.client_address))
        return connection

    def _handshake(self, connection, who):
        """Complete a TLS handshake within its deadline (nobody else uses the socket meanwhile: the other
        pump waits for the upgrade)."""
        try:
            connection.handshake()
        except OSError as error:     # ssl.SSLError and socket.timeout are OSErrors
            raise TlsFailure('TLS handshake with %s failed: %s' % (who, tls_reason(error)))
        self.log.event('session #%d: TLS with %s (%s)' % (self.number, who, connection.describe()))

    def _pump(self, side):
        """Relay what side sends to the other side until side ends or the session aborts."""
        other = SERVER if side == CLIENT else CLIENT
        received = self.observer.received
        info = self.info
        connections = self.connections
        handover = self.handover
        try:
            try:
                while True:
                    at_fault = side
                    data = connections[side].recv()
                    if not data:
                        with self._handover_changed:       # said before the observer hears of the end
                            if not self._aborted:          # else the end is the tool's, not the side's
                                info.ended_first = info.ended_first or side
                        break
                    when = time.time()
                    at_fault = other
                    if handover.over:           # no STARTTLS under way, nor to come: nothing to ask
                        received(info, side, when, data)
                        connections[other].sendall(data)
                    elif side == SERVER:
                        self._relay_server_opening(data, when)
                    else:
                        self._relay_client_opening(data, when)
            finally:
                self.observer.direction_ended(info, side)     # before the other side can learn of the end
        except TlsFailure as failure:
            if not self._aborted:           # not the echo of the other side's failure
                self.info.failure = self.info.failure or str(failure)
                self.server.report_failure(self, str(failure))
            self.abort()
        except OSError as error:
            if not self._aborted:
                reason = '%s connection failed: %s' % (at_fault, describe_error(error))
                self.info.failure = self.info.failure or reason
                self.log.event('session #%d: %s' % (self.number, reason))
            self.abort()
        else:
            self._end_direction(side, other)

    def _end_direction(self, side, other):
        """side ended its sending: tell the other side the same way (close_notify or not), once the
        server's held-back bytes are forwarded."""
        ragged = self.connections[side].ragged_end
        if not self._aborted:
            self.log.event('session #%d: %s ended its sending%s' % (
                self.number, side, ' without TLS close_notify (passed on as such)' if ragged else ''))
        with self._handover_changed:
            stalls = self.handover.stalls_on_end(side)
            held = self.handover.server_ended() if side == SERVER else b''
        if stalls and not self._aborted:
            self.info.failure = self.info.failure or 'STARTTLS: the %s ended before its TLS handshake' % side
            self.server.report_failure(self, self.info.failure)
            self.abort()
        if held:
            _quietly(self.connections[CLIENT].sendall, held)
        _quietly(self.connections[other].shutdown_write, not ragged)

    def _forward(self, side, data, when, sent=None, connection=None):
        """Hand data to the observer and send it (or `sent`) to the other side, once that side is not being
        upgraded; connection: the other side's, its write already counted (_counted_writer)."""
        other = SERVER if side == CLIENT else CLIENT
        if connection is None:
            with self._handover_changed:
                connection = self._counted_writer(other)
        try:
            self.observer.received(self.info, side, when, data)
            connection.sendall(data if sent is None else sent)
        finally:
            with self._handover_changed:
                self.handover.write_ended(other)
                self._handover_changed.notify_all()

    def _counted_writer(self, side):
        """Under _handover_changed: wait until side may be written to, count the write, return side's connection."""
        self._handover_changed.wait_for(lambda: self._aborted or self.handover.may_write(side))
        self.handover.write_started(side)
        return self.connections[side]

    def _relay_server_opening(self, data, when):
        """Relay the server's opening lines, where STARTTLS may be offered and confirmed."""
        with self._handover_changed:
            hidden = self.handover.watch.offers_hidden
            forward, confirmed = self.handover.server_sent(data)
            hid_one = self.handover.watch.offers_hidden > hidden
        if hid_one:
            self.observer.notice(self.info, when, 'STARTTLS: the server\'s offer was hidden from the client '
                                                  '(--no-starttls)')
        if confirmed is None:
            self._forward(SERVER, data, when, sent=forward)
            return
        # Everything after `confirmed` is TLS, and the client starts its handshake as soon as it has the
        # confirmation: the handover is ready for it before it is sent.  The client is written by this pump
        # only, and held off from now on until its upgrade (seen through).
        clear, encrypted = forward[:confirmed], forward[confirmed:]
        self.observer.received(self.info, SERVER, when, data[:len(data) - len(encrypted)])   # what the server sent
        self.connections[CLIENT].sendall(clear)
        if self.handover.sees_through:
            self._upgrade_server(encrypted)
        else:
            self.observer.encrypted(self.info, SERVER, when)
            self.observer.notice(self.info, when, 'STARTTLS: the session is now encrypted and cannot be shown '
                                                  '(give the tool --cert and --key to see through it)')
            if encrypted:
                self.observer.received(self.info, SERVER, when, encrypted)
                self.connections[CLIENT].sendall(encrypted)

    def _upgrade_server(self, received):
        """The tool's own TLS with the server (seen through), once the client's clear writes to it are done."""
        with self._handover_changed:
            self._handover_changed.wait_for(lambda: self._aborted or self.handover.may_upgrade(SERVER))
        connection = TlsConnection(self.server_sock, self.tls.upstream_context, server_side=False,
                                   server_hostname=self.upstream.host, received=received)
        self._handshake(connection, 'the server %s (STARTTLS)' % self.upstream)
        self._upgraded(SERVER, connection)
        self.observer.notice(self.info, time.time(), 'STARTTLS: the tool decrypts this session with its certificate')

    def _relay_client_opening(self, data, when):
        """Relay the client's bytes while a STARTTLS handover may be under way: after the server's
        confirmation, the client's first bytes should start its TLS handshake."""
        with self._handover_changed:
            action = self.handover.client_sent(data)
            connection = None if action in (START_TLS, REFUSE) else self._counted_writer(SERVER)
        if action == REFUSE:
            raise TlsFailure('STARTTLS: the client %s sent clear text instead of starting TLS'
                             % peer_name(self.client_address))
        if action == START_TLS:
            connection = TlsConnection(self.client_sock, self.tls.listen_context, server_side=True, received=data)
            self._handshake(connection, 'the client %s (STARTTLS)' % peer_name(self.client_address))
            self._upgraded(CLIENT, connection)
            return
        if action == ENCRYPTED:
            self.observer.encrypted(self.info, CLIENT, when)
        self._forward(CLIENT, data, when, connection=connection)

    def _upgraded(self, side, connection):
        with self._handover_changed:
            self.connections[side] = connection
            self.handover.upgraded(side)
            self._handover_changed.notify_all()

    def abort(self):
        """End the session now: wake both pumps and close both connections."""
        with self._handover_changed:
            self._aborted = True
            for sock in (self.client_sock, self.server_sock):
                if sock is not None:
                    _quietly(sock.shutdown, socket.SHUT_RDWR)
            self._handover_changed.notify_all()


def peer_name(address):
    """'127.0.0.1:40512' or '[::1]:40512' for a socket address."""
    return host_port(*plain_address(address))     # an IPv4 client on a dual-stack socket as IPv4


def end_a_thread():
    """Start and end a thread: with Python 3.7, the first thread to end loads libgcc_s, which fails (and
    aborts the tool) out of file descriptors; loaded now, it is there when the limit is reached."""
    thread = threading.Thread(target=int)
    thread.start()
    thread.join()


def is_thread_failure(error):
    return 'thread' in str(error)


def thread_failure(error):
    return 'cannot serve it: %s (the limit of threads or of memory is reached)' % (str(error) or 'no thread')


class ListeningServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A threaded TCP server on a ListenAddress: IPv4 and IPv6 at once on all interfaces."""

    allow_reuse_address = True
    daemon_threads = True
    # Clients the kernel queues while the tool cannot accept them (out of file descriptors, or busy): beyond
    # the queue, a client's handshake waits for the kernel's retransmissions, seconds apart, growing.  The
    # kernel caps it at net.core.somaxconn.
    request_queue_size = 1024

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

    def reached_at(self, host):
        """Whether connecting to host (an IP address) on this server's port reaches this server."""
        host = plain_address((host, 0))[0]
        ipv6 = ':' in host
        if host in ('0.0.0.0', '::'):           # connecting to "any address" reaches this machine
            host = '::1' if ipv6 else '127.0.0.1'
        bound = plain_address(self.socket.getsockname())[0]
        if bound not in ('0.0.0.0', '::'):
            return host == bound
        if self.socket.family == socket.AF_INET6:
            serves_ipv4 = not self.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            return (ipv6 or serves_ipv4) and is_local_address(host)
        return not ipv6 and is_local_address(host)


def is_local_address(host):
    """Whether host (an IP address) is one of this machine's: one a socket can be bound to."""
    try:
        with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


class RelayServer(ListeningServer):
    """Listens for CTI clients and runs a Session for each, on its own thread."""

    def __init__(self, listen, upstream, observer, log, tls=None, stop=None):
        """stop: the tool's StopSignals, if any: rung as each session ends, and a client waiting for a file
        descriptor is given up once it is asked to stop."""
        self.upstream = upstream
        self.tls = tls or TlsOptions()
        self.observer = observer
        self.log = log
        self.stop = stop
        self.failures = 0              # sessions that could not start
        self.accepted = 0              # clients accepted
        self._lock = threading.Condition()
        self._numbers = 0
        self._running = 0              # sessions accepted and not finished
        self._sessions = set()         # sessions connected to the server
        self._stopping = False         # abort_sessions() was called: no session may start relaying
        self._reserved = {}            # client socket -> descriptors held for the files of its session
        self.limit = upstream.limit = ResourceLimit(log)
        super().__init__(listen, Session)
        end_a_thread()

    def relays_to_itself(self):
        """Whether the server is the tool itself: the server's address reaches the tool's listening socket."""
        if self.upstream.port != self.port:
            return False
        try:
            found = socket.getaddrinfo(self.upstream.host, self.upstream.port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return False
        return any(self.reached_at(address[0]) for _, _, _, _, address in found)

    def get_request(self):
        """Accept a client, and hold the descriptors its session will need: one for its server connection,
        and those the observer opens for it (ctisave's files).  Out of file descriptors, say so once and wait
        for some, rather than try again and again at once (the listening socket stays readable).

        Held here, before the next client is accepted, a session's descriptors cannot go to clients that
        would then wait for their server connection or their files while no session can run to its end."""
        request, client_address = self.limit.obtain(super().get_request, abandoned=self._stop_requested)
        self.accepted += 1
        reserved = []
        try:
            for _ in range(1 + getattr(self.observer, 'descriptors_per_session', 0)):
                reserved.append(self.limit.obtain(lambda: os.dup(request.fileno())))
        except BaseException:
            close_all(reserved)
            request.close()
            raise
        with self._lock:
            self._reserved[request] = reserved
        return request, client_address

    def take_reserved(self, request, most=None):
        """The descriptors held for request's session (at most `most` of them), now the caller's to close."""
        with self._lock:
            reserved = self._reserved.get(request, [])
            taken = reserved[:most] if most is not None else reserved[:]
            del reserved[:len(taken)]
        return taken

    def shutdown_request(self, request):
        with self._lock:
            reserved = self._reserved.pop(request, [])
        close_all(reserved)
        super().shutdown_request(request)

    def verify_request(self, request, client_address):
        """Refuse a connection that is the tool's own to the server, come back to it: the server's address
        leads to the tool (through a name or an address the start did not recognise as its own)."""
        local_address = _local_address(request)
        if local_address is None or not self.upstream.own.owns(client_address, local_address):
            return True
        self._refuse(client_address, 'the connection to server %s came back to the tool itself (it listens on '
                                     '%s): refused, to end the loop' % (self.upstream, self.listen.describe(self.port)))
        return False

    def process_request(self, request, client_address):
        """Serve the client on a thread of its own, which leaves the stop signals to the main thread."""
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True)
        with self._lock:
            self._running += 1
        try:
            with stop_signals_blocked():
                thread.start()
        except RuntimeError as error:       # can't start new thread: the limit of threads or of memory
            self._ended()
            self._refuse(client_address, thread_failure(error))
            self.shutdown_request(request)

    def handle_error(self, request, client_address):
        """A session failed in a way it did not expect (a bug): report it, keep serving."""
        error = sys.exc_info()[1]
        if isinstance(error, RuntimeError) and is_thread_failure(error):    # a session's own threads
            self._refuse(client_address, thread_failure(error))
            return
        self.log.error('internal error in the session with %s; please report:' % peer_name(client_address))
        sys.stderr.write(shown_traceback())

    def _refuse(self, client_address, reason):
        """A client that cannot be served: one line."""
        with self._lock:
            self.failures += 1
        self.log.error('client %s: %s' % (peer_name(client_address), reason))

    def new_session_number(self):
        with self._lock:
            self._numbers += 1
            return self._numbers

    def session_started(self, session):
        """Count session as relaying, and return True; False once the tool is stopping (it must not start)."""
        with self._lock:
            if self._stopping:
                return False
            self._sessions.add(session)
            return True

    def report_failure(self, session, reason):
        """A session could not start or go on (no server, a failed TLS handshake): say why on one line."""
        with self._lock:
            self.failures += 1
        self.log.error(reason if not self.log.verbose else 'session #%d: %s' % (session.number, reason))

    def session_finished(self, session):
        with self._lock:
            self._sessions.discard(session)
            self._lock.notify_all()
        self._ended()

    def _ended(self):
        with self._lock:
            self._running -= 1
            self._lock.notify_all()
        self.limit.freed()
        if self.stop is not None:
            self.stop.ring()

    def _stop_requested(self):
        return self.stop is not None and self.stop.requested

    def sessions_ended(self):
        """Whether every accepted session has finished."""
        with self._lock:
            return not self._running

    def abort_sessions(self):
        """End every session that relays, and let no other start."""
        with self._lock:
            self._stopping = True
            sessions = list(self._sessions)
        for session in sessions:
            session.info.failure = session.info.failure or 'the tool stopped'
            session.abort()

    def wait_relaying_sessions(self, timeout):
        """Wait until every session that started relaying has told the observer of its end; return whether
        they all did within timeout seconds.  (Sessions still connecting to the server relay nothing.)"""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._sessions:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

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
