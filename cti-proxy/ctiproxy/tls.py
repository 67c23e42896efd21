"""TLS: connections that one thread reads while another writes, and STARTTLS spotting.

OpenSSL's state must not be used by two threads at once, and each session has a
reading pump and a writing pump on every connection.  So TLS runs over memory
buffers (ssl.SSLObject): the TLS state is touched under a lock, while the socket is
read and written outside it.
"""

import json
import socket
import ssl
import threading


class ReadSize:
    """How much the next read asks for: a little for interactive traffic, a lot during a burst.

    recv(n) allocates n bytes before it knows how many will come: asking for 1 MiB on
    every read costs a small message tens of microseconds (a fresh mapping of memory
    each time), while asking for 64 KiB during a burst costs many more trips through
    the interpreter.  So a read that brought 64 KiB or more is followed by a large one.
    """

    SMALL = 64 * 1024
    LARGE = 1024 * 1024

    def __init__(self):
        self.next = self.SMALL

    def update(self, count):
        self.next = self.LARGE if count >= self.SMALL else self.SMALL


class PlainConnection:
    """A socket as the pumps use it."""

    encrypted = False

    def __init__(self, sock):
        self.sock = sock
        self.sendall = sock.sendall
        self._recv = sock.recv
        self._size = ReadSize()

    def recv(self):
        """The next bytes received, b'' at the end of the stream."""
        data = self._recv(self._size.next)
        self._size.update(len(data))
        return data

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)


class TlsConnection:
    """TLS over a socket, for one reading thread and one writing thread at once.

    received: bytes already read from the socket that belong to the TLS stream
    (a ClientHello that arrived with the plain traffic).
    """

    encrypted = True

    def __init__(self, sock, context, server_side, server_hostname=None, received=b''):
        self.sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self._state = threading.Lock()     # guards the TLS state
        self._sending = threading.Lock()   # keeps TLS records in order on the socket
        self._raw_size = ReadSize()        # for reading the socket
        self._size = ReadSize()            # for reading decrypted bytes
        self.first_received = b''          # the first bytes read from the socket (is the peer speaking TLS?)
        if received:
            self._incoming.write(received)

    def handshake(self):
        """Complete the TLS handshake; raise ssl.SSLError or OSError if it fails."""
        while True:
            with self._state:
                try:
                    self._tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
            self._flush()
            if done:
                return
            if not self._receive():
                raise ConnectionError('the peer closed the connection during the TLS handshake')

    def recv(self):
        """Decrypted bytes, b'' at the end of the stream."""
        while True:
            with self._state:
                try:
                    data = self._tls.read(self._size.next)
                except ssl.SSLWantReadError:
                    data = None
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    data = b''
                pending = self._outgoing.pending
            if pending:
                self._flush()                  # e.g. an answer to a TLS 1.3 key update
            if data is not None:
                self._size.update(len(data))
                return data
            if not self._receive():
                return b''

    def sendall(self, data):
        view = memoryview(data)
        with self._sending:
            while view:
                with self._state:
                    written = self._tls.write(view)
                    encrypted = self._outgoing.read()
                view = view[written:]
                self.sock.sendall(encrypted)

    def shutdown_write(self):
        """Say close_notify, then end the socket's sending; the other direction goes on."""
        with self._sending:
            with self._state:
                try:
                    self._tls.unwrap()
                except ssl.SSLError:
                    pass                # SSLWantReadError: we do not wait for the peer's close_notify
                encrypted = self._outgoing.read()
            if encrypted:
                self.sock.sendall(encrypted)
        self.sock.shutdown(socket.SHUT_WR)

    def _receive(self):
        """Move bytes from the socket into the TLS state; False at the socket's end."""
        data = self.sock.recv(self._raw_size.next)
        self._raw_size.update(len(data))
        if not data:
            return False
        self._note_first_bytes(data)
        with self._state:
            self._incoming.write(data)
        return True

    def _note_first_bytes(self, data):
        if len(self.first_received) < TLS_RECORD_HEADER:
            self.first_received += data[:TLS_RECORD_HEADER - len(self.first_received)]

    def _flush(self):
        with self._sending:
            with self._state:
                encrypted = self._outgoing.read()
            if encrypted:
                self.sock.sendall(encrypted)

    def describe(self):
        return '%s, %s' % (self._tls.version(), self._tls.cipher()[0])


TLS_RECORD_HEADER = 5                  # content type, version (2 bytes), length (2 bytes)
TLS_CONTENT_TYPES = range(20, 25)      # change_cipher_spec, alert, handshake, application_data, heartbeat


def starts_like_tls(data):
    """Whether data can be the start of TLS records: a content type, then a 3.x protocol version."""
    return bool(data) and data[0] in TLS_CONTENT_TYPES and data[1:2] in (b'', b'\x03')


class ClearTextAnswer(ConnectionError):
    """The peer of a TLS handshake answered with bytes that are not TLS."""


