"""TLS under load: half-closes while the other direction streams, a peer that stops reading, and a handshake
dribbled byte by byte.  The three TLS paths: --tls (plain client, TLS server), --listen-tls (TLS client, plain
server), and STARTTLS seen through (--cert/--key, TLS on both sides).
"""

import json
import os
import socket
import threading
import unittest

from tests.harness import TIMEOUT, in_parallel, recv_exactly, recv_until_eof, recv_until_eof_or_reset, seeded_rng
from tests.test_tls import (ANSWER, CONFIRM, LISTEN, OFFER, SEE_THROUGH, TO_SERVER, TlsEnd, TlsTool, check_clean,
                            end_sending, error_lines, plain_part, serving, trusting, upgrade_at_once)

MB = 1024 * 1024


def tls_to_server(test, tool, rng):
    """--tls: a plain client; the server speaks TLS."""
    client, server_sock = tool.connect()
    server = TlsEnd(server_sock, serving(), server_side=True)
    server.handshake()
    return client, server


def tls_from_client(test, tool, rng):
    """--listen-tls: the client speaks TLS; a plain server."""
    return tool.connect_tls()


def starttls_seen_through(test, tool, rng):
    """STARTTLS with the tool's certificate: TLS on both sides after the upgrade."""
    client, server = tool.connect()
    plain_part(test, client, server, rng)
    return upgrade_at_once(test, client, server, trusting('tool'))


PATHS = {'--tls': (TO_SERVER, tls_to_server, (0, 0)), '--listen-tls': (LISTEN, tls_from_client, (0, 0)),
         'STARTTLS seen through': (SEE_THROUGH, starttls_seen_through, (len(ANSWER), len(OFFER + CONFIRM)))}


def stream_then_end(end, data, rng, ended=None):
    """Send data in random pieces (up to 256 KiB), then end the sending (close_notify and FIN for TLS), and
    set the event ended."""
    at = 0
    while at < len(data):
        size = rng.randint(1, 256 * 1024)
        end.sendall(data[at:at + size])
        at += size
    end_sending(end)
    if ended is not None:
        ended.set()


def recv_after(end, event):
    """Everything end receives until the end of the stream, read once event is set: meanwhile what the
    other side streams piles up in the tool (a half-close there, while its TLS records wait to be read)."""
    event.wait(TIMEOUT)
    return recv_until_eof(end)


class HalfCloseTest(unittest.TestCase):
    """Each side streams its own amount (from nothing to several MB) and then ends its sending, while the
    other may still be streaming: every byte reaches the other side, and each end is relayed as an end.
    In most rounds one side is short, and the other side's stream is read only once the short one ended."""

    ROUNDS = 4

    def check(self, path):
        args, connect, opening = PATHS[path]
        rng = seeded_rng(self)
        counted = []        # what ctistat should count in each session
        with TlsTool('ctistat', '--json', '--loop', *args) as tool:
            for round_number in range(self.ROUNDS):
                short = rng.randrange(0, 64 * 1024)
                long = rng.randrange(2 * MB, 4 * MB)
                client_short = rng.random() < 0.5
                sizes = (short, long) if client_short else (long, short)
                ended = {'client': threading.Event(), 'server': threading.Event()}
                short_side, long_side = ('client', 'server') if client_short else ('server', 'client')
                at_once = threading.Event()
                at_once.set()
                # the short side sends, ends its sending, and only then reads the other side's long stream
                wait_for = {short_side: ended[short_side], long_side: at_once}
                if round_number == self.ROUNDS - 1:      # both long, read at once: the ends come at random
                    sizes = (rng.randrange(MB, 3 * MB), rng.randrange(MB, 3 * MB))
                    wait_for = {'client': at_once, 'server': at_once}
                to_server, to_client = (os.urandom(size) for size in sizes)
                with self.subTest(round=round_number, to_server=len(to_server), to_client=len(to_client)):
                    counted.append({'client': opening[0] + len(to_server), 'server': opening[1] + len(to_client)})
                    client, server = connect(self, tool, rng)
                    _, _, got_server, got_client = in_parallel(
                        lambda: stream_then_end(client, to_server, rng, ended['client']),
                        lambda: stream_then_end(server, to_client, seeded_rng(self), ended['server']),
                        lambda: recv_after(server, wait_for['server']), lambda: recv_after(client, wait_for['client']),
                        what='the streams')
                    self.assertTrue(got_server == to_server, 'the server got %d of %d bytes'
                                    % (len(got_server), len(to_server)))
                    self.assertTrue(got_client == to_client, 'the client got %d of %d bytes'
                                    % (len(got_client), len(to_client)))
                    for end in (client, server):
                        if isinstance(end, TlsEnd):
                            self.assertTrue(end.close_notify, 'the TLS stream ended without close_notify')
                        end.close()
            status, out, err = tool.stop()
        self.assertEqual(status, 0, err)
        check_clean(self, err)
        self.assertEqual(error_lines(err, 'ctistat'), [])
        reports = sorted((json.loads(line) for line in out.decode('utf-8').splitlines()), key=lambda r: r['session'])
        self.assertEqual([{side: report[side]['bytes'] for side in ('client', 'server')} for report in reports],
                         counted)

    def test_tls_to_server(self):
        self.check('--tls')

    def test_tls_from_client(self):
        self.check('--listen-tls')

    def test_starttls_seen_through(self):
        self.check('STARTTLS seen through')


