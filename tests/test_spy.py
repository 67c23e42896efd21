"""End-to-end tests of ctispy: the real script between a scripted client and server."""

import codecs
import datetime
import json
import re
import socket
import time
import unittest

from tests.harness import (Tool, close_session, parse_raw_output, parse_spy_output, recv_exactly, recv_until_eof,
                           recv_until_eof_or_reset, reset, seeded_rng, send_in_pieces, spy_on_a_terminal)

SERVER_TRAFFIC = (b'XiVO CTI Server Version 1.2.3\n'
                  b'{"class": "login_id", "replyid": 1, "timenow": 1732712345.5, "sessionid": "abc"}\n'
                  b'{"class": "getlist", "function": "updatestatus", "tid": 17, '
                  b'"status": {"name": "H\\u00e9l\\u00e8ne \xf0\x9f\x98\x80"}, "timenow": 1.0}\n')
CLIENT_TRAFFIC = (b'{"class": "login_id", "commandid": 1, "userlogin": "alice"}\n'
                  b'{"class": "getlist", "commandid": 2, "function": "listid", "tid": "17"}\r\n')


def run_session(test, *args, client_traffic=CLIENT_TRAFFIC, server_traffic=SERVER_TRAFFIC, most=64):
    """One session through ctispy with traffic cut at random places; check the relay is exact."""
    rng = seeded_rng(test)
    with Tool('ctispy', *args) as tool:
        client, server = tool.connect()
        send_in_pieces(server, server_traffic, rng, most)
        test.assertEqual(recv_exactly(client, len(server_traffic)), server_traffic)
        send_in_pieces(client, client_traffic, rng, most)
        test.assertEqual(recv_exactly(server, len(client_traffic)), client_traffic)
        close_session(test, client, server)
        status, out, err = tool.finish()
    test.assertEqual(status, 0, err)
    test.assertNotIn('Traceback', err)
    return out.decode('utf-8'), err


def by_direction(out):
    """The bodies shown for each direction: (server's, client's), each in order.

    The order between the two directions is left to OutputTest.test_output_follows_arrival_order."""
    entries = parse_spy_output(out)
    return ([body for _, direction, body in entries if direction == 'Server > Client'],
            [body for _, direction, body in entries if direction == 'Client > Server'])


class SpyTest(unittest.TestCase):

    def test_default_output(self):
        out, err = run_session(self)
        entries = parse_spy_output(out)
        self.assertEqual(sorted((tag, direction) for tag, direction, _ in entries),
                         [(None, 'Client > Server')] * 2 + [(None, 'Server > Client')] * 3)
        server_bodies, client_bodies = by_direction(out)
        self.assertEqual(server_bodies[0], ['XiVO CTI Server Version 1.2.3'])
        self.assertEqual(json.loads(server_bodies[2][0])['status']['name'], 'H\u00e9l\u00e8ne \U0001f600')
        self.assertIn('H\u00e9l\u00e8ne \U0001f600', server_bodies[2][0])          # characters, not \u escapes
        self.assertEqual(json.loads(client_bodies[1][0]), {'class': 'getlist', 'commandid': 2,
                                                           'function': 'listid', 'tid': '17'})
        self.assertTrue(all(len(body) == 1 for body in server_bodies + client_bodies))

    def test_pretty_print(self):
        out, _ = run_session(self, '--pretty-print')
        message = {'class': 'login_id', 'commandid': 1, 'userlogin': 'alice'}
        self.assertEqual('\n'.join(by_direction(out)[1][0]), json.dumps(message, indent=4, sort_keys=True))

    def test_strip(self):
        out, _ = run_session(self, '--strip', 'timenow', '--strip', 'commandid', '--strip', 'replyid',
                             '--strip', 'status.name')
        server_bodies, client_bodies = by_direction(out)
        messages = [json.loads(body[0]) for body in server_bodies[1:] + client_bodies]
        self.assertEqual(len(messages), 4)
        for message in messages:
            for field in ('timenow', 'commandid', 'replyid'):
                self.assertNotIn(field, message)
        self.assertEqual(messages[1]['status'], {})

    def test_include(self):
        out, _ = run_session(self, '--include', 'class=getlist')
        entries = parse_spy_output(out)
        self.assertEqual([json.loads(body[0])['class'] for _, _, body in entries], ['getlist', 'getlist'])

    def test_include_matches_string_or_json(self):
        out, _ = run_session(self, '--include', 'tid=17')
        self.assertEqual(len(parse_spy_output(out)), 2)

    def test_no_client(self):
        out, _ = run_session(self, '--no-client')
        self.assertEqual({direction for _, direction, _ in parse_spy_output(out)}, {'Server > Client'})

    def test_no_server(self):
        out, _ = run_session(self, '--no-server')
        self.assertEqual({direction for _, direction, _ in parse_spy_output(out)}, {'Client > Server'})

    def test_raw_shows_every_byte(self):
        out, _ = run_session(self, '--raw', most=4096)
        self.assertIn(SERVER_TRAFFIC.decode('utf-8').split('\n')[0], out)

    def test_start_line_says_where(self):
        with Tool('ctispy') as tool:
            self.assertRegex(tool.start_line, r'^ctispy: listening on port \d+ of 127\.0\.0\.1; '
                                              r'relaying each client to 127\.0\.0\.1:\d+')

    def test_no_colour_in_a_pipe(self):
        out, _ = run_session(self)
        self.assertNotIn('\x1b', out)


