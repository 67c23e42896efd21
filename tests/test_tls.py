"""End-to-end tests of encrypted CTI: --tls, --listen-tls, STARTTLS seen through (--cert/--key) or passed
through, and --no-starttls.  The real tools run between a scripted client and server that speak TLS with
the standard ssl module.

The certificates in tests/certs/ were made with openssl by tests/certs/make.sh (self-signed, EC P-256, valid
2000-2100): server.pem (CN=localhost, IP:127.0.0.1) is the scripted server's, trusted by the tools with
--tls-ca; tool.pem is the tool's own (--cert/--key), trusted by the scripted client; other.pem (for
other.invalid) is trusted by nobody.
"""

import json
import os
import re
import signal
import socket
import ssl
import tempfile
import threading
import unittest

from tests.harness import (TIMEOUT, Tool, exchange, in_parallel, parse_spy_output, read_fd_until_all,
                           read_line_unbuffered, recv_exactly, recv_until_eof, recv_until_eof_or_reset, seeded_rng,
                           send_in_pieces)

CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'certs')

OFFER = b'{"class": "starttls"}\n'
ANSWER = b'{"class": "starttls", "status": true}\n'
CONFIRM = b'{"class": "starttls", "starttls": true}\n'
BANNER = b'XiVO CTI Server Version 1.2.3\n'
C2S, S2C = 'Client > Server', 'Server > Client'


def pem(name):
    return os.path.join(CERTS, name + '.pem')


def key(name):
    return os.path.join(CERTS, name + '.key')


TO_SERVER = ('--tls', '--tls-ca', pem('server'))                       # --tls, trusting the scripted server
LISTEN = ('--listen-tls', '--cert', pem('tool'), '--key', key('tool'))
SEE_THROUGH = ('--cert', pem('tool'), '--key', key('tool'), '--tls-ca', pem('server'))


def serving(name='server'):
    """A TLS server context with one of the test certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem(name), key(name))
    return context


def trusting(name):
    """A TLS client context that trusts one of the test certificates (and checks the host name)."""
    return ssl.create_default_context(cafile=pem(name))


class TlsEnd:
    """One end of a TLS session over a socket, through memory buffers: one thread may send while another
    receives, it can end its sending alone (close_notify, then FIN), and it counts the bytes on the socket.

    settimeout(), recv() and sendall() make it usable by harness.recv_exactly, recv_until_eof and exchange.
    """

    def __init__(self, sock, context, server_side=False, hostname='localhost'):
        self.sock = sock
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                    server_hostname=None if server_side else hostname)
        self._state = threading.Lock()
        self._sending = threading.Lock()
        self.raw_sent = 0
        self.raw_received = 0
        self.close_notify = False       # the peer ended its sending with close_notify

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def handshake(self):
        """Complete the handshake; raise ssl.SSLError if it fails (after sending any alert)."""
        self.sock.settimeout(TIMEOUT)
        while True:
            try:
                with self._state:
                    try:
                        self.tls.do_handshake()
                        return
                    except ssl.SSLWantReadError:
                        pass
            finally:
                self._flush()
            if not self._fill():
                raise ConnectionError('the peer closed the connection during the TLS handshake')

    def next_flight(self):
        """The handshake's next bytes from this end, not sent: a client's ClientHello at once; a server's answer
        once the peer's hello has been read from the socket."""
        self.sock.settimeout(TIMEOUT)
        while True:
            with self._state:
                try:
                    self.tls.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                data = self._outgoing.read()
            if data:
                self.raw_sent += len(data)
                return data
            if not self._fill():
                raise ConnectionError('the peer closed the connection during the TLS handshake')

    def recv(self, size):
        while True:
            with self._state:
                try:
                    data = self.tls.read(size)
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:
                    data = b''
                if data == b'':
                    self.close_notify = True
                answer = self._outgoing.pending
            if answer:              # only then: a sendall waiting for a peer that does not read holds _sending
                self._flush()
            if data is not None:
                return data
            if not self._fill():
                return b''      # the socket ended without close_notify: close_notify stays False

    def sendall(self, data):
        view = memoryview(data)
        while view:
            with self._state:
                written = self.tls.write(view)
            view = view[written:]
            self._flush()

    def shutdown_write(self):
        """close_notify, then FIN.  unwrap() would also read the records received and not yet decrypted, and
        throw away the data in them: they are kept out of its way."""
        with self._state:
            waiting = self._incoming.read()
            try:
                self.tls.unwrap()
            except ssl.SSLWantReadError:
                pass            # close_notify is made; the peer's is not awaited
            self._incoming.write(waiting)
        self._flush()
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        self.sock.close()

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            return False
        self.raw_received += len(data)
        with self._state:
            self._incoming.write(data)
        return True

    def _flush(self):
        with self._sending:
            with self._state:
                data = self._outgoing.read()
            if data:
                self.sock.sendall(data)
                self.raw_sent += len(data)


