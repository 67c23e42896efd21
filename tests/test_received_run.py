"""A run of chunks (a capture's consecutive segments of one side) framed as one gives exactly what the chunks give
one by one: the same lines, each at the time of the chunk holding its newline, and the same chunks to the output.

Unit tests of Analysis.received_run (I/O-free), and one end to end: ctispy --read of a capture whose messages
span segments with distinct times.
"""

import json
import os
import unittest
import zlib

from tests.harness import random_cuts, seeded_rng
from tests.test_capture_read import START, Capture, CaptureTestCase
from tests.test_fuzz_framing import message_line
from ctiproxy.analysis import Analysis
from ctiproxy.events import SessionInfo
from ctiproxy.filters import CLIENT, SERVER, MessageFilter
from ctiproxy.recording import iso_time


class Logged:
    """An output that logs every chunk and line it is handed, with its time and its kind (message or Fragment)."""

    wants_messages = True
    sees_all = False

    def __init__(self):
        self.chunks = []
        self.lines = []

    def chunk(self, session, direction, when, data):
        self.chunks.append((direction, when, bytes(data)))

    def message(self, session, direction, when, message, line):
        self.lines.append((direction, when, line.__class__.__name__, bytes(line), message))

    def notice(self, session, when, text):
        self.lines.append(('notice', when, text))

    def __getattr__(self, name):            # every other event: nothing to keep
        return lambda *args: None


def random_stream(rng, size):
    """Messages, a banner, broken JSON, bad UTF-8 and long lines, cut into chunks with rising times."""
    parts = []
    while sum(map(len, parts)) < size:
        kind = rng.randrange(10)
        if kind == 0:
            parts.append(b'XiVO CTI Server Version 1.2.3\n')
        elif kind == 1:
            parts.append(b'{"class": "broken", \xff\xfe\n')
        elif kind == 2:
            parts.append(b'{"class": "long", "x": "' + b'y' * rng.randint(100, 3000) + b'"}\n')
        elif kind == 3:
            parts.append(b'\n')
        else:
            parts.append(message_line(rng) + b'\n')
    data = b''.join(parts)
    if rng.random() < 0.5:
        data += b'{"class": "unfinished"'
    return [(START + number * 0.001, chunk) for number, chunk in enumerate(random_cuts(data, rng, most=700))]


def random_runs(rng, chunks):
    """The chunks in runs of random lengths (one chunk to many)."""
    runs, start = [], 0
    while start < len(chunks):
        size = rng.choice([1, 2, 3, rng.randint(1, 40)])
        runs.append(chunks[start:start + size])
        start += size
    return runs