ROUNDS = 1000
PLAIN_HEADER = re.compile(r'^    (\d\d):(\d\d):(\d\d)\.(\d{6}) (Client > Server|Server > Client)$')


def seconds_of_day(timestamp):
    moment = datetime.datetime.fromtimestamp(timestamp)
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


class OutputTest(unittest.TestCase):
    """ctispy's display: headers, one-line and pretty JSON, raw chunks, text lines."""

    def test_header_says_direction_and_arrival_time(self):
        before = time.time()
        out, _ = run_session(self)
        after = time.time()
        lines = [line for line in out.split('\n') if 'Server > Client' in line or 'Client > Server' in line]
        self.assertEqual(len(lines), 5)
        for line in lines:
            match = PLAIN_HEADER.match(line)
            self.assertTrue(match, repr(line))
            hours, minutes, seconds, micro = (int(part) for part in match.groups()[:4])
            shown = hours * 3600 + minutes * 60 + seconds + micro / 1e6
            if datetime.date.fromtimestamp(before) == datetime.date.fromtimestamp(after):
                self.assertTrue(seconds_of_day(before) - 0.001 <= shown <= seconds_of_day(after) + 0.001,
                                (line, before, after))

    def test_default_is_one_line_json_with_characters(self):
        message = {'class': 'chat', 'text': 'Caf\u00e9 \u2603 \U0001f600 "quoted" back\\slash',
                   'nested': {'b': [1, 2.5, None, True]}, 'to': 'Z\u00fcrich'}
        traffic = json.dumps(message).encode('ascii') + b'\n'        # sent with \\u escapes
        out, _ = run_session(self, server_traffic=traffic)
        body = by_direction(out)[0][0]
        self.assertEqual(len(body), 1)
        self.assertEqual(json.loads(body[0]), message)
        self.assertIn('Caf\u00e9 \u2603 \U0001f600', body[0])
        self.assertNotIn('\\u', body[0])

    def test_pretty_print_sorted_indented_with_characters(self):
        message = {'zeta': 1, 'class': 'getlist', 'status': {'name': 'H\u00e9l\u00e8ne \U0001f600', 'avail': 'away'},
                   'list': [{'b': 2, 'a': 1}], 'empty': {}}
        traffic = b'XiVO CTI Server Version 1.2.3\n' + json.dumps(message).encode('ascii') + b'\r\n'
        out, _ = run_session(self, '--pretty-print', server_traffic=traffic)
        server_bodies = by_direction(out)[0]
        self.assertEqual(server_bodies[0], ['XiVO CTI Server Version 1.2.3'])
        self.assertEqual('\n'.join(server_bodies[1]),
                         json.dumps(message, indent=4, sort_keys=True, ensure_ascii=False))

    def test_raw_shows_each_chunk_escaped(self):
        """Each chunk as received, its control characters and bytes that are not UTF-8 escaped (newlines kept):
        unescaped, the chunks give back every byte."""
        rng = seeded_rng(self)
        server_traffic = SERVER_TRAFFIC + b'\xff\xfe\x00 \x1b[31m not json\r\n{"partial": '
        with Tool('ctispy', '--raw') as tool:
            client, server = tool.connect()
            send_in_pieces(server, server_traffic, rng, 16)
            self.assertEqual(recv_exactly(client, len(server_traffic)), server_traffic)
            send_in_pieces(client, CLIENT_TRAFFIC, rng, 16)
            self.assertEqual(recv_exactly(server, len(CLIENT_TRAFFIC)), CLIENT_TRAFFIC)
            client.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(server), b'')
            server.close()
            client.close()
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        chunks = parse_raw_output(out)
        shown = b''.join(data for direction, data in chunks if direction == 'Server > Client')
        self.assertIn(b'\\xff\\xfe\\x00 \\x1b[31m not json\\x0d\n', shown)
        self.assertEqual(codecs.escape_decode(shown)[0], server_traffic)
        self.assertEqual(b''.join(data for direction, data in chunks if direction == 'Client > Server'),
                         CLIENT_TRAFFIC.replace(b'\r', b'\\x0d'))
        self.assertIsNone(re.search(r'[\x00-\x09\x0b-\x1f\x7f-\x9f]', out.decode('utf-8')))
        for line in out.split(b'\n'):
            if line.endswith((b'Server > Client', b'Client > Server')):
                self.assertTrue(PLAIN_HEADER.match(line.decode()), line)

    def test_output_follows_arrival_order(self):
        """A server message that reached the client before the client answered is shown before the answer."""
        with Tool('ctispy') as tool:
            client, server = tool.connect()
            for number in range(ROUNDS):
                request = b'{"class": "ping", "n": %d}\n' % number
                server.sendall(request)
                self.assertEqual(recv_exactly(client, len(request)), request)
                answer = b'{"class": "pong", "n": %d}\n' % number
                client.sendall(answer)
                self.assertEqual(recv_exactly(server, len(answer)), answer)
            client.close()
            self.assertEqual(recv_until_eof(server), b'')
            server.close()
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        shown = [(direction, body[0]) for _, direction, body in parse_spy_output(out.decode('utf-8'))]
        expected = [(direction, '{"class": "%s", "n": %d}' % (kind, number)) for number in range(ROUNDS)
                    for direction, kind in (('Server > Client', 'ping'), ('Client > Server', 'pong'))]
        misplaced = [number for number, (got, wanted) in enumerate(zip(shown, expected)) if got != wanted]
        self.assertEqual(len(shown), 2 * ROUNDS)
        first = shown[misplaced[0]:misplaced[0] + 3] if misplaced else None
        self.assertEqual(misplaced, [], '%d messages shown out of arrival order, first: %r' % (len(misplaced), first))

    def test_raw_without_client(self):
        with Tool('ctispy', '--raw', '--no-client') as tool:
            client, server = tool.connect()
            client.sendall(b'{"class": "hidden"}\n')
            self.assertEqual(recv_exactly(server, 20), b'{"class": "hidden"}\n')
            server.sendall(b'shown\xff')
            self.assertEqual(recv_exactly(client, 6), b'shown\xff')
            server.close()
            client.close()
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertEqual(parse_raw_output(out), [('Server > Client', b'shown\\xff')])

    def test_lines_that_are_not_messages_are_shown_as_text(self):
        server_traffic = (b'XiVO CTI Server Version 1.2.3\n'
                          b'{"class": broken\n'
                          b'\xff\xfe H\xc3\xa9l\xc3\xa8ne\n'
                          b'{"class": "bad utf-8 \xff"}\n'
                          b'[1, 2]\n'
                          b'"just a string"\n'
                          b'\x1b[31mred\x07\r\n'
                          b'{"class": "ok"}\n'
                          b'{"class": "no newline"}')
        client_traffic = b'{"class": "login_id"}\nunfinished \xe2\x82'
        out, _ = run_session(self, server_traffic=server_traffic, client_traffic=client_traffic)
        entries = parse_spy_output(out)
        self.assertEqual([body for _, direction, body in entries if direction == 'Server > Client'],
                         [['XiVO CTI Server Version 1.2.3'],
                          ['{"class": broken'],
                          ['\\xff\\xfe H\u00e9l\u00e8ne'],
                          ['{"class": "bad utf-8 \\xff"}'],
                          ['[1, 2]'],
                          ['"just a string"'],
                          ['\\x1b[31mred\\x07'],
                          ['{"class": "ok"}'],
                          ['{"class": "no newline"}']])
        self.assertEqual([body for _, direction, body in entries if direction == 'Client > Server'],
                         [['{"class": "login_id"}'], ['unfinished \\xe2\\x82']])

    def test_deep_nesting_and_lone_surrogates_are_shown(self):
        server_traffic = (b'{"a":' * 900 + b'1' + b'}' * 900 + b'\n' + b'{"a":' * 5000 + b'1' + b'}' * 5000 + b'\n' +
                          b'[' * 100000 + b']' * 100000 + b'\n' + b'{"class": "x", "s": "\\ud800"}\n{"end": 1}\n')
        for args in ([], ['--pretty-print'], ['--strip', 'a.a']):
            with self.subTest(args=args):
                out, err = run_session(self, *args, server_traffic=server_traffic, most=100000)
                self.assertNotIn('error', err)
                bodies = [body for _, direction, body in parse_spy_output(out) if direction == 'Server > Client']
                self.assertEqual(len(bodies), 5)
                self.assertEqual(json.loads('\n'.join(bodies[4])), {'end': 1})
                self.assertIn('"class"', bodies[3][0] + ''.join(bodies[3][1:]))

    def test_unfinished_line_shown_when_server_resets(self):
        with Tool('ctispy') as tool:
            client, server = tool.connect()
            server.sendall(b'{"class": "a"}\n{"class": "cut')
            self.assertEqual(recv_exactly(client, 29), b'{"class": "a"}\n{"class": "cut')
            reset(server)
            self.assertEqual(recv_until_eof_or_reset(client), b'')
            client.close()
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertEqual([body for _, _, body in parse_spy_output(out.decode('utf-8'))],
                         [['{"class": "a"}'], ['{"class": "cut']])

    def test_each_message_readable_before_the_session_ends(self):
        for args in ([], ['--pretty-print'], ['--raw'], ['--no-server']):
            with self.subTest(args=args), Tool('ctispy', *args) as tool:
                client, server = tool.connect()
                if '--no-server' not in args:
                    server.sendall(b'{"class": "first-from-server"}\n')
                    self.assertEqual(len(recv_exactly(client, 31)), 31)
                    tool.read_stdout_until(b'first-from-server')
                client.sendall(b'{"class": "then-from-client"}\n')
                self.assertEqual(len(recv_exactly(server, 30)), 30)
                tool.read_stdout_until(b'then-from-client')
                self.assertIsNone(tool.process.poll())
                client.close()
                self.assertEqual(recv_until_eof(server), b'')
                server.close()
                status, _, err = tool.finish()
                self.assertEqual(status, 0, err)