class TlsTool(Tool):
    """harness.Tool, also when the tool writes a line (a warning, a usage error) before its start line."""

    def __init__(self, name, *args, **kwargs):
        super().__init__(name, *args, **kwargs)
        self.early = ''
        while self.port is None and self.start_line:
            self.early += self.start_line
            self.start_line = read_line_unbuffered(self.process.stderr.fileno()).decode('utf-8', 'replace')
            match = re.search(r'listening on port (\d+)', self.start_line)
            self.port = int(match.group(1)) if match else None
        self.err_read = b''      # stderr read while the tool runs (wait_stderr)

    def accept_server(self):
        """The tool's connection to the scripted server."""
        self.listener.settimeout(TIMEOUT)
        server, _ = self.listener.accept()
        server.settimeout(TIMEOUT)
        return server

    def connect_tls(self, context=None):
        """A client that starts with TLS (--listen-tls); return (its TlsEnd, the server-side socket)."""
        client = TlsEnd(self.connect_client_only(), context or trusting('tool'))
        client.handshake()
        return client, self.accept_server()

    def wait_stderr(self, needle):
        """Read stderr until needle (bytes) has appeared in what was read so far."""
        self.err_read = read_fd_until_all(self.process.stderr.fileno(), [needle], already=self.err_read)

    def finish(self, timeout=TIMEOUT):
        status, out, err = super().finish(timeout)
        return status, out, self.early + err + self.err_read.decode('utf-8', 'replace')


def error_lines(err, prog='ctispy'):
    """The tool's notes on stderr other than its start line and the --tls-no-verify warning."""
    return [line for line in err.splitlines() if line.startswith(prog + ': ')
            and 'listening on port' not in line and '--tls-no-verify' not in line]


def check_clean(test, err):
    test.assertNotIn('Traceback', err)
    test.assertNotIn('internal error', err)


def json_line(message, crlf=False):
    return json.dumps(message, ensure_ascii=False).encode('utf-8') + (b'\r\n' if crlf else b'\n')


def messages(side, count, big=0, tag=''):
    """CTI-like messages for one side, and a big one of about `big` bytes at the end if big."""
    key_name = 'commandid' if side == 'client' else 'replyid'
    found = [{'class': 'getlist', key_name: number, 'tag': tag, 'name': 'H\u00e9l\u00e8ne \U0001f600'}
             for number in range(count)]
    if big:
        found.append({'class': 'history', key_name: count, 'blob': 'x' * big})
    return found


def wire(found):
    return b''.join(json_line(message, crlf=number % 3 == 1) for number, message in enumerate(found))


OFFER_MESSAGE, ANSWER_MESSAGE, CONFIRM_MESSAGE = (json.loads(line.decode()) for line in (OFFER, ANSWER, CONFIRM))

NOTICE = re.compile(r'^(?:\[#\d+\]|   ) \d\d:\d\d:\d\d\.\d{6} -- (.*)$')


def spy_view(out):
    """ctispy's output as ({direction: [message, or the text of a line that is not JSON]}, [notice texts])."""
    notices, rest = [], []
    for line in out.decode('utf-8').split('\n'):
        match = NOTICE.match(line)
        if match:
            notices.append(match.group(1))
        else:
            rest.append(line)
    shown = {C2S: [], S2C: []}
    for _, direction, body in parse_spy_output('\n'.join(rest)):
        text = '\n'.join(body)
        try:
            shown[direction].append(json.loads(text))
        except ValueError:
            shown[direction].append(text)
    return shown, notices


def end_sending(end):
    if isinstance(end, TlsEnd):
        end.shutdown_write()
    else:
        end.shutdown(socket.SHUT_WR)


def close_session(test, client, server, last=b'the server says goodbye\n'):
    """The client ends its sending; the server sees the end, then sends `last` and ends its own: the
    client gets `last` (a TLS half-close works through the tool)."""
    end_sending(client)
    test.assertEqual(recv_until_eof(server), b'')
    server.sendall(last)
    end_sending(server)
    test.assertEqual(recv_until_eof(client), last)
    for end in (client, server):
        if isinstance(end, TlsEnd):
            test.assertTrue(end.close_notify, 'the TLS session ended without close_notify')
        end.close()


