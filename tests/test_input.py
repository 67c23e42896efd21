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
