"""The web view's HTTP server: the page, its JSON API and its event stream, on a thread of its own.

Every request needs the run's token in its URL (never a cookie: browsers send a cookie of 127.0.0.1 to every
port of it, another local user's server too) and a Host header
naming the address the server is bound to (no DNS rebinding); every answer carries a strict
Content-Security-Policy.  See the API in the README (the web view).
"""

import hmac
import http.server
import io
import ipaddress
import json
import os
import secrets
import socket
import threading
import time
import urllib.parse

from .. import __version__
from . import DEFAULT_PORT
from ..events import host_port
from ..relay import describe_error
from .store import QueryError, finite_numbers

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'page.html')
BATCH_INTERVAL = 0.2        # seconds: an event stream sends at most one batch this often
KEEPALIVE = 15.0            # seconds of quiet after which an event stream sends a comment
IDLE_TIMEOUT = 120          # seconds an answer may wait for the client to read it
HEAD_TIMEOUT = 10           # seconds a connection has to send a request's head (its first, or the next one)
MAX_CONNECTIONS = 64        # web connections at once (event streams included); beyond, a new one is closed at once,
#                             so that the web view never takes the descriptors and threads the relay needs
MAX_DIGITS = 4300            # digits of a number in a path: a recording's session number may have as many
BEYOND_DIGITS = 10 ** MAX_DIGITS
DISCONNECTED = (ConnectionError, socket.timeout, OSError)

CSP = ("default-src 'none'; script-src 'self' 'nonce-{0}'; style-src 'self' 'nonce-{0}'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class WebAddressError(Exception):
    """The address given to --web cannot be used, or the page cannot be read (the message names it)."""


def parse_web_address(text):
    """--web's value: 'PORT', 'ADDR:PORT' or '[IPV6]:PORT' -> (address, port); '' is the default."""
    if not text:
        return '127.0.0.1', DEFAULT_PORT
    if text.isdigit():
        host, port = '127.0.0.1', text
    elif text.startswith('['):
        host, bracket, rest = text[1:].partition(']')
        if not bracket or not rest.startswith(':'):
            raise WebAddressError('--web: not PORT, ADDR:PORT or [IPV6]:PORT: %r' % text)
        port = rest[1:]
    else:
        host, _, port = text.rpartition(':')
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise WebAddressError('--web: not PORT, ADDR:PORT or [IPV6]:PORT: %r' % text)
    return host, int(port)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = MAX_CONNECTIONS

    def __init__(self, family, address, view, max_connections=MAX_CONNECTIONS):
        self.address_family = family
        self.view = view
        self.max_connections = max_connections
        self._connections = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        """A thread for the connection, or beyond max_connections at once, the connection closed at once."""
        if not self._connections.acquire(blocking=False):
            self.view.log.event('web view: %d connections already: %s closed'
                                % (self.max_connections, host_port(*client_address[:2])))
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:           # no thread for it: its place given back (the caller closes it)
            self._connections.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def handle_error(self, request, client_address):
        """A client that went away, or anything else: one line with --verbose, never a traceback."""
        self.view.log.event('web view: a request from %s failed' % host_port(*client_address[:2]))


class WebServer:
    """The web view's server: bind at once (so that a taken port is known before the tool starts), serve
    from start() on, until stop()."""

    def __init__(self, store, address, log):
        self.store = store
        self.log = log
        self.token = secrets.token_urlsafe(18)
        self.stopping = threading.Event()
        host, port = address
        try:
            info = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
            family, _, _, _, sockaddr = info[0]
            self.httpd = _HttpServer(family, sockaddr[:2], self)
        except (OSError, UnicodeError) as error:
            raise WebAddressError('cannot serve the web view on %s: %s'
                                  % (host_port(host, port), describe_error(error)))
        self.address = sockaddr[0]
        self.port = self.httpd.server_address[1]
        self.named = host
        self.loopback = _is_loopback(self.address)
        self.wildcard = _is_wildcard(self.address)
        try:
            with open(PAGE, encoding='utf-8') as page:
                self.page = page.read()
        except (OSError, ValueError) as error:      # an install that lost it
            self.httpd.server_close()
            raise WebAddressError('cannot read the web view\'s page %s: %s' % (PAGE, describe_error(error)))
        self._thread = None

    @property
    def url(self):
        shown = self.address if not self.wildcard else ('127.0.0.1' if ':' not in self.address else '::1')
        return 'http://%s/?token=%s' % (host_port(shown, self.port), self.token)

    def exposed_warning(self):
        """The warning line for an address other than loopback, or None."""
        if self.loopback:
            return None
        return ('warning: the web view listens on %s: anyone who can reach it and has the token sees the traffic, '
                'passwords included' % host_port(self.address, self.port))

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.25,), name='web view', daemon=True)
        self._thread.start()

    def stop(self):
        """End the event streams, stop serving, close the port."""
        self.stopping.set()
        self.store.stop()
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()

    def allows_host(self, host):
        """Whether the Host header names this server (loopback: any loopback name; all interfaces: any IP address)."""
        if host is None:
            return False
        host = host.strip().lower()
        name, port = _split_host(host)
        if name is None or port != self.port:
            return False
        if name in (self.address.lower(), self.named.lower()):
            return True
        if self.loopback:
            return name in ('localhost', '127.0.0.1', '::1')
        if self.wildcard:
            return name == 'localhost' or _is_address(name)
        return False

    def allows_token(self, query):
        given = query.get('token', [None])[0]
        return given is not None and hmac.compare_digest(given.encode('utf-8', 'surrogateescape'),
                                                         self.token.encode('ascii'))