def plain_part(test, client, server, rng):
    """STARTTLS in clear text, up to the server's confirmation (sent by the caller)."""
    for sender, receiver, line in ((server, client, OFFER), (client, server, ANSWER)):
        send_in_pieces(sender, line, rng, 7)
        test.assertEqual(recv_exactly(receiver, len(line)), line)


def upgrade_at_once(test, client, server, client_context, pieces_rng=None):
    """The server confirms and starts TLS; the client starts TLS as soon as it has the confirmation, both at
    once; with pieces_rng, the client's ClientHello goes out in small pieces, the first one byte long.
    Return (client TlsEnd, server TlsEnd)."""
    def server_side():
        server.sendall(CONFIRM)
        end = TlsEnd(server, serving(), server_side=True)
        end.handshake()
        return end

    def client_side():
        test.assertEqual(recv_exactly(client, len(CONFIRM)), CONFIRM)
        end = TlsEnd(client, client_context)
        if pieces_rng is not None:
            hello = end.next_flight()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.sendall(hello[:1])
            send_in_pieces(client, hello[1:], pieces_rng, 50)
        end.handshake()
        return end

    server_end, client_end = in_parallel(server_side, client_side, what='a TLS step')
    return client_end, server_end


def starttls(trusted, in_pieces=False):
    """An upgrade for a test's session(): STARTTLS in clear text, then upgrade_at_once, the client trusting
    the certificate `trusted` (its ClientHello in pieces if in_pieces)."""
    def upgrade(test, client, server, rng):
        plain_part(test, client, server, rng)
        return upgrade_at_once(test, client, server, trusting(trusted), rng if in_pieces else None)
    return upgrade


def next_session_works(test, tool, client, server, rng):
    """With --loop, after one failed session: the next relays both ways; then SIGTERM ends the tool
    cleanly, and the failure was the one error it reported."""
    to_client = BANNER + wire(messages('server', 5))
    test.assertEqual(exchange(client, server, ANSWER, to_client, rng), (ANSWER, to_client))
    close_session(test, client, server)
    status, _, err = tool.stop(signal.SIGTERM)
    test.assertEqual(status, 0, err)
    check_clean(test, err)
    test.assertEqual(len(error_lines(err)), 1, err)


class TlsToServerTest(unittest.TestCase):
    """--tls: TLS to the server from the first byte, its certificate verified."""

    def test_relays_and_shows_both_ways(self):
        rng = seeded_rng(self)
        to_server, to_client = messages('client', 40, big=40000), messages('server', 40, big=150000)
        with TlsTool('ctispy', *TO_SERVER) as tool:
            self.assertIn('(TLS)', tool.start_line)
            client, server_sock = tool.connect()
            server = TlsEnd(server_sock, serving(), server_side=True)
            server.handshake()
            got_server, got_client = exchange(client, server, wire(to_server), wire(to_client), rng, most=3000)
            self.assertTrue(got_server == wire(to_server), 'client bytes changed on the way')
            self.assertTrue(got_client == wire(to_client), 'server bytes changed on the way')
            close_session(self, client, server)
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        check_clean(self, err)
        self.assertEqual(error_lines(err), [])
        shown, notices = spy_view(out)
        self.assertTrue(shown[C2S] == to_server, 'client messages not shown as sent')
        self.assertTrue(shown[S2C] == to_client + ['the server says goodbye'], 'server messages not shown as sent')
        # Both sides send at once: an answer may pass the tool before its request, which is then never answered.
        self.assertEqual([notice for notice in notices if not notice.startswith('never answered: ')], [])

    def test_server_certificate_not_trusted(self):
        cases = [('no --tls-ca: the system CAs', ('--tls',), 'server', 'certificate verify failed'),
                 ('another CA', ('--tls', '--tls-ca', pem('other')), 'server', 'certificate verify failed'),
                 ('trusted, for another name', ('--tls', '--tls-ca', pem('other')), 'other',
                  'certificate verify failed: .*mismatch')]
        for title, args, presented, reason in cases:
            with self.subTest(title), TlsTool('ctispy', *args) as tool:
                client, server_sock = tool.connect()
                server = TlsEnd(server_sock, serving(presented), server_side=True)
                with self.assertRaises(OSError):        # the tool turns the handshake down
                    server.handshake()
                    server.recv(1)
                self.assertEqual(recv_until_eof_or_reset(client), b'')
                status, out, err = tool.finish()
                self.assertEqual(status, 1, err)
                check_clean(self, err)
                errors = error_lines(err)
                self.assertEqual(len(errors), 1, err)
                self.assertRegex(errors[0], r'^ctispy: cannot connect to server 127\.0\.0\.1:%d: TLS: %s'
                                 % (tool.listener.getsockname()[1], reason))
                self.assertEqual(out, b'')

    def test_no_verify_says_so_and_connects(self):
        rng = seeded_rng(self)
        with TlsTool('ctispy', '--tls', '--tls-no-verify') as tool:
            client, server_sock = tool.connect()
            server = TlsEnd(server_sock, serving('other'), server_side=True)   # untrusted, for another name
            server.handshake()
            got_server, got_client = exchange(client, server, ANSWER, BANNER, rng)
            self.assertEqual((got_server, got_client), (ANSWER, BANNER))
            close_session(self, client, server)
            status, _, err = tool.finish()
        self.assertEqual(status, 0, err)
        check_clean(self, err)
        warnings = [line for line in err.splitlines() if '--tls-no-verify' in line]
        self.assertEqual(len(warnings), 1, err)
        self.assertIn('not checked', warnings[0])
        self.assertEqual(error_lines(err), [])

    def test_loop_goes_on_after_a_refused_server(self):
        rng = seeded_rng(self)
        with TlsTool('ctispy', '--loop', *TO_SERVER) as tool:
            client, server_sock = tool.connect()
            with self.assertRaises(OSError):
                server = TlsEnd(server_sock, serving('other'), server_side=True)
                server.handshake()
                server.recv(1)
            self.assertEqual(recv_until_eof_or_reset(client), b'')
            tool.wait_stderr(b'certificate verify failed')
            client, server_sock = tool.connect()
            server = TlsEnd(server_sock, serving(), server_side=True)
            server.handshake()
            next_session_works(self, tool, client, server, rng)


