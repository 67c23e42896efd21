"""End-to-end tests of the relay, through ctispy: bytes, half-close, resets, failures, sessions."""

import json
import random
import signal
import socket
import subprocess
import sys
import unittest

from tests.harness import (TIMEOUT, Tool, close_session, closed_port, exchange, exchange_all, notes, parse_spy_output,
                           read_fd_until_all, recv_exactly, recv_until_eof, recv_until_eof_or_reset, reset, seeded_rng,
                           send_in_pieces, tool_path)

BANNER = b'XiVO CTI Server Version 1.2.3\r\n'


def json_line(message):
    return json.dumps(message, ensure_ascii=False).encode('utf-8') + b'\n'


def messages_bytes(side, count, tag=''):
    """count CTI-like messages for one side, some with CRLF and non-ASCII text."""
    key = 'commandid' if side == 'client' else 'replyid'
    lines = []
    for number in range(count):
        line = json_line({'class': 'getlist', key: number, 'tag': tag, 'name': 'H\u00e9l\u00e8ne \U0001f600'})
        lines.append(line[:-1] + b'\r\n' if number % 3 == 0 else line)
    return b''.join(lines)


def shown_messages(entries, direction, tag=None, any_tag=False):
    """The JSON messages shown for one direction (and one session tag)."""
    return [json.loads(body[0]) for entry_tag, entry_direction, body in entries
            if entry_direction == direction and (any_tag or entry_tag == tag)]


def ended_cleanly(test, status, err):
    test.assertEqual(status, 0, err)
    test.assertNotIn('Traceback', err)


class BytesTest(unittest.TestCase):
    """Every byte is forwarded unchanged, both ways."""

    def test_any_bytes_both_ways_at_once_in_random_cuts(self):
        rng = seeded_rng(self)
        noise = bytes(rng.randrange(256) for _ in range(20000))
        to_client = BANNER + messages_bytes('server', 300) + noise + b'\xff\xfe\x00\r\n\n\n' + noise
        to_server = messages_bytes('client', 300) + noise + b'{"broken": \n\x00\x01' + noise
        with Tool('ctispy') as tool:
            client, server = tool.connect()
            got_server, got_client = exchange(client, server, to_server, to_client, rng, most=300)
            self.assertEqual(got_client, to_client)
            self.assertEqual(got_server, to_server)
            close_session(self, client, server)
            status, _, err = tool.finish()
        ended_cleanly(self, status, err)

    def test_banner_and_crlf_unchanged_and_shown(self):
        rng = seeded_rng(self)
        to_client = BANNER + b'{"class": "login_id", "replyid": 1}\r\n'
        to_server = b'{"class": "login_id", "commandid": 1}\r\n'
        with Tool('ctispy') as tool:
            client, server = tool.connect()
            send_in_pieces(server, to_client, rng, 3)
            self.assertEqual(recv_exactly(client, len(to_client)), to_client)
            send_in_pieces(client, to_server, rng, 3)
            self.assertEqual(recv_exactly(server, len(to_server)), to_server)
            close_session(self, client, server)
            status, out, err = tool.finish()
        ended_cleanly(self, status, err)
        entries = parse_spy_output(out.decode('utf-8'))
        self.assertEqual([body for _, direction, body in entries if direction == 'Server > Client'],
                         [['XiVO CTI Server Version 1.2.3'], ['{"class": "login_id", "replyid": 1}']])
        self.assertEqual([body for _, direction, body in entries if direction == 'Client > Server'],
                         [['{"class": "login_id", "commandid": 1}']])

    def test_message_of_several_megabytes(self):
        rng = seeded_rng(self)
        big_server = {'class': 'getlist', 'function': 'listid',
                      'list': ['H\u00e9l\u00e8ne-%07d' % number for number in range(400000)]}
        big_client = {'class': 'history', 'commandid': 7, 'blob': 'x' * (3 << 20)}
        to_client, to_server = json_line(big_server), json_line(big_client)
        self.assertGreater(len(to_client), 5 << 20)
        with Tool('ctispy') as tool:
            client, server = tool.connect()
            got_server, got_client = exchange(client, server, to_server, to_client, rng, most=200000)
            self.assertTrue(got_client == to_client, 'the big server message was not relayed unchanged')
            self.assertTrue(got_server == to_server, 'the big client message was not relayed unchanged')
            close_session(self, client, server)
            status, out, err = tool.finish()
        ended_cleanly(self, status, err)
        entries = parse_spy_output(out.decode('utf-8'))
        self.assertEqual(len(entries), 2)
        self.assertTrue(shown_messages(entries, 'Server > Client') == [big_server], 'big server message not shown')
        self.assertTrue(shown_messages(entries, 'Client > Server') == [big_client], 'big client message not shown')

    def test_many_messages_in_one_chunk(self):
        to_client = messages_bytes('server', 3000)
        to_server = messages_bytes('client', 1000)
        with Tool('ctispy') as tool:
            client, server = tool.connect()
            server.sendall(to_client)
            self.assertEqual(recv_exactly(client, len(to_client)), to_client)
            client.sendall(to_server)
            self.assertEqual(recv_exactly(server, len(to_server)), to_server)
            close_session(self, client, server)
            status, out, err = tool.finish()
        ended_cleanly(self, status, err)
        entries = parse_spy_output(out.decode('utf-8'))
        self.assertEqual([message['replyid'] for message in shown_messages(entries, 'Server > Client')],
                         list(range(3000)))
        self.assertEqual([message['commandid'] for message in shown_messages(entries, 'Client > Server')],
                         list(range(1000)))


