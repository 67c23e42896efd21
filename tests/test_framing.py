"""Unit tests for framing: bytes to lines to messages."""

import json
import unittest

from tests.harness import random_cuts, seeded_rng
from ctiproxy.framing import Fragment, LineSplitter, parse_message


def split_all(pieces, max_line_size=1 << 20):
    splitter = LineSplitter(max_line_size)
    lines = []
    for piece in pieces:
        lines.extend(splitter.feed(piece))
    return lines + splitter.finish()


class LineSplitterTest(unittest.TestCase):

    def test_lines_in_one_chunk(self):
        self.assertEqual(split_all([b'a\nbb\n\nccc\n']), [b'a', b'bb', b'', b'ccc'])

    def test_line_across_chunks(self):
        self.assertEqual(split_all([b'{"a":', b' 1', b'}\n{"b"', b': 2}\n']), [b'{"a": 1}', b'{"b": 2}'])

    def test_unfinished_line_is_a_fragment_at_the_end(self):
        lines = split_all([b'one\ntw', b'o'])
        self.assertEqual(lines, [b'one', b'two'])
        self.assertIs(type(lines[0]), bytes)
        self.assertIs(type(lines[1]), Fragment)

    def test_nothing_held_gives_nothing_at_the_end(self):
        self.assertEqual(split_all([b'x\n']), [b'x'])
        self.assertEqual(split_all([]), [])

    def test_random_cuts_give_the_same_lines(self):
        rng = seeded_rng(self)
        stream = b''.join(b'{"class": "x", "n": %d, "name": "H\xc3\xa9l\xc3\xa8ne \xf0\x9f\x98\x80"}\n' % i
                          for i in range(300)) + b'tail'
        whole = split_all([stream])
        for _ in range(20):
            self.assertEqual(split_all(random_cuts(stream, rng, most=rng.choice([1, 7, 300]))), whole)

    def test_overlong_line_comes_in_fragments_and_the_next_line_is_whole(self):
        lines = split_all([b'x' * 10, b'y' * 10, b'z\n{"a": 1}\n'], max_line_size=16)
        self.assertEqual(b''.join(lines[:-1]), b'x' * 10 + b'y' * 10 + b'z')
        self.assertTrue(all(type(line) is Fragment for line in lines[:-1]))
        self.assertEqual(lines[-1], b'{"a": 1}')
        self.assertIs(type(lines[-1]), bytes)

    def test_overlong_line_ending_at_a_piece_boundary_leaves_no_empty_piece(self):
        lines = split_all([b'x' * 16, b'\nok\n'], max_line_size=16)
        self.assertEqual(lines, [b'x' * 16, b'ok'])

    def test_held_data_is_bounded(self):
        splitter = LineSplitter(1000)
        for _ in range(100):
            splitter.feed(b'a' * 300)
            self.assertLess(splitter._held_size, 1000)


class ParseMessageTest(unittest.TestCase):

    def test_object(self):
        self.assertEqual(parse_message(b'{"class": "login_id", "n": 1}'), {'class': 'login_id', 'n': 1})

    def test_crlf_is_tolerated(self):
        self.assertEqual(parse_message(b'{"class": "x"}\r'), {'class': 'x'})

    def test_lines_that_are_not_messages(self):
        for line in [b'XiVO CTI Server Version 1.2.3', b'', b'[1, 2]', b'42', b'"s"', b'{"cut": ',
                     b'{"a": "\xff"}', b'\x00\x01', b'{' * 200000 + b'}' * 200000]:
            self.assertIsNone(parse_message(line), line[:40])

    def test_fragment_is_never_a_message(self):
        self.assertIsNone(parse_message(Fragment(b'{"a": 1}')))

    def test_non_ascii(self):
        message = parse_message(json.dumps({'name': 'H\u00e9l\u00e8ne \U0001f600'}).encode())
        self.assertEqual(message['name'], 'H\u00e9l\u00e8ne \U0001f600')


if __name__ == '__main__':
    unittest.main()