def _split_host(host):
    """'name:port' or '[v6]:port' (port 80 if none) -> (name, port); (None, None) if it is neither."""
    if host.startswith('['):
        name, bracket, rest = host[1:].partition(']')
        if not bracket:
            return None, None
        port = rest[1:] if rest.startswith(':') else ('80' if not rest else '')
    else:
        name, colon, port = host.partition(':')
        port = port if colon else '80'
    return (name, int(port)) if port.isdigit() else (None, None)


def _is_address(name):
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(address):
    return _is_address(address) and ipaddress.ip_address(address).is_loopback


def _is_wildcard(address):
    return _is_address(address) and ipaddress.ip_address(address).is_unspecified


class _HeadDeadlineReader(io.RawIOBase):
    """A connection's bytes, each read waiting at most until the handler's head_deadline (when it has one): a
    client that trickles its request's head a byte at a time still has HEAD_TIMEOUT for the whole head."""

    def __init__(self, handler):
        super().__init__()
        self._handler = handler

    def readable(self):
        return True

    def readinto(self, buffer):
        deadline = self._handler.head_deadline
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout('the request\'s head did not come within %g s' % HEAD_TIMEOUT)
            self._handler.connection.settimeout(remaining)
        return self._handler.connection.recv_into(buffer)


class NotFound(Exception):
    """404, with this text as the JSON error."""