class HalfCloseTest(unittest.TestCase):
    """When one side ends its sending, the other direction keeps flowing; nothing is dropped."""

    def test_server_sends_then_closes(self):
        rng = seeded_rng(self)
        to_client = BANNER + messages_bytes('server', 5000) + b'{"class": "last"}\n'
        with Tool('ctispy') as tool:
            client, server = tool.connect()
            send_in_pieces(server, to_client, rng, 4096)
            server.close()
            self.assertEqual(recv_until_eof(client), to_client)
            client.close()
            status, out, err = tool.finish()
        ended_cleanly(self, status, err)
        entries = parse_spy_output(out.decode('utf-8'))
        self.assertEqual(len(entries), 5002)
        self.assertEqual(entries[-1][2], ['{"class": "last"}'])

    def check_keeps_sending(self, ending):
        """`ending` sends 50 messages and ends its sending; the other side then sends 2000, all relayed."""
        rng = seeded_rng(self)
        other = 'client' if ending == 'server' else 'server'
        first, then = messages_bytes(ending, 50, 'before'), messages_bytes(other, 2000, 'after')
        with Tool('ctispy') as tool:
            client, server = tool.connect()
            ender, receiver = (server, client) if ending == 'server' else (client, server)
            send_in_pieces(ender, first, rng, 512)
            ender.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(receiver), first)
            to_server, to_client = (then, b'') if other == 'client' else (b'', then)
            self.assertEqual(exchange(client, server, to_server, to_client, rng, 512), (to_server, to_client))
            receiver.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(ender), b'')
            server.close()
            client.close()
            status, out, err = tool.finish()
        ended_cleanly(self, status, err)
        entries = parse_spy_output(out.decode('utf-8'))
        directions = {'client': 'Client > Server', 'server': 'Server > Client'}
        key = 'commandid' if other == 'client' else 'replyid'
        self.assertEqual(len(shown_messages(entries, directions[ending])), 50)
        self.assertEqual([message[key] for message in shown_messages(entries, directions[other])],
                         list(range(2000)))

    def test_client_keeps_sending_after_server_ends(self):
        self.check_keeps_sending('server')

    def test_server_keeps_sending_after_client_ends(self):
        self.check_keeps_sending('client')