class ColourTest(unittest.TestCase):
    """Headers are coloured on a terminal only, and never with NO_COLOR."""

    def terminal_output(self, env=None):
        def session(tool):
            client, server = tool.connect()
            server.sendall(b'{"class": "from-server"}\n')
            recv_exactly(client, 25)
            client.sendall(b'{"class": "from-client"}\n')
            recv_exactly(server, 25)
            return client, server
        return spy_on_a_terminal(self, [], session, [b'from-server', b'from-client'], env=env)

    def test_headers_coloured_on_a_terminal(self):
        out = self.terminal_output()
        headers = [line for line in out.split('\n') if 'Server > Client' in line or 'Client > Server' in line]
        self.assertEqual(len(headers), 2, out)
        for header in headers:
            self.assertRegex(header, r'\x1b\[[0-9;]*m')
            plain = re.sub(r'\x1b\[[0-9;]*m', '', header)
            self.assertTrue(PLAIN_HEADER.match(plain), repr(header))

    def test_no_colour_with_no_color_set(self):
        out = self.terminal_output(env={'NO_COLOR': '1'})
        self.assertIn('Server > Client', out)
        self.assertNotIn('\x1b', out)


FILTER_SERVER = (b'XiVO CTI Server Version 1.2.3\n'
                 b'{"class": "keepalive", "timenow": 1}\n'
                 b'{"class": "getlist", "function": "updatestatus", "tid": 17, "status": {"availstate": "away"}, '
                 b'"on_call": false}\n'
                 b'{"class": "getlist", "function": "listid", "tid": "18", "on_call": 0}\n'
                 b'{"class": "phones", "on_call": "false", "status": {"availstate": "available"}}\n'
                 b'not json\n')