class BadRequest(Exception):
    """400, with this text as the JSON error."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'ctispy-web'
    sys_version = ''
    timeout = HEAD_TIMEOUT          # set on the socket at setup(): the head of a request comes within it
    head_deadline = None            # monotonic time by which the head being read must have come

    # -- plumbing --

    def setup(self):
        super().setup()
        self.rfile = io.BufferedReader(_HeadDeadlineReader(self))

    def handle_one_request(self):
        self.head_deadline = time.monotonic() + self.timeout
        try:
            super().handle_one_request()
        finally:
            self.head_deadline = None

    def handle(self):
        try:
            super().handle()
        except DISCONNECTED:
            self.close_connection = True

    def log_message(self, format, *args):
        """With --verbose, a line per request (the token left out)."""
        view = self.server.view
        view.log.event('web view: %s %s' % (self.address_string(), (format % args).replace(view.token, '...')))

    def send_error(self, code, message=None, explain=None):
        self.close_connection = True
        self._send(code, ('%d %s\n' % (code, message or self.responses.get(code, ('',))[0])).encode(),
                   'text/plain; charset=utf-8')

    def _send(self, status, body, content_type, headers=(), nonce=None):
        self.send_response(status)
        self._common_headers(nonce)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if getattr(self, 'command', None) != 'HEAD':
            self.wfile.write(body)

    def _common_headers(self, nonce=None):
        self.send_header('Content-Security-Policy', CSP.format(nonce or secrets.token_urlsafe(16)))
        self.send_header('X-Content-Type-Options', 'nosniff')
        self.send_header('Referrer-Policy', 'no-referrer')
        self.send_header('Cache-Control', 'no-store')

    def _json(self, value, status=200):
        body = json.dumps(value, separators=(',', ':'), allow_nan=False).encode('ascii')
        self._send(status, body, 'application/json')

    def _refuse(self, status, text):
        self._send(status, (text + '\n').encode(), 'text/plain; charset=utf-8')

    # -- requests --

    def do_GET(self):
        self.head_deadline = None
        self.connection.settimeout(IDLE_TIMEOUT)
        try:
            self._answer()
        finally:
            self.connection.settimeout(HEAD_TIMEOUT)     # the next request's head on a kept connection

    def _answer(self):
        view = self.server.view
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if not view.allows_host(self.headers.get('Host')):
            return self._refuse(403, 'forbidden: this Host is not the web view\'s address')
        if not view.allows_token(query):
            return self._refuse(403, 'forbidden: open the URL with the token that ctispy printed')
        try:
            self._route(url.path, query)
        except NotFound as error:
            self._json({'error': str(error)}, 404)
        except BadRequest as error:
            self._json({'error': str(error)}, 400)
        except DISCONNECTED:
            raise
        except Exception as error:      # a bug: said on one line, the tool goes on
            view.log.say('web view: cannot answer %s: %s: %s' % (url.path, error.__class__.__name__, error))
            self.close_connection = True
            self._json({'error': 'internal error'}, 500)

    do_HEAD = do_GET

    def _not_allowed(self):
        self.close_connection = True
        self._send(405, b'only GET and HEAD\n', 'text/plain; charset=utf-8', [('Allow', 'GET, HEAD')])

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_CONNECT = do_TRACE = _not_allowed

    def _route(self, path, query):
        store = self.server.view.store
        if path == '/':
            return self._page()
        if path == '/api/info':
            return self._json(dict(store.get_info(), version=__version__))
        if path == '/api/sessions':
            return self._json({'sessions': store.sessions()})
        if path == '/api/events':
            return self._events()
        parts = path.split('/')
        number = _whole_number(parts[3]) if len(parts) >= 5 and parts[:3] == ['', 'api', 'sessions'] else None
        if number is None:
            raise NotFound('no such page: %s' % path)
        try:
            self._session_route(store, number, parts[4:], query)
        except KeyError:
            raise NotFound('no such session or row')

    def _session_route(self, store, number, rest, query):
        if rest == ['rows']:
            return self._json(store.rows(number, _number(query, 'from', 0), _number(query, 'count', 100)))
        if len(rest) == 2 and rest[0] == 'rows' and _whole_number(rest[1]) is not None:
            return self._detail(store.row(number, _whole_number(rest[1])))
        if rest == ['match']:
            try:
                return self._json(store.match(number, query.get('q', [''])[0]))
            except QueryError as error:
                raise BadRequest(str(error))
        if rest == ['timeline']:
            return self._json(store.timeline(number))
        if rest == ['download']:
            return self._download(number, store.download(number))
        raise NotFound('no such page: %s' % '/'.join(rest))

    def _download(self, number, records):
        """The session's records, written a batch at a time as they are made (not one copy of the whole session):
        their length is not known before, so the connection closes at the end."""
        self.close_connection = True
        self.send_response(200)
        self._common_headers()
        self.send_header('Content-Type', 'application/x-ndjson')
        self.send_header('Content-Disposition', 'attachment; filename="cti-session-%d.jsonl"' % number)
        self.send_header('Connection', 'close')
        self.end_headers()
        if self.command == 'HEAD':
            return
        for batch in records:
            self.wfile.write(batch)

    def _detail(self, detail):
        try:
            return self._json(detail)
        except ValueError:                      # NaN or Infinity, which JSON lacks: as their text
            try:
                return self._json(dict(detail, message=finite_numbers(detail['message'])))
            except (ValueError, RecursionError):
                return self._json(dict(detail, message=None))
        except RecursionError:                  # nested deeper than json writes: the line says it
            return self._json(dict(detail, message=None))

    def _page(self):
        nonce = secrets.token_urlsafe(16)
        body = self.server.view.page.replace('{{NONCE}}', nonce).encode('utf-8')
        self._send(200, body, 'text/html; charset=utf-8', nonce=nonce)

    def _events(self):
        """The event stream: `sessions` and `rows` events, at most one batch per BATCH_INTERVAL, until the tool
        stops or the client goes away."""
        view = self.server.view
        store = view.store
        self.close_connection = True
        self.send_response(200)
        self._common_headers()
        self.send_header('Content-Type', 'text/event-stream')
        self.send_header('Connection', 'close')
        self.end_headers()
        if self.command == 'HEAD':
            return
        self.wfile.write(b'retry: 2000\n\n')
        version = None
        while not view.stopping.is_set():
            whole, news, version = store.news(version)
            if news is not None:
                batch = [_event('sessions', {'all': whole, 'sessions': [summary for summary, _ in news]})]
                batch.extend(_event('rows', {'session': summary['number'], 'total': total}) for summary, total in news)
                self.wfile.write(b''.join(batch))
            self.wfile.flush()
            sent = time.monotonic()
            while True:
                now_version, stopped = store.wait(version, KEEPALIVE)
                if stopped:
                    return
                if now_version != version:
                    break
                self.wfile.write(b': keepalive\n\n')
                self.wfile.flush()
            if view.stopping.wait(max(0.0, sent + BATCH_INTERVAL - time.monotonic())):
                return


def _event(name, data):
    return ('event: %s\ndata: %s\n\n' % (name, json.dumps(data, separators=(',', ':')))).encode('ascii')


def _number(query, name, default):
    values = query.get(name)
    if not values:
        return default
    number = _whole_number(values[0])
    if number is None:
        raise BadRequest('%s: not a number: %r' % (name, values[0][:40]))
    return number


def _whole_number(text):
    """ASCII digits as a number (more than MAX_DIGITS, as many as Python reads in JSON: a number beyond any kept),
    else None: not str.isdigit, which '²' passes and int() refuses, nor int() of more digits, which it refuses."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= MAX_DIGITS else BEYOND_DIGITS
