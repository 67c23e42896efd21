"""Hostile or odd input, end to end through the real tools: classes nested deep, numbers out of range,
--read of odd recordings (bad times, out of order, cut short, streamed from a pipe), abbreviated options."""

import json
import socket
import unittest

from tests.harness import Tool, recv_exactly, run_tool


def nested(depth, innermost='"x"'):
    """A JSON list nested depth deep."""
    return '[' * depth + innermost + ']' * depth


class DeepClassTest(unittest.TestCase):
    """A class nested about as deep as json reads: the line is counted like any other, and so is the rest."""

    def test_ctistat_counts_every_line_whatever_the_class(self):
        depths = range(900, 1101)
        lines = [('{"class": %s}\n' % nested(depth)).encode('ascii') for depth in depths]
        lines.append(b'{"class": "after"}\n')
        data = b''.join(lines)
        with Tool('ctistat', '--json') as tool:
            client, server = tool.connect()
            client.sendall(data)
            self.assertEqual(recv_exactly(server, len(data)), data)
            client.close()
            server.close()
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertNotIn('internal error', err)
        self.assertNotIn('Traceback', err)
        counts = json.loads(out.decode('utf-8'))['client']
        self.assertEqual(counts['messages'] + counts['invalid'], len(lines))
        self.assertEqual(counts['classes']['after'], 1)
        self.assertEqual(sum(counts['classes'].values()), counts['messages'])
        self.assertTrue(all(len(name) < 100 for name in counts['classes']), counts['classes'])


class AbbreviationTest(unittest.TestCase):
    """Options are spelled out: an abbreviation is a usage error naming it, never taken for another."""

    def test_abbreviated_read_is_a_usage_error(self):
        for name, args, needle in (('ctistat', ['--rea', 'recording.jsonl'], '--rea'),
                                   ('ctispy', ['--rea=recording.jsonl'], 'HOST'),
                                   ('ctisave', ['--re', 'recording.jsonl', 'client', 'server'], '--re'),
                                   ('ctispy', ['127.0.0.1', '--pretty'], '--pretty')):
            with self.subTest(tool=name, args=args):
                status, out, err = run_tool(name, *args)
                self.assertEqual(status, 2, err)
                self.assertEqual(out, b'')
                self.assertNotIn('Traceback', err)
                self.assertIn(needle, err.splitlines()[-1])

    def test_short_verbose_still_works(self):
        with Tool('ctispy', '-v') as tool:
            client, server = tool.connect()
            client.sendall(b'{"class": "x"}\n')
            recv_exactly(server, 15)
            client.shutdown(socket.SHUT_WR)
            server.close()
            client.close()
            status, _, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertIn('session #1', err)


if __name__ == '__main__':
    unittest.main()


def deep_requests():
    """Requests whose values are nested about as deep as json reads (the limit depends on the reader's stack)."""
    requests = []
    for depth in range(900, 1000, 4):
        value = nested(depth)
        requests += [
            '{"class": "login_id", "userlogin": %s}' % value,
            '{"class": "login_capas", "state": %s}' % value,
            '{"class": "getlist", "function": "updateconfig", "listname": "users", "tid": %s}' % value,
            '{"class": "getlist", "function": "updatestatus", "listname": %s}' % value,
            '{"class": "ipbxcommand", "command": "dial", "destination": %s}' % value,
            '{"class": "directory", "pattern": %s}' % value,
            '{"class": "history", "mode": %s}' % value,
            '{"class": "keepalive", "commandid": %s}' % value,
            '{"class": %s, "commandid": "hostile"}' % value,
            '{"class": "frobnicate", "commandid": "hostile", "x": %s}' % value,
        ]
    return requests


HOSTILE_REQUESTS = [
    '{"class": "history", "commandid": "hostile", "size": 1e400}',
    '{"class": "history", "commandid": "hostile", "size": -1e400}',
    '{"class": "history", "commandid": "hostile", "size": NaN}',
    '{"class": "history", "commandid": "hostile", "mode": 1e400}',
    '{"class": "history", "commandid": "hostile", "mode": -Infinity}',
    '{"class": "history", "commandid": "hostile", "size": "1e400"}',
    '{"class": "history", "commandid": "hostile", "size": 123456789012345678901234567890}',
    '{"class": "history", "commandid": "hostile", "mode": 123456789012345678901234567890}',
    '{"class": "getlist", "commandid": "hostile", "function": "updateconfig", "listname": "users", "tid": 1e400}',
    '{"class": "getlist", "commandid": "hostile", "function": "updateconfig", "listname": ["users"], "tid": "1"}',
    '{"class": "getlist", "commandid": "hostile", "function": {"a": 1}, "listname": "users"}',
    '{"class": "ipbxcommand", "commandid": "hostile", "command": "dial", "destination": 1e400}',
    '{"class": "ipbxcommand", "commandid": "hostile", "command": ["dial"]}',
    '{"class": "login_capas", "commandid": "hostile", "state": NaN}',
    '{"class": "keepalive", "commandid": NaN}',
    '{"class": "keepalive", "commandid": {"a": [1, 2]}}',
    '{"class": "directory", "commandid": "hostile", "pattern": 1e400}',
]


class HostileRequestTest(unittest.TestCase):
    """ctisim answers whatever a client sends, and the session goes on: no request costs a session."""

    def test_each_request_is_answered_and_the_session_goes_on(self):
        from tests.test_simulator import SimServer
        with SimServer('--users', '9') as server:
            talk = server.connect()
            for request in HOSTILE_REQUESTS + deep_requests():
                with self.subTest(request=request[:120]):
                    talk.sock.sendall(request.encode('ascii') + b'\n')
                    answer, _ = talk.ask('keepalive')      # fails on EOF if the session was dropped
                    self.assertEqual(answer['class'], 'keepalive')
            talk.quit()
            status, err = server.stop()
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