class ResetTest(unittest.TestCase):
    """A reset on either side ends the session and closes the other side."""

    def check_reset(self, resetting, *args):
        with Tool('ctispy', *args) as tool:
            client, server = tool.connect()
            server.sendall(b'{"class": "from-server"}\n')
            self.assertEqual(recv_exactly(client, 25), b'{"class": "from-server"}\n')
            client.sendall(b'{"class": "from-client"}\n')
            self.assertEqual(recv_exactly(server, 25), b'{"class": "from-client"}\n')
            survivor = server if resetting == 'client' else client
            reset(client if resetting == 'client' else server)
            self.assertEqual(recv_until_eof_or_reset(survivor), b'')
            survivor.close()
            if '--loop' in args:
                client, server = tool.connect()
                server.sendall(b'{"class": "next"}\n')
                self.assertEqual(recv_exactly(client, 18), b'{"class": "next"}\n')
                close_session(self, client, server)
                status, out, err = tool.stop(signal.SIGINT)
            else:
                status, out, err = tool.finish()
        ended_cleanly(self, status, err)
        entries = parse_spy_output(out.decode('utf-8'))
        self.assertEqual(shown_messages(entries, 'Server > Client', any_tag=True)[0], {'class': 'from-server'})
        self.assertEqual(shown_messages(entries, 'Client > Server', any_tag=True), [{'class': 'from-client'}])
        return entries

    def test_client_reset(self):
        self.check_reset('client')

    def test_server_reset(self):
        self.check_reset('server')

    def test_reset_with_loop_then_next_session(self):
        entries = self.check_reset('client', '--loop')
        self.assertEqual(shown_messages(entries, 'Server > Client', any_tag=True)[1], {'class': 'next'})


