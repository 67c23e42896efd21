"""Fuzz of the framing: random streams of good and bad lines, cut anywhere, give what the whole stream gives.

The expected lines come from an oracle written from the spec, not from the code: the stream split on
b'\\n'; a line decoded as a message when it is UTF-8 JSON holding an object and is no longer than
max_line_size; a longer line, and what follows the last newline, handed on as Fragment pieces.
Consecutive Fragment pieces are compared joined, since where a piece ends depends on the cuts.
"""

import json
import unittest

from tests.harness import oracle_message, random_cuts, seeded_rng
from ctiproxy.framing import Fragment, LineSplitter, parse_message

WORDS = ['a', 'class', 'getlist', 'H\u00e9l\u00e8ne', '\U0001f600', 'say "hi"', 'tab\there', 'back\\slash',
         '\u2028', 'x' * 40, '', ' ', '\x00', '{', '}', '\n', '\r']


def random_value(rng, depth=0):
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice(WORDS)
    if kind == 1:
        return rng.randint(-10 ** 12, 10 ** 12)
    if kind == 2:
        return rng.choice([0.5, -1e-07, 1e300, 2.25, float('inf')])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return ''.join(rng.choice(WORDS) for _ in range(rng.randint(0, 4)))
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(WORDS): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def message_line(rng):
    message = {'class': rng.choice(WORDS), 'commandid': rng.randint(0, 99)}
    message.update({rng.choice(WORDS): random_value(rng) for _ in range(rng.randint(0, 5))})
    return json.dumps(message, ensure_ascii=rng.random() < 0.5).encode('utf-8')


def bad_line(rng):
    """A line that is not a message (or a CRLF one that is), never holding b'\\n'."""
    kind = rng.randrange(12)
    if kind == 0:
        return b'XiVO CTI Server Version 1.2.%d' % rng.randint(0, 99)
    if kind == 1:                       # JSON cut in the middle
        line = message_line(rng)
        return line[:rng.randint(0, len(line) - 1)]
    if kind == 2:                       # not UTF-8, inside JSON or not
        return rng.choice([b'\xff\xfe', b'{"class": "\xc3\x28"}', b'\xed\xa0\x80', b'caf\xe9', b'\xf0\x9f\x98'])
    if kind == 3:                       # a message with CRLF
        return message_line(rng) + b'\r'
    if kind == 4:
        return rng.choice([b'', b'\r', b' ', b'\t \r'])
    if kind == 5:
        return rng.choice([b'[1, 2]', b'42', b'"s"', b'null', b'true', b'[]', b'-0.5e3'])
    if kind == 6:
        return b'\x00' * rng.randint(1, 3) + message_line(rng)
    if kind == 7:                       # deeper than the decoder goes
        depth = rng.choice([3000, 10000])
        return rng.choice([b'[' * depth + b']' * depth, b'{"a":' * depth + b'1' + b'}' * depth])
    if kind == 8:
        return message_line(rng) + rng.choice([b'{}', b' x', b'\x00', b',', b'}'])
    if kind == 9:                       # random bytes, any but b'\n'
        return bytes(rng.choice([b for b in range(256) if b != 10]) for _ in range(rng.randint(1, 200)))
    if kind == 10:
        return b' \t' + message_line(rng) + b' \r'      # JSON whitespace around a message
    return rng.choice([b'{"a": NaN}x', b'{"a": Infinity}', b'{"a": 1e400}', b'{"dup": 1, "dup": 2}'])


def random_lines(rng, count, sizes=()):
    """Good and bad lines; with sizes, also lines of exactly those lengths (padded messages or text)."""
    lines = []
    for _ in range(count):
        choice = rng.random()
        if sizes and choice < 0.3:
            size = rng.choice(sizes)
            if rng.random() < 0.5 and size >= 20:
                head = b'{"class": "pad", "p": "'
                lines.append(head + b'p' * (size - len(head) - 2) + b'"}')
            else:
                lines.append(bytes(rng.choice(b'abc\xff\x00{}') for _ in range(size)))
        elif choice < 0.6:
            lines.append(message_line(rng))
        else:
            lines.append(bad_line(rng))
    return lines


def random_stream(rng, lines):
    """The lines joined by b'\\n', ending with a newline, or with an unfinished line."""
    stream = b''.join(line + b'\n' for line in lines)
    if rng.random() < 0.5:
        stream += rng.choice([message_line(rng), bad_line(rng)]) or b'x'
    return stream


def expected_lines(stream, max_line_size):
    """What the spec says a stream gives: [('line', bytes, message or None) or ('fragment', bytes)]."""
    lines = stream.split(b'\n')
    tail = lines.pop()
    entries = [('line', line, oracle_message(line)) if len(line) <= max_line_size else ('fragment', line)
               for line in lines]
    if tail:
        entries.append(('fragment', tail))
    return joined(entries)


def joined(entries):
    """Consecutive fragments as one (where a piece ends depends on the cuts)."""
    result = []
    for entry in entries:
        if entry[0] == 'fragment' and result and result[-1][0] == 'fragment':
            result[-1] = ('fragment', result[-1][1] + entry[1])
        else:
            result.append(entry)
    return result


def split(chunks, max_line_size, test=None):
    """Feed the chunks to a LineSplitter; return its lines as entries, checking each piece's size."""
    splitter = LineSplitter(max_line_size)
    entries = []
    for chunk in chunks:
        for line in splitter.feed(chunk):
            if test is not None and type(line) is Fragment:
                test.assertLessEqual(len(line), max_line_size + len(chunk), 'a piece beyond its bound')
            entries.append(described(line))
    for line in splitter.finish():
        test is not None and test.assertIs(type(line), Fragment)
        entries.append(described(line))
    return joined(entries)