class ReceivedRunTest(unittest.TestCase):

    def analysis(self, max_line_size=1 << 20, message_filter=None):
        output = Logged()
        analysis = Analysis(output, message_filter, max_line_size=max_line_size)
        session = SessionInfo(1, START)
        analysis.session_opened(session)
        return output, analysis, session

    def one_by_one_and_in_runs(self, chunks, runs, **options):
        """(what the output got from received() per chunk, what it got from received_run() per run)."""
        single, analysis, session = self.analysis(**options)
        for when, data in chunks:
            analysis.received(session, SERVER, when, data)
        analysis.direction_ended(session, SERVER, chunks[-1][0])
        joined, analysis, session = self.analysis(**options)
        for run in runs:
            analysis.received_run(session, SERVER, run)
        analysis.direction_ended(session, SERVER, chunks[-1][0])
        return single, joined

    def test_each_line_has_the_time_of_the_chunk_holding_its_newline(self):
        output, analysis, session = self.analysis()
        analysis.received_run(session, SERVER, [(1.0, b'{"a": 1}\n{"b"'), (2.0, b': 2'), (3.0, b'}\n{"c": 3}\n'),
                                                (4.0, b'{"d": 4}\n'), (5.0, b'{"e"')])
        self.assertEqual([(when, message) for _, when, _, _, message in output.lines],
                         [(1.0, {'a': 1}), (3.0, {'b': 2}), (3.0, {'c': 3}), (4.0, {'d': 4})])
        analysis.received_run(session, SERVER, [(6.0, b': 5}'), (7.0, b'\n')])
        self.assertEqual(output.lines[-1][1:], (7.0, 'bytes', b'{"e": 5}', {'e': 5}))
        self.assertEqual([when for _, when, _ in output.chunks], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])

    def test_runs_give_what_the_chunks_give_one_by_one(self):
        rng = seeded_rng(self)
        for _ in range(40):
            chunks = random_stream(rng, rng.randint(1000, 60000))
            single, joined = self.one_by_one_and_in_runs(chunks, random_runs(rng, chunks))
            self.assertEqual(joined.lines, single.lines)
            self.assertEqual(joined.chunks, single.chunks)
            self.assertEqual(b''.join(data for _, _, data in joined.chunks), b''.join(data for _, data in chunks))

    def test_overlong_lines_come_in_the_same_pieces_at_the_same_times(self):
        rng = seeded_rng(self)
        pieces = 0
        for _ in range(40):
            chunks = random_stream(rng, rng.randint(1000, 30000))
            single, joined = self.one_by_one_and_in_runs(chunks, random_runs(rng, chunks), max_line_size=1500)
            self.assertEqual(joined.lines, single.lines)
            pieces += sum(kind == 'Fragment' for _, _, kind, _, _ in single.lines)
        self.assertGreater(pieces, 40)          # overlong lines did come in pieces

    def test_a_hidden_direction_gets_nothing(self):
        output, analysis, session = self.analysis(message_filter=MessageFilter(directions={CLIENT}))
        analysis.received_run(session, SERVER, [(1.0, b'{"a": 1}\n'), (2.0, b'{"b": 2}\n')])
        self.assertEqual((output.chunks, output.lines), ([], []))

    def test_the_line_missing_bytes_end_is_text_in_a_run(self):
        output, analysis, session = self.analysis()
        analysis.received_run(session, SERVER, [(1.0, b'{"a": 1}\n{"b": ')])
        analysis.missing(session, SERVER, 2.0, 5)
        analysis.received_run(session, SERVER, [(3.0, b'2}\n'), (4.0, b'{"c": 3}\n')])
        self.assertEqual([line[1:4] for line in output.lines if line[0] == SERVER],
                         [(1.0, 'bytes', b'{"a": 1}'), (1.0, 'Fragment', b'{"b": '), (3.0, 'Fragment', b'2}'),
                          (4.0, 'bytes', b'{"c": 3}')])