class StartFailureTest(unittest.TestCase):
    """Problems found before relaying: one line on stderr, exit code 1."""

    def check_one_line(self, tool, *needles):
        status, out, err = tool.finish()
        self.assertEqual(status, 1, err)
        self.assertNotIn('Traceback', err)
        lines = [line for line in err.splitlines() if line]
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith('ctispy: '), lines[0])
        for needle in needles:
            self.assertIn(needle, lines[0])
        self.assertEqual(out, b'')

    def test_unresolvable_host(self):
        with Tool('ctispy', host='nonexistent.invalid', server=False, port=5003) as tool:
            self.check_one_line(tool, 'nonexistent.invalid')

    def test_busy_listening_port(self):
        with socket.socket() as busy:
            busy.bind(('127.0.0.1', 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            with Tool('ctispy', '--listen-port', str(port)) as tool:
                self.check_one_line(tool, '127.0.0.1', str(port))

    def test_busy_listening_port_on_all_interfaces(self):
        with socket.socket() as busy:
            busy.bind(('0.0.0.0', 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            done = subprocess.run([sys.executable, tool_path('ctispy'), '127.0.0.1', '--listen-port', str(port)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=TIMEOUT)
        err = done.stderr.decode('utf-8', 'replace')
        self.assertEqual(done.returncode, 1, err)
        self.assertNotIn('Traceback', err)
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertIn(str(port), lines[0])
        self.assertIn('all interfaces', lines[0])

    def test_unusable_listen_address(self):
        with Tool('ctispy', '--listen-addr', 'nonexistent.invalid') as tool:
            self.check_one_line(tool, 'nonexistent.invalid')


class ServerUnreachableTest(unittest.TestCase):
    """The server refuses the connection: say so on one line, close the client."""

    def test_refused_without_loop(self):
        port = closed_port()
        with Tool('ctispy', server=False, port=port) as tool:
            client = tool.connect_client_only()
            self.assertEqual(recv_until_eof(client), b'')
            client.close()
            status, out, err = tool.finish()
        self.assertEqual(status, 1, err)
        self.assertNotIn('Traceback', err)
        self.assertEqual(len(notes(err)), 1, err)
        self.assertIn('127.0.0.1:%d' % port, notes(err)[0])
        self.assertIn('refused', notes(err)[0].lower())
        self.assertEqual(out, b'')

    def test_refused_with_loop_keeps_listening(self):
        port = closed_port()
        with Tool('ctispy', '--loop', server=False, port=port) as tool:
            client = tool.connect_client_only()
            self.assertEqual(recv_until_eof(client), b'')
            client.close()
            self.assertIsNone(tool.process.poll())
            with socket.socket() as listener:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(('127.0.0.1', port))
                listener.listen(1)
                client = tool.connect_client_only()
                listener.settimeout(TIMEOUT)
                server, _ = listener.accept()
            server.sendall(b'{"class": "welcome"}\n')
            self.assertEqual(recv_exactly(client, 21), b'{"class": "welcome"}\n')
            close_session(self, client, server)
            status, out, err = tool.stop(signal.SIGINT)
        ended_cleanly(self, status, err)
        refusals = [line for line in notes(err) if '127.0.0.1:%d' % port in line]
        self.assertEqual(len(refusals), 1, err)
        self.assertEqual(parse_spy_output(out.decode('utf-8'))[0][2], ['{"class": "welcome"}'])


class SessionsTest(unittest.TestCase):
    """One session without --loop; sequential and concurrent sessions with --loop."""

    def test_one_session_then_exit_with_complete_output(self):
        with Tool('ctispy') as tool:
            client, server = tool.connect()
            client.sendall(b'{"class": "login_id", "commandid": 1}\n')
            self.assertEqual(len(recv_exactly(server, 38)), 38)
            server.sendall(b'{"class": "login_id", "replyid": 1}\n{"class": "bye"}\n')
            server.close()
            recv_until_eof(client)
            client.close()
            status, out, err = tool.finish()
        ended_cleanly(self, status, err)
        entries = parse_spy_output(out.decode('utf-8'))
        self.assertEqual([body for _, direction, body in entries if direction == 'Client > Server'],
                         [['{"class": "login_id", "commandid": 1}']])
        self.assertEqual([body for _, direction, body in entries if direction == 'Server > Client'],
                         [['{"class": "login_id", "replyid": 1}'], ['{"class": "bye"}']])

    def test_sequential_sessions_with_loop(self):
        rng = seeded_rng(self)
        with Tool('ctispy', '--loop') as tool:
            for number in range(3):
                client, server = tool.connect()
                got_server, got_client = exchange(client, server, messages_bytes('client', 20, str(number)),
                                                  messages_bytes('server', 30, str(number)), rng)
                self.assertEqual(got_server, messages_bytes('client', 20, str(number)))
                self.assertEqual(got_client, messages_bytes('server', 30, str(number)))
                close_session(self, client, server)
            status, out, err = tool.stop(signal.SIGINT)
        ended_cleanly(self, status, err)
        entries = parse_spy_output(out.decode('utf-8'))
        self.assertEqual([(message['tag'], message['commandid'])
                          for message in shown_messages(entries, 'Client > Server', any_tag=True)],
                         [(str(number), command) for number in range(3) for command in range(20)])
        self.assertEqual([(message['tag'], message['replyid'])
                          for message in shown_messages(entries, 'Server > Client', any_tag=True)],
                         [(str(number), reply) for number in range(3) for reply in range(30)])

    def test_concurrent_sessions_with_loop(self):
        rng = seeded_rng(self)
        count = 5
        rngs = [random.Random(rng.getrandbits(32)) for _ in range(count)]
        with Tool('ctispy', '--loop') as tool:
            sessions = [tool.connect() for _ in range(count)]
            hellos = [json_line({'class': 'hello', 'session': number + 1}) for number in range(count)]
            for (client, server), hello in zip(sessions, hellos):
                server.sendall(hello)
                self.assertEqual(recv_exactly(client, len(hello)), hello)
            # once every hello is shown, all the sessions are open: what follows carries session tags
            seen = read_fd_until_all(tool.process.stdout.fileno(), [hello[:-1] for hello in hellos])
            traffic = [(messages_bytes('client', 40, str(number + 1)), messages_bytes('server', 60, str(number + 1)))
                       for number in range(count)]
            results = exchange_all(sessions, traffic, rngs, 128)
            self.assertEqual(results, traffic)
            # every message shown before any session ends, so that all carry their session's tag
            lasts = [line.rstrip(b'\r\n') for client_bytes, server_bytes in traffic
                     for line in (client_bytes.splitlines()[-1], server_bytes.splitlines()[-1])]
            seen = read_fd_until_all(tool.process.stdout.fileno(), lasts, already=seen)
            for client, server in sessions:
                close_session(self, client, server)
            status, rest, err = tool.stop(signal.SIGINT)
        ended_cleanly(self, status, err)
        entries = parse_spy_output((seen + rest).decode('utf-8'))
        later = [entry for entry in entries if json.loads(entry[2][0])['class'] != 'hello']
        self.assertEqual(len(later), count * 100)
        for number in range(1, count + 1):
            tag = str(number)
            self.assertEqual([(message['tag'], message['commandid'])
                              for message in shown_messages(later, 'Client > Server', tag)],
                             [(tag, command) for command in range(40)])
            self.assertEqual([(message['tag'], message['replyid'])
                              for message in shown_messages(later, 'Server > Client', tag)],
                             [(tag, reply) for reply in range(60)])


if __name__ == '__main__':
    unittest.main()