class ListenTlsTest(unittest.TestCase):
    """--listen-tls: clients connect with TLS, to the tool's certificate."""

    def test_relays_and_shows_both_ways(self):
        rng = seeded_rng(self)
        to_server, to_client = messages('client', 40, big=150000), messages('server', 40, big=40000)
        with TlsTool('ctispy', *LISTEN) as tool:
            self.assertIn('(TLS)', tool.start_line)
            client, server = tool.connect_tls()
            got_server, got_client = exchange(client, server, wire(to_server), wire(to_client), rng, most=3000)
            self.assertTrue(got_server == wire(to_server), 'client bytes changed on the way')
            self.assertTrue(got_client == wire(to_client), 'server bytes changed on the way')
            close_session(self, client, server)
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        check_clean(self, err)
        shown, _ = spy_view(out)
        self.assertTrue(shown[C2S] == to_server, 'client messages not shown as sent')
        self.assertTrue(shown[S2C] == to_client + ['the server says goodbye'], 'server messages not shown as sent')

    def test_tls_on_both_sides(self):
        rng = seeded_rng(self)
        to_server, to_client = wire(messages('client', 30)), BANNER + wire(messages('server', 30, big=70000))
        with TlsTool('ctispy', *(LISTEN + TO_SERVER)) as tool:
            client = TlsEnd(tool.connect_client_only(), trusting('tool'))
            client.handshake()
            server = TlsEnd(tool.accept_server(), serving(), server_side=True)
            server.handshake()
            self.assertEqual(exchange(client, server, to_server, to_client, rng, most=2000), (to_server, to_client))
            close_session(self, client, server)
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        check_clean(self, err)
        shown, _ = spy_view(out)
        self.assertEqual(len(shown[C2S]), 30)
        self.assertEqual(shown[S2C][0], BANNER.decode().strip())

    def test_plain_client_refused(self):
        cases = [('says something', b'{"class": "login_id", "commandid": 1, "userlogin": "alice"}\n'),
                 ('says nothing and leaves', b'')]
        for title, said in cases:
            with self.subTest(title), TlsTool('ctispy', *LISTEN) as tool:
                client = tool.connect_client_only()
                port = client.getsockname()[1]
                client.sendall(said)
                if not said:
                    client.shutdown(socket.SHUT_WR)
                recv_until_eof_or_reset(client)      # a TLS alert may come first
                client.close()
                status, out, err = tool.finish()
                self.assertEqual(status, 1, err)
                check_clean(self, err)
                errors = error_lines(err)
                self.assertEqual(len(errors), 1, err)
                self.assertRegex(errors[0], r'^ctispy: TLS handshake with the client 127\.0\.0\.1:%d failed: \S'
                                 % port)
                self.assertEqual(out, b'')
                tool.listener.setblocking(False)
                with self.assertRaises(BlockingIOError, msg='the tool connected to the server'):
                    tool.listener.accept()

    def test_loop_goes_on_after_a_plain_client(self):
        rng = seeded_rng(self)
        with TlsTool('ctispy', '--loop', *LISTEN) as tool:
            plain = tool.connect_client_only()
            plain.sendall(OFFER)
            recv_until_eof_or_reset(plain)
            plain.close()
            tool.wait_stderr(b'TLS handshake with the client')
            client, server = tool.connect_tls()
            next_session_works(self, tool, client, server, rng)


