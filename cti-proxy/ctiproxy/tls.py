"""TLS: connections that one thread reads while another writes, and STARTTLS spotting.

OpenSSL's state must not be used by two threads at once, and each session has a
reading pump and a writing pump on every connection.  So TLS runs over memory
buffers (ssl.SSLObject): the TLS state is touched under a lock, while the socket is
read and written outside it.
"""

import json
import os
import socket
import ssl
import threading
import time


from .filters import CLIENT, SERVER


def handshake_seconds():
    """How long a whole TLS handshake may take: 15 seconds, as long as connecting to the server (the
    tests shorten it with CTI_PROXY_TEST_HANDSHAKE_SECONDS, to check the deadline quickly)."""
    try:
        return float(os.environ['CTI_PROXY_TEST_HANDSHAKE_SECONDS'])
    except (KeyError, ValueError):
        return 15.0


HANDSHAKE_TIMEOUT = handshake_seconds()


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
    ragged_end = False      # a plain stream's end is always its end

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

    def shutdown_write(self, close_notify=True):
        self.sock.shutdown(socket.SHUT_WR)


class TlsConnection:
    """TLS over a socket, for one reading thread and one writing thread at once.

    received: bytes already read from the socket that belong to the TLS stream
    (a ClientHello that arrived with the plain traffic).

    Records go on the socket in the order the TLS state made them, through one queue.
    The writing thread sends them, waiting for the socket as long as it takes.  The
    reading thread only has an answer now and then (to a TLS 1.3 key update): it sends
    it if the socket is free and takes it at once, and otherwise leaves it to the
    writing thread, so that a peer that does not read never holds back what it sends.
    """

    encrypted = True

    def __init__(self, sock, context, server_side, server_hostname=None, received=b''):
        self.sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self._state = threading.Lock()     # guards the TLS state and _unsent
        self._sending = threading.Lock()   # held by the thread putting records on the socket
        self._unsent = bytearray()         # records made and not yet on the socket, in order
        self._raw_size = ReadSize()        # for reading the socket
        self._size = ReadSize()            # for reading decrypted bytes
        self.ragged_end = False            # the peer's stream ended without close_notify
        self.first_received = b''          # the first bytes read from the socket (is the peer speaking TLS?)
        if received:
            self._incoming.write(received)

    def handshake(self, timeout=HANDSHAKE_TIMEOUT):
        """Complete the TLS handshake within timeout seconds in all (however slowly the peer's bytes
        come); raise ssl.SSLError or OSError (socket.timeout) if it fails."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                with self._state:
                    try:
                        self._tls.do_handshake()
                        done = True
                    except ssl.SSLWantReadError:
                        done = False
                    self._unsent += self._outgoing.read()
                self._wait_for_the_deadline(deadline)
                self._sending.acquire()
                self._send_unsent_and_release()
                if done:
                    return
                self._wait_for_the_deadline(deadline)
                if not self._receive():
                    raise ConnectionError('the peer closed the connection during the TLS handshake')
        finally:
            self.sock.settimeout(None)

    def _wait_for_the_deadline(self, deadline):
        """Let the next socket operation take until deadline at most."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout('timed out')
        self.sock.settimeout(remaining)

    def recv(self):
        """Decrypted bytes, b'' at the end of the stream (ragged_end tells how it ended)."""
        while True:
            with self._state:
                try:
                    data = self._tls.read(self._size.next)
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:
                    data = b''                      # close_notify
                self._unsent += self._outgoing.read()   # e.g. an answer to a TLS 1.3 key update
                answer = bool(self._unsent)
            if answer:
                self._send_unsent_if_free()
            if data is not None:
                self._size.update(len(data))
                return data
            if not self._receive():
                # No whole record was left unread (the read above wanted more): the peer ended
                # its stream without close_notify.
                self.ragged_end = True
                return b''

    def sendall(self, data):
        view = memoryview(data)
        self._sending.acquire()
        try:
            while view:
                with self._state:
                    written = self._tls.write(view)
                    self._unsent += self._outgoing.read()
                    chunk, self._unsent = self._unsent, bytearray()
                view = view[written:]
                self.sock.sendall(chunk)
        except BaseException:
            self._sending.release()
            raise
        self._send_unsent_and_release()

    def shutdown_write(self, close_notify=True):
        """End the sending, with close_notify (or without, to pass on a peer's ragged end); the other
        direction goes on.

        unwrap() sends close_notify, then reads the peer's records looking for its
        close_notify, and would throw away the application data in them: so it is given
        none (the records not yet decrypted are taken out of its way, and put back)."""
        self._sending.acquire()
        try:
            if close_notify:
                self._make_close_notify()
            self._send_unsent_and_release()
        finally:
            self.sock.shutdown(socket.SHUT_WR)

    def _make_close_notify(self):
        with self._state:
            waiting = self._incoming.read()
            try:
                self._tls.unwrap()
            except ssl.SSLError:
                pass                    # SSLWantReadError: close_notify is made; the peer's is not awaited
            if waiting:
                self._incoming.write(waiting)
            self._unsent += self._outgoing.read()

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

    def _send_unsent_and_release(self):
        """Send every queued record, waiting for the socket, then let go of it (_sending is held).

        The queue is found empty and _sending released in one step under _state: a reader
        that queues an answer then either finds _sending free or is sure it will be sent."""
        try:
            while True:
                with self._state:
                    chunk, self._unsent = self._unsent, bytearray()
                    if not chunk:
                        self._sending.release()
                        return
                self.sock.sendall(chunk)
        except BaseException:
            self._sending.release()
            raise

    def _send_unsent_if_free(self):
        """Send what the socket takes now of the queued records, without waiting for it or for the writer
        (which sends the rest)."""
        with self._state:
            if not self._unsent or not self._sending.acquire(blocking=False):
                return
            chunk, self._unsent = self._unsent, bytearray()
        sent = 0
        try:
            sent = self.sock.send(chunk, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            with self._state:
                self._unsent[:0] = chunk[sent:]
                self._sending.release()

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


class CertificateFileError(ValueError):
    """--cert or --key cannot be used; the message names the file at fault and what is wrong."""


def load_certificate(context, cert, key):
    """Load --cert and --key into a server context, or raise CertificateFileError.  OpenSSL says only 'PEM lib'
    for a file that is not what it should be, so the certificate is first read alone, to tell which it is."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError:
        raise CertificateFileError('cannot use --cert %s: no PEM certificate in it' % cert)
    except (OSError, ValueError) as error:
        raise CertificateFileError('cannot use --cert %s: %s' % (cert, tls_reason(error)))
    asked = []

    def no_passphrase():                    # an encrypted key: refused, where OpenSSL would ask on the terminal
        asked.append(True)
        return b''
    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as error:
        if error.reason == 'KEY_VALUES_MISMATCH':
            raise CertificateFileError('cannot use --key %s: it is not the key of --cert %s' % (key, cert))
        if asked:
            raise CertificateFileError('cannot use --key %s: it is encrypted; give a key without a passphrase' % key)
        if error.reason is None:
            raise CertificateFileError('cannot use --key %s: no PEM private key in it' % key)
        raise CertificateFileError('cannot use --cert %s and --key %s: %s' % (cert, key, tls_reason(error)))
    except (OSError, ValueError) as error:
        raise CertificateFileError('cannot use --key %s: %s' % (key, tls_reason(error)))


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


# What the relay does with the client's bytes while a STARTTLS handover is under way
RELAY = 'relay'                 # forward them as they are
ENCRYPTED = 'encrypted'         # the client's TLS starts with them, passed through: say so, forward them
START_TLS = 'start TLS'         # the client's TLS starts with them, seen through: the tool's handshake with it
REFUSE = 'refuse'               # clear text where the client's TLS should start (seen through)

TLS_HANDSHAKE_RECORD = b'\x16'


class StarttlsHandover:
    """A session's STARTTLS as both pumps see it, from the server's opening to the end of the upgrade.

    No I/O and no lock of its own: the session calls it under one lock (and waits on that
    lock's condition), so a decision and the state it changes are one step.  The server's
    opening is read for the confirmation (StarttlsWatch); after it, the client's next bytes
    should be its TLS.  Seen through, both sides are upgraded from the confirmation on:
    nothing is written to a side while it is (its handshake uses the socket), and the
    server's handshake waits for the writes to it already under way (what the client sent
    before the confirmation goes to the server in clear, as it was sent).  `over` once
    nothing more can change: the pumps then relay without asking.
    """

    def __init__(self, sees_through=False, hide_offer=False):
        self.watch = StarttlsWatch(hide_offer)
        self.sees_through = sees_through
        self.client_tls_next = False    # the server confirmed: the client's TLS comes next
        self.upgrading = set()          # the sides whose TLS handshake is awaited (seen through)
        self.over = False
        self._writes = {CLIENT: 0, SERVER: 0}     # writes under way to each side

    def server_sent(self, data):
        """The server's bytes: return (bytes to forward, offset in them just past the confirmation, or None)."""
        forward, confirmed = self.watch.feed(data)
        if confirmed is not None:
            self.client_tls_next = True
            if self.sees_through:
                self.upgrading.update((CLIENT, SERVER))
        self._check_over()
        return forward, confirmed

    def server_ended(self):
        """The server ended its sending: return what the watch still holds back, to forward now."""
        held = self.watch.finish()
        self._check_over()
        return held

    def client_sent(self, data):
        """What to do with the client's bytes: RELAY, ENCRYPTED, START_TLS or REFUSE."""
        if not self.client_tls_next:
            return RELAY
        if not data.startswith(TLS_HANDSHAKE_RECORD):
            return REFUSE if self.sees_through else RELAY     # passed through: clear text until it starts
        self.client_tls_next = False
        self._check_over()
        return START_TLS if self.sees_through else ENCRYPTED

    def may_write(self, side):
        """Whether bytes may be written to side now (not during its upgrade)."""
        return side not in self.upgrading

    def write_started(self, side):
        self._writes[side] += 1

    def write_ended(self, side):
        self._writes[side] -= 1

    def may_upgrade(self, side):
        """Whether side's TLS handshake may start: no write to it is under way."""
        return self._writes[side] == 0

    def upgraded(self, side):
        self.upgrading.discard(side)
        self._check_over()

    def stalls_on_end(self, side):
        """Whether side ending its sending leaves the other pump waiting for ever (for side's upgrade)."""
        return side in self.upgrading

    def _check_over(self):
        self.over = not (self.watch.watching or self.client_tls_next or self.upgrading)
