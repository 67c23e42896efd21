"""End-to-end tests of ctispy: the real script between a scripted client and server."""

import json
import socket
import unittest

from tests.harness import Tool, parse_spy_output, recv_exactly, recv_until_eof, seeded_rng, send_in_pieces

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
        client.shutdown(socket.SHUT_WR)
        test.assertEqual(recv_until_eof(server), b'')
        server.close()
        test.assertEqual(recv_until_eof(client), b'')
        client.close()
        status, out, err = tool.finish()
    test.assertEqual(status, 0, err)
    test.assertNotIn('Traceback', err)
    return out.decode('utf-8'), err


class SpyTest(unittest.TestCase):

    def test_default_output(self):
        out, err = run_session(self)
        entries = parse_spy_output(out)
        self.assertEqual([(tag, direction) for tag, direction, _ in entries],
                         [(None, 'Server > Client')] * 3 + [(None, 'Client > Server')] * 2)
        bodies = [body for _, _, body in entries]
        self.assertEqual(bodies[0], ['XiVO CTI Server Version 1.2.3'])
        self.assertEqual(json.loads(bodies[2][0])['status']['name'], 'H\u00e9l\u00e8ne \U0001f600')
        self.assertIn('H\u00e9l\u00e8ne \U0001f600', bodies[2][0])          # characters, not \u escapes
        self.assertEqual(json.loads(bodies[4][0]), {'class': 'getlist', 'commandid': 2,
                                                    'function': 'listid', 'tid': '17'})
        self.assertTrue(all(len(body) == 1 for body in bodies))

    def test_pretty_print(self):
        out, _ = run_session(self, '--pretty-print')
        entries = parse_spy_output(out)
        message = {'class': 'login_id', 'commandid': 1, 'userlogin': 'alice'}
        self.assertEqual('\n'.join(entries[3][2]), json.dumps(message, indent=4, sort_keys=True))

    def test_strip(self):
        out, _ = run_session(self, '--strip', 'timenow', '--strip', 'commandid', '--strip', 'replyid',
                             '--strip', 'status.name')
        messages = [json.loads(body[0]) for _, _, body in parse_spy_output(out)[1:]]
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
            self.assertRegex(tool.start_line, r'^ctispy: listening on port \d+ of 127\.0\.0\.1; relaying each client to 127\.0\.0\.1:\d+')


if __name__ == '__main__':
    unittest.main()