class StopsReadingTest(unittest.TestCase):
    """The client stops reading while the server keeps talking: the client's direction keeps flowing (the
    server's waits, by TCP backpressure)."""

    def check(self, path):
        args, connect, _ = PATHS[path]
        rng = seeded_rng(self)
        to_server = os.urandom(3 * MB)
        with TlsTool('ctistat', *args) as tool:
            client, server = connect(self, tool, rng)
            stop = threading.Event()
            talked = []

            def server_talks():
                chunk = os.urandom(64 * 1024)
                try:
                    while not stop.is_set():
                        server.sendall(chunk)
                        talked.append(len(chunk))
                except OSError:
                    pass            # the session ended under it

            talker = threading.Thread(target=server_talks, daemon=True)
            talker.start()
            in_parallel(lambda: stream_then_end(client, to_server, rng),
                        lambda: self.assertTrue(recv_exactly(server, len(to_server)) == to_server,
                                                'client bytes changed on the way'),
                        what='the client\'s direction')
            stop.set()
            self.assertGreater(sum(talked), 0)
            for end in (client, server):
                try:
                    (end.sock if isinstance(end, TlsEnd) else end).shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass            # the tool ended the session first
            talker.join(10)
            for end in (client, server):
                end.close()
            status, _, err = tool.stop()
        check_clean(self, err)

    def test_tls_to_server(self):
        self.check('--tls')

    def test_tls_from_client(self):
        self.check('--listen-tls')


class HandshakeDeadlineTest(unittest.TestCase):
    """A handshake dribbled one byte at a time, each within the read timeout, ends at the handshake's
    deadline (shortened for the test by CTI_PROXY_TEST_HANDSHAKE_SECONDS)."""

    ENV = {'CTI_PROXY_TEST_HANDSHAKE_SECONDS': '1'}

    def dribble(self, sock, data, stop):
        """Send data one byte at a time, a pause between bytes, until it is all sent or stop is set."""
        try:
            for at in range(len(data)):
                if stop.wait(0.2):
                    return
                sock.sendall(data[at:at + 1])
        except OSError:
            pass

    def check_gives_up(self, tool, sock, hello, error):
        """Dribble hello to the tool until it gives up: its one error line matches the regex error."""
        stop = threading.Event()
        dribbler = threading.Thread(target=self.dribble, args=(sock, hello, stop), daemon=True)
        dribbler.start()
        try:
            tool.wait_stderr(b'timed out')
        finally:
            stop.set()
            dribbler.join(10)
        recv_until_eof_or_reset(sock)
        sock.close()
        status, _, err = tool.finish()
        self.assertEqual(status, 1, err)
        check_clean(self, err)
        errors = error_lines(err)
        self.assertEqual(len(errors), 1, err)
        self.assertRegex(errors[0], error)

    def test_client_dribbles_its_hello(self):
        with TlsTool('ctispy', *LISTEN, env=self.ENV) as tool:
            client = tool.connect_client_only()
            hello = TlsEnd(client, trusting('tool')).next_flight()
            self.check_gives_up(tool, client, hello, r'^ctispy: TLS handshake with the client \S+ failed: timed out$')

    def test_server_dribbles_its_answer(self):
        """--tls: the server's ServerHello comes one byte at a time."""
        with TlsTool('ctispy', *TO_SERVER, env=self.ENV) as tool:
            client, server = tool.connect()
            answer = TlsEnd(server, serving(), server_side=True).next_flight()     # to the tool's ClientHello
            self.check_gives_up(tool, server, answer, r'^ctispy: cannot connect to server \S+: timed out$')
            client.close()

    def test_server_dribbles_its_answer_to_starttls(self):
        """STARTTLS seen through: the server's ServerHello comes one byte at a time."""
        rng = seeded_rng(self)
        with TlsTool('ctispy', *SEE_THROUGH, env=self.ENV) as tool:
            client, server = tool.connect()
            plain_part(self, client, server, rng)
            server.sendall(b'{"class": "starttls", "starttls": true}\n')
            answer = TlsEnd(server, serving(), server_side=True).next_flight()     # to the tool's ClientHello
            self.check_gives_up(tool, server, answer,
                                r'^ctispy: TLS handshake with the server \S+ \(STARTTLS\) failed: timed out$')
            client.close()


if __name__ == '__main__':
    unittest.main()
