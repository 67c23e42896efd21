"""Unit tests for framing: bytes to lines to messages."""

import json
import unittest

from tests.harness import random_cuts, seeded_rng
from ctiproxy.framing import PIECE_SIZE, Fragment, HeldBudget, LineSplitter, parse_message


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
            self.assertLess(splitter.held_size, 1000)

    def test_tiny_chunks_are_held_in_blocks(self):
        """A line arriving a byte at a time is held in blocks of up to PIECE_SIZE, not one object per chunk."""
        splitter = LineSplitter(8 << 20)
        for _ in range(50000):
            self.assertEqual(splitter.feed(b'z'), [])
        self.assertEqual(len(splitter._held), 1)
        big = b'q' * (PIECE_SIZE + 1)
        self.assertEqual(splitter.feed(big), [])
        self.assertEqual(splitter.feed(b'z'), [])
        self.assertEqual(splitter.held_size, 50001 + len(big))
        self.assertEqual(len(splitter._held), 3)
        self.assertIs(splitter._held[1], big, 'a large end is kept as it came, not copied')
        self.assertEqual(splitter.feed(b'\nnext'), [b'z' * 50000 + big + b'z'])
        self.assertEqual(splitter.held_size, 4)

    def test_overlong_line_goes_on_in_pieces_of_about_a_block(self):
        chunk = b'y' * 65536
        splitter = LineSplitter(2 * PIECE_SIZE)
        pieces = []
        for _ in range(100):                          # 6.25 MiB without a newline
            pieces.extend(splitter.feed(chunk))
            self.assertLessEqual(splitter.held_size, 2 * PIECE_SIZE + len(chunk))
        pieces.extend(splitter.feed(b'end\n{}\n'))
        self.assertEqual(pieces[-1], b'{}')
        self.assertEqual(b''.join(pieces[:-1]), chunk * 100 + b'end')
        self.assertTrue(all(type(piece) is Fragment for piece in pieces[:-1]))
        self.assertLessEqual(max(len(piece) for piece in pieces), PIECE_SIZE + len(chunk))
        self.assertEqual(splitter.held_size, 0)


class HeldBudgetTest(unittest.TestCase):
    """Splitters sharing a budget: together they hold at most its limit; the longest line is cut first."""

    def test_the_longest_unfinished_line_is_cut(self):
        budget = HeldBudget(1000)
        one, two, three = (LineSplitter(800, budget, owner=name) for name in ('one', 'two', 'three'))
        self.assertEqual(one.feed(b'a' * 600), [])
        self.assertEqual(two.feed(b'b' * 300), [])
        self.assertEqual(list(budget.relieve()), [])
        self.assertEqual(three.feed(b'c' * 200), [])
        self.assertEqual(budget.held, 1100)
        cuts = list(budget.relieve())
        self.assertEqual([(splitter.owner, pieces) for splitter, pieces in cuts], [('one', [b'a' * 600])])
        self.assertIs(type(cuts[0][1][0]), Fragment)
        self.assertEqual(budget.held, 500)
        # the cut line goes on in pieces; the others end whole
        self.assertEqual(one.feed(b'a\nx\n'), [b'a', b'x'])
        self.assertEqual(one.feed(b'tail'), [])
        self.assertEqual(one.finish(), [b'tail'])
        self.assertEqual(two.feed(b'b\n'), [b'b' * 301])
        self.assertIs(type(three.feed(b'\n')[0]), bytes)
        self.assertEqual(budget.held, 0)

    def test_random_feeds_stay_within_the_budget_and_lose_nothing(self):
        rng = seeded_rng(self)
        budget = HeldBudget(5000)
        splitters = [LineSplitter(4000, budget, owner=number) for number in range(6)]
        sent = [bytearray() for _ in splitters]
        got = [[] for _ in splitters]
        for _ in range(3000):
            number = rng.randrange(len(splitters))
            data = bytearray(b'x' * rng.randint(1, 900))
            for _ in range(rng.choice([0, 0, 1, 3])):
                data[rng.randrange(len(data))] = 10
            data = bytes(data)
            sent[number] += data
            got[number].extend(splitters[number].feed(data))
            for splitter, pieces in budget.relieve():
                got[splitter.owner].extend(pieces)
            self.assertLessEqual(budget.held, budget.limit)
            self.assertEqual(budget.held, sum(splitter.held_size for splitter in splitters))
        for number, splitter in enumerate(splitters):
            got[number].extend(splitter.finish())
            whole = [line for line in bytes(sent[number]).split(b'\n')]
            # every byte comes out once, in order; a line that is not a Fragment is a whole line of the stream
            self.assertEqual(b''.join(got[number]), bytes(sent[number]).replace(b'\n', b''))
            self.assertTrue(all(line in whole for line in got[number] if type(line) is bytes))
        self.assertEqual(budget.held, 0)


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