class StarttlsSeenThroughTest(unittest.TestCase):
    """STARTTLS with --cert/--key: the tool ends the client's TLS itself, opens its own to the server, and
    goes on showing every message."""

    def session(self, upgrade, tool_name='ctispy', *args, **kwargs):
        """A whole session through the tool, upgraded by upgrade(); return (stdout, the messages the client
        sent after the upgrade, the server's)."""
        rng = seeded_rng(self)
        to_server = messages('client', 30, big=kwargs.get('big_client', 50000), tag='after')
        to_client = messages('server', 30, big=kwargs.get('big_server', 120000), tag='after')
        with TlsTool(tool_name, *(args + SEE_THROUGH)) as tool:
            client, server = tool.connect()
            client_end, server_end = upgrade(self, client, server, rng)
            got_server, got_client = exchange(client_end, server_end, wire(to_server), wire(to_client), rng,
                                              most=3000)
            self.assertTrue(got_server == wire(to_server), 'client bytes changed on the way')
            self.assertTrue(got_client == wire(to_client), 'server bytes changed on the way')
            close_session(self, client_end, server_end)
            status, out, err = tool.finish()
        check_clean(self, err)
        self.assertEqual(error_lines(err, tool_name), [])
        self.assertEqual(status, 0, err)
        return out, to_server, to_client

    def check_shown(self, out, to_server, to_client):
        shown, notices = spy_view(out)
        self.assertTrue(shown[C2S] == [ANSWER_MESSAGE] + to_server, 'client messages not all shown')
        self.assertTrue(shown[S2C] == [OFFER_MESSAGE, CONFIRM_MESSAGE] + to_client + ['the server says goodbye'],
                        'server messages not all shown')
        self.assertEqual(len([text for text in notices if 'STARTTLS' in text]), 1, notices)

    def test_client_starts_tls_at_once(self):
        self.check_shown(*self.session(starttls('tool')))

    def test_client_first_its_message_waits_for_the_server(self):
        """The client's handshake and first message come before the server even starts TLS."""
        first = json_line({'class': 'login_id', 'commandid': 0, 'userlogin': 'alice'})

        def upgrade(test, client, server, rng):
            plain_part(test, client, server, rng)
            server.sendall(CONFIRM)
            test.assertEqual(recv_exactly(client, len(CONFIRM)), CONFIRM)
            client_end = TlsEnd(client, trusting('tool'))
            client_end.handshake()
            client_end.sendall(first)
            server_end = TlsEnd(server, serving(), server_side=True)
            server_end.handshake()
            test.assertEqual(recv_exactly(server_end, len(first)), first)
            return client_end, server_end

        out, to_server, to_client = self.session(upgrade)
        self.check_shown(out, [json.loads(first.decode())] + to_server, to_client)

    def test_server_first_its_message_waits_for_the_client(self):
        """The server's handshake and first message come before the client even starts TLS."""
        first = json_line({'class': 'login_id', 'replyid': 0, 'timenow': 1.5})

        def upgrade(test, client, server, rng):
            plain_part(test, client, server, rng)
            server.sendall(CONFIRM)
            server_end = TlsEnd(server, serving(), server_side=True)
            server_end.handshake()
            server_end.sendall(first)
            test.assertEqual(recv_exactly(client, len(CONFIRM)), CONFIRM)
            client_end = TlsEnd(client, trusting('tool'))
            client_end.handshake()
            test.assertEqual(recv_exactly(client_end, len(first)), first)
            return client_end, server_end

        out, to_server, to_client = self.session(upgrade)
        self.check_shown(out, to_server, [json.loads(first.decode())] + to_client)

    def test_client_hello_in_pieces(self):
        self.check_shown(*self.session(starttls('tool', in_pieces=True)))

    def test_ctisave_files_hold_the_messages_after_the_upgrade(self):
        with tempfile.TemporaryDirectory() as folder:
            client_file, server_file = os.path.join(folder, 'client'), os.path.join(folder, 'server')
            out, to_server, to_client = self.session(starttls('tool'), 'ctisave', client_file, server_file,
                                                     big_client=3000, big_server=3000)
            saved = {side: json_documents(path) for side, path in (('client', client_file), ('server', server_file))}
        self.assertEqual(saved['client'], [ANSWER_MESSAGE] + to_server)
        self.assertEqual(saved['server'], [OFFER_MESSAGE, CONFIRM_MESSAGE] + to_client + ['the server says goodbye'])

    def test_ctistat_counts_the_messages_after_the_upgrade(self):
        out, to_server, to_client = self.session(starttls('tool'), 'ctistat', '--json')
        reports = [json.loads(line) for line in out.decode('utf-8').splitlines() if line]
        self.assertEqual(len(reports), 1, out)
        report = reports[0]
        last = b'the server says goodbye\n'
        self.assertEqual(report['client']['messages'], 1 + len(to_server))
        self.assertEqual(report['client']['classes'], {'starttls': 1, 'getlist': 30, 'history': 1})
        self.assertEqual(report['server']['messages'], 2 + len(to_client))
        self.assertEqual(report['server']['invalid'], 1)           # the goodbye line
        self.assertEqual(report['client']['bytes'], len(ANSWER + wire(to_server)))      # what was said, decrypted
        self.assertEqual(report['server']['bytes'], len(OFFER + CONFIRM + wire(to_client) + last))

    def test_client_refuses_the_tool_certificate(self):
        """The client does not trust the tool's certificate: one error naming the client, the session ends;
        the tool's own handshake with the server, still under way, is not reported as a second failure."""
        rng = seeded_rng(self)
        with TlsTool('ctispy', *SEE_THROUGH) as tool:
            client, server = tool.connect()
            port = client.getsockname()[1]
            plain_part(self, client, server, rng)
            server.sendall(CONFIRM)                      # and does not start TLS yet
            self.assertEqual(recv_exactly(client, len(CONFIRM)), CONFIRM)
            client_end = TlsEnd(client, trusting('server'))
            with self.assertRaises(ssl.SSLError):
                client_end.handshake()
            self.assertEqual(recv_until_eof_or_reset(client), b'')
            recv_until_eof_or_reset(server)              # the tool's ClientHello, then the end
            status, out, err = tool.finish()
        check_clean(self, err)
        errors = error_lines(err)
        self.assertEqual(len(errors), 1, err)
        self.assertRegex(errors[0], r'^ctispy: .*TLS handshake with the client 127\.0\.0\.1:%d \(STARTTLS\) '
                                    r'failed: \S' % port)
        shown, _ = spy_view(out)
        self.assertEqual(shown[S2C], [OFFER_MESSAGE, CONFIRM_MESSAGE])

    def test_server_refused_by_the_tool(self):
        """Without --tls-ca the server's certificate is not trusted: one error naming the server."""
        rng = seeded_rng(self)
        with TlsTool('ctispy', '--cert', pem('tool'), '--key', key('tool')) as tool:
            client, server = tool.connect()
            plain_part(self, client, server, rng)
            server.sendall(CONFIRM)
            server_end = TlsEnd(server, serving(), server_side=True)
            with self.assertRaises(OSError):
                server_end.handshake()
                server_end.recv(1)
            self.assertEqual(recv_exactly(client, len(CONFIRM)), CONFIRM)
            self.assertEqual(recv_until_eof_or_reset(client), b'')
            status, _, err = tool.finish()
        check_clean(self, err)
        errors = error_lines(err)
        self.assertEqual(len(errors), 1, err)
        self.assertRegex(errors[0], r'^ctispy: .*TLS handshake with the server 127\.0\.0\.1:\d+ \(STARTTLS\) '
                                    r'failed: certificate verify failed')

    def test_server_refused_while_the_client_handshake_is_under_way(self):
        """The client has sent its ClientHello only; the server's certificate is refused: one error, for the
        server (the client's unfinished handshake is not a second failure)."""
        rng = seeded_rng(self)
        with TlsTool('ctispy', '--cert', pem('tool'), '--key', key('tool')) as tool:
            client, server = tool.connect()
            plain_part(self, client, server, rng)
            server.sendall(CONFIRM)
            self.assertEqual(recv_exactly(client, len(CONFIRM)), CONFIRM)
            client.sendall(TlsEnd(client, trusting('tool')).next_flight())
            server_end = TlsEnd(server, serving(), server_side=True)
            with self.assertRaises(OSError):
                server_end.handshake()
                server_end.recv(1)
            recv_until_eof_or_reset(client)             # the tool's ServerHello..., then the end
            status, _, err = tool.finish()
        check_clean(self, err)
        errors = error_lines(err)
        self.assertEqual(len(errors), 1, err)
        self.assertIn('TLS handshake with the server', errors[0])

    def test_loop_goes_on_after_a_failed_upgrade(self):
        rng = seeded_rng(self)
        with TlsTool('ctispy', '--loop', *SEE_THROUGH) as tool:
            client, server = tool.connect()
            plain_part(self, client, server, rng)
            server.sendall(CONFIRM)
            self.assertEqual(recv_exactly(client, len(CONFIRM)), CONFIRM)
            with self.assertRaises(ssl.SSLError):
                TlsEnd(client, trusting('server')).handshake()
            tool.wait_stderr(b'TLS handshake with the client')
            client.close()
            server.close()
            client, server = tool.connect()
            plain_part(self, client, server, rng)
            client_end, server_end = upgrade_at_once(self, client, server, trusting('tool'))
            to_server, to_client = wire(messages('client', 5)), wire(messages('server', 5))
            self.assertEqual(exchange(client_end, server_end, to_server, to_client, rng), (to_server, to_client))
            close_session(self, client_end, server_end)
            tool.read_stdout_until(b'the server says goodbye')
            status, out, err = tool.stop(signal.SIGTERM)
        self.assertEqual(status, 0, err)
        check_clean(self, err)