FILTER_CLIENT = (b'{"class": "keepalive", "commandid": 1}\n'
                 b'{"class": "getlist", "commandid": 2, "tid": "17"}\n')


class FilterTest(unittest.TestCase):
    """Filters through the real script: they choose what is shown, the relay stays exact."""

    def shown(self, *args):
        out, _ = run_session(self, *args, server_traffic=FILTER_SERVER, client_traffic=FILTER_CLIENT)
        server_bodies, client_bodies = by_direction(out)
        return [('S', body[0]) for body in server_bodies] + [('C', body[0]) for body in client_bodies]

    def test_exclude_repeated_key_hides_each(self):
        self.assertEqual(self.shown('--exclude', 'class=keepalive', '--exclude', 'class=getlist'),
                         [('S', 'XiVO CTI Server Version 1.2.3'),
                          ('S', '{"class": "phones", "on_call": "false", "status": {"availstate": "available"}}'),
                          ('S', 'not json')])

    def test_include_false_matches_false_and_string(self):
        shown = self.shown('--include', 'on_call=false')
        self.assertEqual([json.loads(body)['class'] for _, body in shown], ['getlist', 'phones'])
        self.assertFalse(json.loads(shown[0][1])['on_call'])

    def test_include_dotted_key(self):
        shown = self.shown('--include', 'status.availstate=away')
        self.assertEqual([json.loads(body)['function'] for _, body in shown], ['updatestatus'])

    def test_include_any_value_and_all_keys(self):
        shown = self.shown('--include', 'class=getlist', '--include', 'class=keepalive', '--include', 'tid=17')
        self.assertEqual([(direction, json.loads(body)['class']) for direction, body in shown],
                         [('S', 'getlist'), ('C', 'getlist')])

    def test_include_decides_before_strip(self):
        shown = self.shown('--include', 'tid=17', '--strip', 'tid', '--strip', 'status.availstate')
        self.assertEqual([(direction, json.loads(body)) for direction, body in shown],
                         [('S', {'class': 'getlist', 'function': 'updatestatus', 'status': {}, 'on_call': False}),
                          ('C', {'class': 'getlist', 'commandid': 2})])

    def test_exclude_with_no_server(self):
        self.assertEqual(self.shown('--no-server', '--exclude', 'class=keepalive'),
                         [('C', '{"class": "getlist", "commandid": 2, "tid": "17"}')])


if __name__ == '__main__':
    unittest.main()
