"""Big lines, as the pure parts handle them: the LineSplitter hands a whole line over BIG_LINE bytes as a BigLine
when asked, parse_message lets go of its bytes once decoded, and a big message is written in pieces that join
to exactly the text written whole (one line, or pretty-printed); end to end, ctispy, ctisave and --json-lines
show big lines as the README says, whatever their kind."""

import json
import os
import random
import shutil
import tempfile
import unittest

from tests.harness import Tool, close_session, in_parallel, recv_exactly
from ctiproxy.analysis import Analysis
from ctiproxy.events import SessionInfo
from ctiproxy.filters import SERVER
from ctiproxy.framing import BIG_LINE, SAFE_DEPTH, BigLine, Fragment, LineSplitter, nested_deeper_than, parse_message
from ctiproxy.outputs import BATCH, one_line_json, one_line_pieces, pretty_message, pretty_pieces


def nested(depth, inside):
    """inside, in depth lists."""
    for _ in range(depth):
        inside = [inside]
    return inside


def big_object(size):
    """A message of about size bytes: a big list of strings."""
    entries = ['entry %d \u00e9\x1b\u2028' % number for number in range(size // 20)]
    return {'class': 'directory', 'resultlist': entries}


class SplitterTest(unittest.TestCase):

    def test_a_big_whole_line_comes_as_a_big_line(self):
        line = b'x' * (BIG_LINE + 1)
        for cuts in ([line + b'\n'], [line[:100], line[100:] + b'\nab'], [line[:-1], line[-1:], b'\n']):
            with self.subTest(cuts=len(cuts)):
                splitter = LineSplitter(big_lines=BigLine)
                lines = [got for piece in cuts for got in splitter.feed(piece)]
                self.assertEqual([got.__class__ for got in lines], [BigLine])
                self.assertEqual((len(lines[0]), bytes(lines[0])), (len(line), line))

    def test_a_big_chunk_ending_a_held_line(self):
        """A chunk over BIG_LINE (a capture's run) whose first line ends one held: joined first, then a BigLine."""
        big = b'x' * (BIG_LINE + 5)
        for held, first in ((b'abc', big), (big, b'short'), (b'abc', b'short')):
            with self.subTest(held=len(held), first=len(first)):
                splitter = LineSplitter(big_lines=BigLine)
                self.assertEqual(splitter.feed(held), [])
                lines = splitter.feed(first + b'\n' + big + b'\nend\n')
                self.assertEqual([bytes(line) for line in lines], [held + first, big, b'end'])
                self.assertEqual([line.__class__ for line in lines],
                                 [BigLine if len(held + first) > BIG_LINE else bytes, BigLine, bytes])

    def test_lines_up_to_big_line_and_overlong_pieces_stay_bytes(self):
        splitter = LineSplitter(max_line_size=3 * BIG_LINE, big_lines=BigLine)
        exact = b'y' * BIG_LINE
        self.assertEqual(splitter.feed(exact + b'\n' + b'z\n'), [exact, b'z'])
        pieces = splitter.feed(b'w' * (4 * BIG_LINE) + b'\n')
        self.assertTrue(pieces and all(piece.__class__ is Fragment for piece in pieces))

    def test_without_big_lines_a_big_line_is_bytes(self):
        line = b'x' * (BIG_LINE + 1)
        self.assertEqual(LineSplitter().feed(line[:10]) + LineSplitter().feed(line + b'\n'), [line])


class Kept:
    """An output that logs each line it is handed: (when, kind, size, message, the bytes of a line that is not one);
    needs_line: whether it asks for every line's bytes."""

    wants_messages = True
    sees_all = False
    shows_unwritable = True

    def __init__(self, needs_line):
        self.needs_line = needs_line
        self.lines = []

    def message(self, session, direction, when, message, line):
        kind = 'Fragment' if line.__class__ is Fragment else 'line'
        self.lines.append((when, kind, len(line), message, bytes(line) if message is None else None))

    def __getattr__(self, name):            # every other event: nothing to keep
        return lambda *args: None


def stream_with_big_lines(rng):
    """Small and big lines of every kind, cut into chunks of up to 300 KB with rising times."""
    parts = []
    for _ in range(12):
        size = rng.choice([BIG_LINE - 1, BIG_LINE, BIG_LINE + 1, rng.randint(BIG_LINE, 2 * BIG_LINE)])
        parts += [b'{"class": "small"}\n',
                  rng.choice([json.dumps({'class': 'big', 'x': 'y' * size}).encode('ascii'),
                              json.dumps(['y' * size]).encode('ascii'), b'\xff' * size, b'z' * size]) + b'\n']
    data = b''.join(parts) + b'{"class": "unfinished"'
    chunks, start = [], 0
    while start < len(data):
        size = rng.choice([1, 100, rng.randint(1, 300000)])
        chunks.append((1000.0 + len(chunks), data[start:start + size]))
        start += size
    return chunks


class PipelineTest(unittest.TestCase):
    """A line over BIG_LINE is handed on as a BigLine to an output that does not need lines, with the same message
    and the same bytes when it holds none, chunk by chunk as in a capture's runs."""

    def shown(self, chunks, needs_line, runs=False):
        output = Kept(needs_line)
        analysis = Analysis(output)
        session = SessionInfo(1, 1000.0)
        analysis.session_opened(session)
        if runs:
            for start in range(0, len(chunks), 7):
                analysis.received_run(session, SERVER, chunks[start:start + 7])
        else:
            for when, data in chunks:
                analysis.received(session, SERVER, when, data)
        analysis.direction_ended(session, SERVER, chunks[-1][0])
        return output.lines

    def test_big_lines_give_what_bytes_give(self):
        rng = random.Random(1500)
        for trial in range(3):
            chunks = stream_with_big_lines(rng)
            expected = self.shown(chunks, needs_line=True)
            self.assertEqual(len(expected), 25)
            with self.subTest(trial=trial):
                self.assertTrue(self.shown(chunks, needs_line=False) == expected)
                self.assertTrue(self.shown(chunks, needs_line=False, runs=True) == expected)


class BigLineTest(unittest.TestCase):

    def test_a_message_lets_go_of_the_bytes(self):
        text = json.dumps(big_object(BIG_LINE + 100), ensure_ascii=False)
        line = BigLine(text.encode('utf-8'))
        self.assertEqual(parse_message(line), json.loads(text))
        self.assertEqual((line.data, line.text, line.in_pieces, len(line)), (None, None, True, len(text.encode())))

    def test_a_line_that_is_not_a_message_keeps_its_bytes(self):
        for data in (b'[' + b'1, ' * BIG_LINE + b'2]', b'{"a": "' + b'\xff' * BIG_LINE + b'"}', b'x' * BIG_LINE,
                     b'{"a": 1} ' + b'x' * BIG_LINE):
            with self.subTest(data=data[:10]):
                line = BigLine(data)
                self.assertIsNone(parse_message(line))
                self.assertFalse(line.in_pieces)
                self.assertIs(bytes(line), line.data)
                self.assertEqual(bytes(line), data)

    def test_a_deep_message_keeps_its_text_if_asked(self):
        data = json.dumps({'class': 'deep', 'v': nested(SAFE_DEPTH, 'x' * BIG_LINE)}).encode('ascii')
        for text_if_deep in (True, False):
            with self.subTest(text_if_deep=text_if_deep):
                line = BigLine(data, text_if_deep)
                self.assertEqual(parse_message(line)['class'], 'deep')
                self.assertIsNone(line.data)
                self.assertEqual(line.in_pieces, not text_if_deep)
                if text_if_deep:
                    self.assertEqual(bytes(line), data)

    def test_nested_deeper_than(self):
        for depth in (1, 5, SAFE_DEPTH):
            for value in (nested(depth, 'x'), nested(depth - 1, {'a': 1}), nested(depth - 1, [])):
                self.assertFalse(nested_deeper_than(value, depth))
                self.assertTrue(nested_deeper_than(value, depth - 1))


class PiecesTest(unittest.TestCase):
    """The pieces join to the text written whole, for values of every shape around BATCH."""

    def random_value(self, rng, depth=0):
        choice = rng.random()
        if depth > 20 or choice < 0.3:
            return rng.choice(['x', '\u00e9\x1b\u2028', 1, 2.5, None, True, 10 ** 30, float('inf'), '', [], {}])
        size = rng.choice([1, 2, BATCH, BATCH + 1, 2 * BATCH + 5]) if depth < 2 else rng.choice([0, 1, 2])
        if choice < 0.65:
            return [self.random_value(rng, depth + 1) if index < 5 else 'item%d' % index for index in range(size)]
        return {('k%d' % rng.randrange(10 ** 6) if index >= 5 else 'z%d' % index):
                (self.random_value(rng, depth + 1) if index < 5 else index) for index in range(size)}

    def test_random_values(self):
        rng = random.Random(15)
        for trial in range(200):
            value = {'class': 'x', 'value': self.random_value(rng)}
            with self.subTest(trial=trial):
                self.assertEqual(''.join(one_line_pieces(value)), one_line_json(value))
                self.assertEqual(''.join(pretty_pieces(value)), pretty_message(value))

    def test_a_big_list_deeper_than_the_indentation(self):
        value = {'a': nested(20, ['x', list(range(3 * BATCH))])}
        self.assertEqual(''.join(pretty_pieces(value)), pretty_message(value))
        self.assertEqual(''.join(one_line_pieces(value)), one_line_json(value))

    def test_a_big_message_comes_in_pieces_of_bounded_size(self):
        value = big_object(4 * BIG_LINE)
        for pieces in (one_line_pieces(value), pretty_pieces(value)):
            sizes = [len(piece) for piece in pieces]
            self.assertGreater(len(sizes), 100)
            self.assertLess(max(sizes), BIG_LINE // 4)


class EndToEndTest(unittest.TestCase):
    """Big lines of every kind through the real tools: a message (written in pieces), one nested deeper than
    SAFE_DEPTH (written whole), a list, text, and bytes that are not UTF-8 (shown as text)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix='cti-big-lines-')
        padding = ['\u00e9\x1b\u2028 %d' % number for number in range(BIG_LINE // 8)]
        cls.lines = [json.dumps(big_object(2 * BIG_LINE), ensure_ascii=False).encode('utf-8'),
                     json.dumps({'class': 'deep', 'v': nested(SAFE_DEPTH + 5, padding)}).encode('ascii'),
                     json.dumps(padding).encode('ascii'),
                     b'text ' + b'z\x1b' * BIG_LINE,
                     b'{"class": "' + b'\xff' * BIG_LINE + b'"}',
                     b'{"class": "small"}']
        cls.data = b''.join(line + b'\n' for line in cls.lines)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, True)

    def relay(self, tool):
        client, server = tool.connect()

        def send():
            for start in range(0, len(self.data), 65536):
                server.sendall(self.data[start:start + 65536])
        got = in_parallel(send, lambda: recv_exactly(client, len(self.data)))[1]
        self.assertTrue(got == self.data)
        close_session(self, client, server)

    def test_json_lines(self):
        with Tool('ctispy', '--json-lines') as tool:
            self.relay(tool)
            code, out, err = tool.finish()
        self.assertEqual(code, 0, err)
        records = [json.loads(line) for line in out.decode('utf-8').splitlines()]
        self.assertEqual(len(records), len(self.lines))
        for record, line in zip(records, self.lines):
            message = parse_message(line)
            if message is not None:
                self.assertTrue(record['message'] == message)
            else:
                self.assertTrue(record['text'] == line.decode('utf-8', 'surrogateescape'))

    def test_ctisave(self):
        files = [os.path.join(self.dir, name) for name in ('client', 'server')]
        with Tool('ctisave', *files) as tool:
            self.relay(tool)
            code, _, err = tool.finish()
        self.assertEqual(code, 0, err)
        with open(files[1], 'rb') as file:
            saved = file.read()
        self.assertTrue(saved.startswith(json.dumps(parse_message(self.lines[0]), indent=4, sort_keys=True,
                                                    ensure_ascii=False).encode('utf-8').replace(b'\x1b', b'\\u001b')
                                         .replace('\u2028'.encode('utf-8'), b'\\u2028') + b'\n'))
        self.assertIn(b'\n    "class": "deep",\n', saved)
        self.assertTrue(saved.endswith(b'{\n    "class": "small"\n}\n'))


if __name__ == '__main__':
    unittest.main()