def json_documents(path):
    """The JSON documents (or raw lines) in a ctisave file, in order."""
    with open(path, encoding='utf-8') as file:
        text = file.read()
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text):
        while at < len(text) and text[at] in ' \n':
            at += 1
        if at >= len(text):
            break
        try:
            document, at = decoder.raw_decode(text, at)
        except ValueError:
            end = text.find('\n', at)
            end = len(text) if end < 0 else end
            document, at = text[at:end], end
        found.append(document)
    return found


class StarttlsPassedThroughTest(unittest.TestCase):
    """STARTTLS without a certificate: the tool relays the encrypted bytes, says so once, and counts them."""

    def session(self, upgrade, tool_name='ctispy', *args):
        """Client and server speak TLS with each other through the tool; return (stdout, client TlsEnd,
        server TlsEnd)."""
        rng = seeded_rng(self)
        to_server, to_client = wire(messages('client', 20, big=30000)), wire(messages('server', 20, big=90000))
        with TlsTool(tool_name, *args) as tool:
            client, server = tool.connect()
            client_end, server_end = upgrade(self, client, server, rng)
            got = exchange(client_end, server_end, to_server, to_client, rng, most=3000)
            self.assertTrue(got == (to_server, to_client), 'bytes changed on the way')
            close_session(self, client_end, server_end)
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        check_clean(self, err)
        self.assertEqual(error_lines(err, tool_name), [])
        self.assertEqual(client_end.raw_sent, server_end.raw_received)
        self.assertEqual(server_end.raw_sent, client_end.raw_received)
        return out, client_end, server_end

    def check_shown(self, out):
        shown, notices = spy_view(out)
        for direction, clear in ((S2C, [OFFER_MESSAGE, CONFIRM_MESSAGE]), (C2S, [ANSWER_MESSAGE])):
            self.assertTrue(shown[direction][:len(clear)] == clear, shown[direction][:5])
            self.assertTrue(len(shown[direction]) == len(clear), '%s: %d entries shown after the clear messages '
                            '(encrypted bytes shown as text)' % (direction, len(shown[direction]) - len(clear)))
        said = [text for text in notices if 'STARTTLS' in text]
        self.assertEqual(len(said), 1, notices)
        self.assertIn('encrypted', said[0])

    def test_encrypted_session_works_and_is_announced_once(self):
        out, _, _ = self.session(starttls('server'))
        self.check_shown(out)

    def test_client_hello_in_pieces(self):
        out, _, _ = self.session(starttls('server', in_pieces=True))
        self.check_shown(out)

    def test_ctistat_counts_every_byte_and_only_the_clear_messages(self):
        out, client_end, server_end = self.session(starttls('server'), 'ctistat', '--json')
        reports = [json.loads(line) for line in out.decode('utf-8').splitlines() if line]
        self.assertEqual(len(reports), 1, out)
        report = reports[0]
        self.assertEqual(report['client']['bytes'], len(ANSWER) + client_end.raw_sent)
        self.assertEqual(report['server']['bytes'], len(OFFER + CONFIRM) + server_end.raw_sent)
        self.assertEqual((report['client']['messages'], report['client']['invalid']), (1, 0))
        self.assertEqual((report['server']['messages'], report['server']['invalid']), (2, 0))
        self.assertEqual(report['server']['classes'], {'starttls': 2})