def described(line):
    if type(line) is Fragment:
        return ('fragment', bytes(line))
    return ('line', line, parse_message(line))


def chunkings(rng, stream):
    """Several ways to cut a stream: random sizes, single bytes, around each newline, with empty chunks."""
    yield [stream]
    for most in (1, 3, 17, 256, 4096):
        if most > 3 or len(stream) < 20000:
            yield random_cuts(stream, rng, most)
    cuts = sorted({0, len(stream)} | {index + shift for index in range(len(stream)) if stream[index] == 10
                                      for shift in (0, 1) if rng.random() < 0.7})
    yield [stream[start:end] for start, end in zip(cuts, cuts[1:])]
    pieces = random_cuts(stream, rng, 64)
    yield [piece for item in pieces for piece in ([b'', item] if rng.random() < 0.2 else [item])]


def first_difference(got, expected, names):
    """'entry 3: cut gives ..., whole gives ...': where two results part."""
    for index, (one, other) in enumerate(zip(got, expected)):
        if one != other:
            return 'entry %d: %s gives %s, %s gives %s' % (index, names[0], shorten(one), names[1], shorten(other))
    return '%s gives %d entries, %s gives %d' % (names[0], len(got), names[1], len(expected))


def shorten(entry):
    text = repr(entry)
    return text if len(text) < 200 else '%s...(%d characters)' % (text[:160], len(text))


class FuzzFramingTest(unittest.TestCase):
    """Random chunkings of random streams: the same lines and messages as the whole stream, as the spec says."""

    def check_streams(self, count, max_line_size, sizes=()):
        rng = seeded_rng(self)
        for number in range(count):
            stream = random_stream(rng, random_lines(rng, rng.randint(0, 40), sizes))
            whole = None
            for way, chunks in enumerate(chunkings(rng, stream)):
                self.assertEqual(b''.join(chunks), stream)
                got = split(chunks, max_line_size, self)
                if whole is None:
                    whole = got
                elif got != whole:
                    self.fail('stream %d (max_line_size %d), cut in %d pieces: %s' % (
                        number, max_line_size, len(chunks), first_difference(got, whole, ('cut', 'whole'))))
            expected = expected_lines(stream, max_line_size)
            if whole != expected:
                self.fail('stream %d (max_line_size %d): %s' % (
                    number, max_line_size, first_difference(whole, expected, ('whole', 'the spec'))))

    def test_good_and_bad_lines_whatever_the_cuts(self):
        self.check_streams(150, 1 << 20)

    def test_whole_stream_matches_the_spec(self):
        """No cuts at all: every line, its message and the unfinished end, as the oracle says."""
        rng = seeded_rng(self)
        for _ in range(100):
            stream = random_stream(rng, random_lines(rng, 30))
            self.assertEqual(split([stream], 1 << 20), expected_lines(stream, 1 << 20))

    def test_lines_around_a_small_max_line_size_whatever_the_cuts(self):
        """Lines shorter and longer than max_line_size: the result must not depend on the cuts.

        A line longer than max_line_size is never decoded as a message, even when one chunk holds it whole."""
        for max_line_size in (16, 100, 1024):
            with self.subTest(max_line_size=max_line_size):
                sizes = (max_line_size - 1, max_line_size + 1, 2 * max_line_size + 3, 5 * max_line_size)
                self.check_streams(25, max_line_size, sizes)

    def test_line_of_exactly_max_line_size_whatever_the_cuts(self):
        """Whole or cut just before its newline, a line of exactly max_line_size bytes comes out the same."""
        line = b'{"class": "pad", "p": "' + b'p' * 75 + b'"}'
        self.assertEqual(len(line), 100)
        stream = line + b'\n{"class": "next"}\n'
        self.assertEqual(split([stream[:100], stream[100:]], 100), split([stream], 100))

    def test_overlong_message_in_one_chunk_is_shown_as_text(self):
        """A line longer than max_line_size is not decoded, whether it arrives in one chunk or in several."""
        line = b'{"class": "big", "blob": "' + b'x' * 2000 + b'"}'
        for chunks in ([line + b'\n'], [line[:1500], line[1500:] + b'\n']):
            with self.subTest(chunks=len(chunks)):
                splitter = LineSplitter(1024)
                lines = [piece for chunk in chunks for piece in splitter.feed(chunk)] + splitter.finish()
                self.assertEqual(b''.join(lines), line)
                decoded = [type(piece).__name__ for piece in lines if parse_message(piece) is not None]
                self.assertEqual(decoded, [], 'a line of %d bytes decoded as a message (max_line_size 1024)'
                                 % len(line))

    def test_shorter_lines_with_a_small_max_line_size_whatever_the_cuts(self):
        """All lines well below max_line_size: only the unfinished end may come in pieces."""
        rng = seeded_rng(self)
        for _ in range(60):
            lines = [line for line in random_lines(rng, 30) if len(line) < 1000]
            stream = random_stream(rng, lines)
            tail = stream.rsplit(b'\n', 1)[-1]
            max_line_size = max([1001, len(tail) + 1])
            expected = expected_lines(stream, max_line_size)
            for chunks in chunkings(rng, stream):
                self.assertEqual(split(chunks, max_line_size, self), expected)


if __name__ == '__main__':
    unittest.main()