def segments(data, rng, size=1460):
    """data cut into segments of about size bytes (inside UTF-8 characters too)."""
    pieces, start = [], 0
    while start < len(data):
        end = start + rng.randint(size // 2, size)
        pieces.append(data[start:end])
        start = end
    return pieces


class PiecesAndBudgetTest(unittest.TestCase):
    """Where a line goes on in pieces (an unfinished line longer than a piece, the unfinished lines' budget),
    runs cut them exactly where chunk by chunk cuts them: events of two directions, each side's consecutive
    chunks in runs as long as a capture's 1 MiB read makes them."""

    def outputs(self, events, runs, budget=None):
        """(what chunk-by-chunk gives, what runs give) for events [(direction, when, data)]."""
        results = []
        for in_runs in (False, True):
            output = Logged()
            analysis = Analysis(output, max_line_size=8 << 20)
            if budget is not None:
                analysis.held.limit = budget
            session = SessionInfo(1, START)
            analysis.session_opened(session)
            if in_runs:
                for direction, run in runs:
                    analysis.received_run(session, direction, run)
            else:
                for direction, when, data in events:
                    analysis.received(session, direction, when, data)
            for direction in (CLIENT, SERVER):
                analysis.direction_ended(session, direction, START + 100)
            results.append(output)
        return results

    def assert_same(self, joined, single):
        """The same lines, compared by a summary first: a failure says where, without a diff of megabytes."""
        summary = [[entry[:3] + (len(entry[3]), zlib.crc32(entry[3])) if entry[0] != 'notice' else entry
                    for entry in output.lines] for output in (joined, single)]
        self.assertEqual(summary[0], summary[1])
        self.assertTrue(joined.lines == single.lines)

    def events_and_runs(self, sends, rng, longest=1 << 20):
        """sends [(direction, bytes)]: each cut into segments with rising times; the runs: each send's segments in
        runs of up to `longest` bytes (1 MiB: a capture's read)."""
        events, runs, when = [], [], START
        for direction, data in sends:
            run, run_size = [], 0
            for piece in segments(data, rng):
                when += 0.0001
                events.append((direction, when, piece))
                run.append((when, piece))
                run_size += len(piece)
                if run_size >= rng.randint(min(64 << 10, longest), longest):
                    runs.append((direction, run))
                    run, run_size = [], 0
            if run:
                runs.append((direction, run))
        return events, runs

    def test_an_unfinished_line_longer_than_a_piece_goes_on_in_the_same_pieces(self):
        rng = seeded_rng(self)
        line = ('{"class": "long", "x": "%s' % ('\u00e9t\u00e9 ' * 230000)).encode('utf-8')     # 1.6 MB, no end
        events, runs = self.events_and_runs([(SERVER, b'{"class": "first"}\n' * 5000), (CLIENT, line)], rng)
        single, joined = self.outputs(events, runs)
        self.assertGreater(len([entry for entry in single.lines if entry[2] == 'Fragment']), 1)
        self.assert_same(joined, single)
        self.assertTrue(joined.chunks == single.chunks)

    def test_the_budget_cuts_the_same_line_at_the_same_time(self):
        """The server holds an unfinished line; the client's line, ended within one run, takes the two over the
        budget on the way: the server's line goes on in pieces then, as chunk by chunk."""
        rng = seeded_rng(self)
        client_line = b'{"class": "c", "x": "' + b'z' * 300000 + b'"}\n{"class": "next"}\n'
        sends = [(SERVER, b'{"class": "big", "x": "' + b'y' * 400000), (CLIENT, client_line),
                 (SERVER, b'"}\n{"class": "after"}\n')]
        events, runs = self.events_and_runs(sends, rng, longest=1 << 30)       # each send in one run
        single, joined = self.outputs(events, runs, budget=500000)
        self.assertIn('Fragment', [entry[2] for entry in single.lines if entry[0] == SERVER])
        self.assert_same(joined, single)


class CaptureRunTimesTest(CaptureTestCase):
    """End to end: a message's time is its last packet's, however many packets the tool frames together."""

    def test_each_message_has_its_last_packets_time(self):
        capture = Capture()
        capture.handshake()
        messages = [json.dumps({'class': 'getlist', 'n': number, 'pad': 'x' * (number * 37 % 500)}).encode() + b'\n'
                    for number in range(300)]
        stream = b''.join(messages)
        ends, end = [], 0
        for message in messages:
            end += len(message)
            ends.append(end)
        rng = seeded_rng(self)
        sent, times = 0, []             # the time of the packet holding each byte's end
        for piece in random_cuts(stream, rng, most=900):
            capture.add('server', piece, step=0.000137)
            when = capture.records[-1][0] // 1000 / 1e6         # as the pcap holds it: microseconds
            times.append((sent + len(piece), when))
            sent += len(piece)
        capture.close()
        path = os.path.join(self.folder, 'run.pcap')
        with open(path, 'wb') as file:
            file.write(capture.pcap())
        status, out, err = self.read('ctispy', path, '--json-lines', '--no-client')
        self.assertEqual(status, 0, err)
        records = [json.loads(line) for line in out.splitlines()]
        shown = [record for record in records if 'message' in record]
        self.assertEqual([record['message']['n'] for record in shown], list(range(300)))
        expected = [next(when for piece_end, when in times if piece_end >= end) for end in ends]
        self.assertEqual([record['time'] for record in shown], [iso_time(when) for when in expected])


if __name__ == '__main__':
    unittest.main()