class NoStarttlsTest(unittest.TestCase):
    """--no-starttls: the server's offer is hidden from the client; everything else is relayed unchanged."""

    def test_offer_hidden_and_session_stays_clear(self):
        rng = seeded_rng(self)
        long_line = json_line({'class': 'getlist', 'list': ['starttls %05d' % number for number in range(900)]})
        kept = [BANNER, long_line, b'{"class": "chat", "text": "starttls"}\n', b'\xff not JSON starttls\r\n',
                b'{"class": "starttls", "status": true}\n', wire(messages('server', 10))]
        offers = [OFFER, b'{"class":"starttls"}\r\n']
        stream = kept[0] + kept[1] + offers[0] + kept[2] + kept[3] + offers[1] + kept[4] + kept[5]
        expected = b''.join(kept)
        with TlsTool('ctispy', '--no-starttls') as tool:
            client, server = tool.connect()
            send_in_pieces(server, stream, rng, 40)
            self.assertEqual(recv_exactly(client, len(expected)), expected)
            to_server, to_client = wire(messages('client', 10)), wire(messages('server', 10, tag='later'))
            self.assertEqual(exchange(client, server, to_server, to_client, rng, most=30), (to_server, to_client))
            close_session(self, client, server)
            status, _, err = tool.finish()
        self.assertEqual(status, 0, err)
        check_clean(self, err)

    def test_unfinished_last_line_reaches_the_client(self):
        """What the server sends after its last newline, just before it ends, is not held back for ever."""
        rng = seeded_rng(self)
        sent = BANNER + OFFER + b'{"class": "login_id", "replyid": 1}\n' + b'{"class": "bye"'
        expected = sent.replace(OFFER, b'')
        with TlsTool('ctispy', '--no-starttls') as tool:
            client, server = tool.connect()
            send_in_pieces(server, sent, rng, 9)
            server.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(client), expected)
            client.close()
            server.close()
            status, _, err = tool.finish()
        self.assertEqual(status, 0, err)
        check_clean(self, err)


