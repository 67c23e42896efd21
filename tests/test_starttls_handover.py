"""Unit tests for StarttlsHandover (a session's STARTTLS, as both pumps see it) and for TlsConnection's
sharing of one TLS session by a reading and a writing thread."""

import os
import socket
import threading
import unittest

from tests.harness import in_parallel, recv_until_eof
from tests.test_tls import TlsEnd, serving, trusting
from ctiproxy.filters import CLIENT, SERVER
from ctiproxy.tls import ENCRYPTED, REFUSE, RELAY, START_TLS, StarttlsHandover, StarttlsWatch, TlsConnection

OFFER = b'{"class": "starttls"}\n'
CONFIRM = b'{"class": "starttls", "starttls": true}\n'
HELLO = b'\x16\x03\x01\x00\x05hello'


class SeenThroughTest(unittest.TestCase):

    def test_both_sides_held_from_the_confirmation_to_their_upgrade(self):
        handover = StarttlsHandover(sees_through=True)
        self.assertEqual(handover.server_sent(OFFER), (OFFER, None))
        self.assertEqual(handover.client_sent(b'{"class": "starttls", "status": true}\n'), RELAY)
        self.assertTrue(handover.may_write(SERVER) and handover.may_write(CLIENT))
        self.assertEqual(handover.server_sent(CONFIRM + b'\x16tls'), (CONFIRM + b'\x16tls', len(CONFIRM)))
        self.assertFalse(handover.may_write(SERVER) or handover.may_write(CLIENT))
        self.assertFalse(handover.over)
        self.assertTrue(handover.stalls_on_end(CLIENT))
        self.assertEqual(handover.client_sent(HELLO), START_TLS)
        handover.upgraded(CLIENT)
        self.assertTrue(handover.may_write(CLIENT))
        self.assertFalse(handover.may_write(SERVER))
        self.assertFalse(handover.over)
        handover.upgraded(SERVER)
        self.assertTrue(handover.over)
        self.assertFalse(handover.stalls_on_end(CLIENT) or handover.stalls_on_end(SERVER))

    def test_clear_text_instead_of_tls_is_refused(self):
        handover = StarttlsHandover(sees_through=True)
        handover.server_sent(CONFIRM)
        self.assertEqual(handover.client_sent(b'{"class": "keepalive"}\n'), REFUSE)

    def test_server_upgrade_waits_for_the_clear_writes_under_way(self):
        """The client's clear bytes, relayed before the confirmation, are on their way to the server: its
        handshake waits for them (they are not encrypted, nor mixed with the handshake)."""
        handover = StarttlsHandover(sees_through=True)
        self.assertEqual(handover.client_sent(b'early\n'), RELAY)
        handover.write_started(SERVER)
        handover.server_sent(CONFIRM)
        self.assertFalse(handover.may_upgrade(SERVER))
        handover.write_ended(SERVER)
        self.assertTrue(handover.may_upgrade(SERVER))


class PassedThroughTest(unittest.TestCase):

    def test_client_tls_announced_once(self):
        handover = StarttlsHandover(sees_through=False)
        handover.server_sent(OFFER + CONFIRM)
        self.assertTrue(handover.may_write(SERVER) and handover.may_write(CLIENT))
        self.assertEqual(handover.client_sent(b'clear, before its TLS\n'), RELAY)
        self.assertFalse(handover.over)
        self.assertEqual(handover.client_sent(HELLO), ENCRYPTED)
        self.assertTrue(handover.over)
        self.assertEqual(handover.client_sent(HELLO), RELAY)

    def test_over_when_the_opening_ends_without_starttls(self):
        handover = StarttlsHandover()
        handover.server_sent(b'{"class": "x"}\n' * (StarttlsWatch.WATCH_LIMIT // 15 + 1))
        self.assertTrue(handover.over)
        self.assertEqual(handover.client_sent(HELLO), RELAY)

    def test_held_back_bytes_given_when_the_server_ends(self):
        handover = StarttlsHandover(hide_offer=True)
        self.assertEqual(handover.server_sent(b'{"unfinished": 1'), (b'', None))
        self.assertFalse(handover.over)
        self.assertEqual(handover.server_ended(), b'{"unfinished": 1')
        self.assertTrue(handover.over)


def tls_pair():
    """A TlsConnection (the tool's, as a TLS client) and its peer's TlsEnd, over loopback TCP, after the handshake."""
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen(1)
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    connection = TlsConnection(ours, trusting('server'), server_side=False, server_hostname='localhost')
    peer = TlsEnd(theirs, serving(), server_side=True)
    in_parallel(connection.handshake, peer.handshake, what='the handshake')
    return connection, peer


class TlsConnectionTest(unittest.TestCase):

    def test_ending_the_sending_keeps_the_records_not_yet_read(self):
        """shutdown_write() while records are received and not yet decrypted: they are all read after it."""
        connection, peer = tls_pair()
        sent = os.urandom(200000)
        in_parallel(lambda: (peer.sendall(sent), peer.shutdown_write()), what='the peer\'s sending')
        got = connection.recv()                 # the first record; the next ones wait in the TLS state
        connection.shutdown_write()
        while True:
            data = connection.recv()
            if not data:
                break
            got += data
        self.assertTrue(got == sent, 'got %d of %d bytes' % (len(got), len(sent)))
        self.assertFalse(connection.ragged_end)
        self.assertEqual(recv_until_eof(peer), b'')
        self.assertTrue(peer.close_notify)
        for end in (connection.sock, peer):
            end.close()

    def test_reader_does_not_wait_for_a_blocked_writer(self):
        """The writer is blocked on a peer that does not read, and the reader has a TLS record of its own to
        send (as after a key update, which the ssl module cannot ask for: put in by hand): the reader goes on."""
        connection, peer = tls_pair()
        blocked = SendingBlocked(connection.sock)
        connection.sock = blocked
        writing = threading.Thread(target=self.write_until_closed, args=(connection,), daemon=True)
        writing.start()
        self.assertTrue(blocked.entered.wait(10), 'the writer did not send')
        connection._outgoing.write(b'\x17answer')
        peer.sendall(b'the other direction')
        got = in_parallel(connection.recv, what='the reader')[0]
        self.assertEqual(got, b'the other direction')
        blocked.release.set()
        blocked.sock.shutdown(socket.SHUT_RDWR)
        writing.join(10)
        for end in (blocked.sock, peer):
            end.close()

    def write_until_closed(self, connection):
        try:
            connection.sendall(b'x' * 100000)
        except OSError:
            pass


class SendingBlocked:
    """A socket whose sending waits until release is set, as to a peer that does not read (entered: a sendall()
    is waiting); its receiving is the socket's own."""

    def __init__(self, sock):
        self.sock = sock
        self.recv = sock.recv
        self.entered, self.release = threading.Event(), threading.Event()

    def sendall(self, data):
        self.entered.set()
        self.release.wait()
        raise BrokenPipeError('released')

    def send(self, data, flags=0):
        raise BlockingIOError('the peer does not read')


if __name__ == '__main__':
    unittest.main()