def tls_reason(error):
    """A short reason for a TLS failure."""
    if isinstance(error, ssl.SSLCertVerificationError) and getattr(error, 'verify_message', None):
        return 'certificate verify failed: %s' % error.verify_message
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    return error.strerror or str(error) or error.__class__.__name__


class TlsOptions:
    """What a tool does with TLS; by default, nothing."""

    def __init__(self, upstream_context=None, to_server=False, listen_context=None, from_client=False,
                 hide_offer=False, warnings=()):
        self.warnings = list(warnings)         # to say on stderr once the tool listens
        self.upstream_context = upstream_context   # TLS to the server, checking it: --tls, STARTTLS seen through
        self.to_server = to_server             # --tls: TLS to the server from the first byte
        self.listen_context = listen_context   # TLS to clients, with the tool's certificate (--cert, --key)
        self.from_client = from_client         # --listen-tls: TLS from the client from the first byte
        self.hide_offer = hide_offer           # --no-starttls

    @property
    def sees_through_starttls(self):
        return self.listen_context is not None and self.upstream_context is not None


class TlsFailure(Exception):
    """A TLS handshake failed; the message names the side and the reason."""


# -- STARTTLS --

OFFER = 'offer'
CONFIRMED = 'confirmed'


def starttls_kind(line):
    """OFFER for the server's {"class": "starttls"}, CONFIRMED for its {"class": "starttls",
    "starttls": true}, None for any other line."""
    if b'starttls' not in line:
        return None
    try:
        message = json.loads(line.decode('utf-8'))
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or message.get('class') != 'starttls':
        return None
    if message.get('starttls') is True:
        return CONFIRMED
    if 'starttls' not in message and 'status' not in message:
        return OFFER
    return None


class StarttlsWatch:
    """Reads the server's opening lines in the relay, for the STARTTLS offer and confirmation.

    STARTTLS happens before the login, so the watch ends after WATCH_LIMIT bytes of
    the server's traffic (or at the confirmation): the rest of the session costs
    nothing.  With hide_offer, the offer is removed from what the client gets, and
    an unfinished short line is held back until its end shows whether it is one.
    """

    WATCH_LIMIT = 64 * 1024    # the opening (banner, offer, answer, confirmation) is under 1 KiB
    SHORT_LINE = 4096          # a STARTTLS line is much shorter

    def __init__(self, hide_offer=False):
        self.hide_offer = hide_offer
        self.watching = True
        self.offers_hidden = 0
        self._seen = 0
        self._partial = b''        # the unfinished line (held back when hiding offers)
        self._long_line = False    # the unfinished line is too long to be a STARTTLS line

    def feed(self, data):
        """Return (bytes to forward, offset in them just past the confirmation, or None)."""
        if not self.watching:
            return data, None
        self._seen += len(data)
        if b'starttls' in data or b'starttls' in self._partial + data[:8]:
            forward, confirmed = self._read_lines(data)
        else:                               # no STARTTLS line ends here: no line to read
            last = data.rfind(b'\n') + 1
            forward = [data]
            if last:
                if self.hide_offer:
                    forward = [b'' if self._long_line else self._partial, data[:last]]
                self._partial, self._long_line = b'', False
            elif self.hide_offer:
                forward = []
            forward.append(self._keep_unfinished(data[last:]))
            confirmed = None
        if self._seen > self.WATCH_LIMIT and self.watching:
            self.watching = False
            if self.hide_offer:
                forward.append(self._partial)
            self._partial = b''
        return b''.join(forward), confirmed

    def finish(self):
        """The server ended: return what is still held back (hiding offers), to forward now."""
        held = self._partial if self.hide_offer else b''
        self._partial, self.watching = b'', False
        return held

    def _read_lines(self, data):
        """Read each line that data completes; return (pieces to forward, confirmation offset)."""
        forward = [] if self.hide_offer else [data]
        start = 0
        while True:
            end = data.find(b'\n', start)
            if end < 0:
                break
            piece = data[start:end + 1]
            start = end + 1
            if self._long_line:
                self._long_line = False
                if self.hide_offer:
                    forward.append(piece)
                continue
            line, self._partial = self._partial + piece, b''
            kind = starttls_kind(line)
            if self.hide_offer:
                if kind == OFFER:
                    self.offers_hidden += 1
                else:
                    forward.append(line)
            if kind == CONFIRMED:       # the rest is TLS: stop reading
                self.watching = False
                if not self.hide_offer:
                    return forward, end + 1
                forward.append(data[start:])
                return forward, sum(len(part) for part in forward[:-1])
        forward.append(self._keep_unfinished(data[start:]))
        return forward, None

    def _keep_unfinished(self, rest):
        """Keep the start of an unfinished line; return what of it to forward now."""
        if self._long_line:
            return rest if self.hide_offer else b''
        self._partial += rest
        if len(self._partial) <= self.SHORT_LINE:
            return b''                  # held back when hiding offers; already forwarded otherwise
        held, self._partial, self._long_line = self._partial, b'', True
        return held if self.hide_offer else b''