class TlsUsageTest(unittest.TestCase):
    """Files that cannot be used (options that need others are in test_cli.UsageErrorTest)."""

    def run_tool(self, *args):
        with TlsTool('ctispy', *args) as tool:
            self.assertIsNone(tool.port, 'the tool started')
            status, out, err = tool.finish()
        check_clean(self, err)
        self.assertEqual(out, b'')
        return status, err

    def test_files_that_cannot_be_used(self):
        missing = os.path.join(CERTS, 'missing.pem')
        cases = [(missing, '--cert', missing, '--key', key('tool')),
                 (missing, '--cert', pem('tool'), '--key', missing),
                 (key('tool'), '--cert', key('tool'), '--key', key('tool')),         # a key is no certificate
                 (key('server'), '--cert', pem('tool'), '--key', key('server')),     # not the certificate's key
                 (missing, '--tls', '--tls-ca', missing),
                 (missing, '--cert', pem('tool'), '--key', key('tool'), '--tls-ca', missing),
                 (key('tool'), '--tls', '--tls-ca', key('tool'))]                    # no certificate in it
        for case in cases:
            named, args = case[0], case[1:]
            with self.subTest(args=args):
                status, err = self.run_tool(*args)
                self.assertEqual(status, 1, err)
                lines = [line for line in err.splitlines() if line]
                self.assertEqual(len(lines), 1, err)
                self.assertIn(named, lines[0])


if __name__ == '__main__':
    unittest.main()


class StarttlsClientThatDoesNotStartTest(unittest.TestCase):
    """Seen through: a client that does not start TLS after the confirmation ends the session (it used
    to leave the server's pump waiting for ever)."""

    def check(self, misbehave, reason):
        rng = seeded_rng(self)
        with TlsTool('ctispy', '--cert', pem('tool'), '--key', key('tool'), '--tls-ca', pem('server')) as tool:
            client, server = tool.connect()
            plain_part(self, client, server, rng)
            server.sendall(CONFIRM)
            self.assertEqual(recv_exactly(client, len(CONFIRM)), CONFIRM)
            misbehave(client)
            recv_until_eof_or_reset(server)   # the tool hangs up on the server (after its own ClientHello)
            status, _, err = tool.finish()
            client.close()
            server.close()
        check_clean(self, err)
        self.assertEqual(status, 1, err)
        errors = error_lines(err)
        self.assertEqual(len(errors), 1, err)
        self.assertIn(reason, errors[0])

    def test_client_closes(self):
        self.check(lambda client: client.shutdown(socket.SHUT_WR),
                   'STARTTLS: the client ended before its TLS handshake')

    def test_client_sends_clear_text(self):
        self.check(lambda client: client.sendall(b'{"class": "keepalive"}\n'),
                   'sent clear text instead of starting TLS')
