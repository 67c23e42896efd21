"""Doing less per message must not change a byte: what the outputs keep from one message to the next (the local
second's text, the keys' texts, ctistat's counts by class and function), and a big message written a slice at a
time (unit tests); a big message's peak memory (the real tools)."""

import collections
import datetime
import io
import json
import os
import select
import time
import unittest

from tests.harness import TIMEOUT, Tool, in_parallel, recv_until_eof, seeded_rng
from tests.test_memory import MiB, peak_rss
from ctiproxy import outputs
from ctiproxy.escaping import SLICE, json_bytes
from ctiproxy.outputs import (KEPT_KEY_SIZE, KEYS_KEPT, MAX_INDENT_DEPTH, BatchedStream, Clock, one_line_json,
                              one_line_parts, pretty_json, pretty_message, pretty_parts, write_message)
from tests.test_outputs import random_value
from ctiproxy.stats import DirectionStats


def strftime_stamp(when, form):
    """The stamp as datetime writes it, the second and its microseconds together."""
    formats = {'clock': '%H:%M:%S.%f', 'date': '%Y-%m-%d %H:%M:%S.%f'}
    return datetime.datetime.fromtimestamp(when).strftime(formats[form])


class ClockTest(unittest.TestCase):

    def test_local_time_as_strftime_writes_it(self):
        """Times one after another, in the same second or not, and fractions that round up to the next second."""
        rng = seeded_rng(self)
        times = [1795784400.9999996, 1795784400.9999994, 1795784401.0, 1795784400.5, 1795784400.0000005, 0.25,
                 1.5e-6, 86399.9999999]
        when = 1795784400.0
        for _ in range(2000):
            when += rng.choice([0.0, 1e-7, 0.0001, 0.3, 1.0, 59.9999997, -2.0])
            times.append(when)
        for form in ('clock', 'date'):
            clock = Clock(form)
            for when in times:
                self.assertEqual(clock.stamp(None, when), strftime_stamp(when, form), (form, when))


class KeyTextsTest(unittest.TestCase):

    def test_many_and_long_keys(self):
        """Beyond what is kept, keys are written as before; what is kept stays bounded."""
        value = {'k%d' % number: number for number in range(KEYS_KEPT + 100)}
        value['x' * (KEPT_KEY_SIZE + 1)] = {'\u00e9\n"': ['\x1b']}
        for _ in range(2):
            self.assertEqual(pretty_json(value), json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False))
        self.assertLessEqual(len(outputs._key_texts), KEYS_KEPT)
        self.assertTrue(all(len(key) <= KEPT_KEY_SIZE for key in outputs._key_texts))


class IndentedInCTest(unittest.TestCase):
    """pretty_message: json's C encoder where it indents (Python 3.13 and later), else pretty_json; the same text."""

    def nested(self, depth, inside):
        value = inside
        for level in range(depth):
            value = {'k': value} if level % 2 else [value]
        return value

    def test_the_same_text_as_pretty_json(self):
        rng = seeded_rng(self)
        for _ in range(2000):
            value = {'class': 'x', 'v': random_value(rng)}
            self.assertEqual(pretty_message(value), pretty_json(value))

    def test_nested_around_the_indentation_limit(self):
        for depth in range(MAX_INDENT_DEPTH - 2, MAX_INDENT_DEPTH + 3):
            for inside in ({}, [], {'a': 1, 'b': [2, {}]}, 'text'):
                value = self.nested(depth, inside)
                self.assertEqual(pretty_message(value), pretty_json(value), (depth, inside))

    def test_nested_deeper_than_json_writes(self):
        value = self.nested(100000, 1)
        with self.assertRaises(RecursionError):
            pretty_json(value)
        with self.assertRaises(RecursionError):
            pretty_message(value)


class BigMessageTest(unittest.TestCase):

    def test_written_a_slice_at_a_time_as_whole(self):
        """Characters to escape, and characters of 2 to 4 bytes, on either side of each slice's end."""
        tricky = ['\x85', '\u202e', '\udcff', '\u00e9', '\U0001f600', '\x7f', '"', '\n', 'a']
        rng = seeded_rng(self)
        for _ in range(3):
            items = [''.join(rng.choice(tricky) for _ in range(rng.randrange(1, 2000))) for _ in range(200)]
            message = {'class': 'directory', 'resultlist': items, 'more': {'k\u202e': items[:3]}}
            for to_parts, to_json in ((one_line_parts, one_line_json), (pretty_parts, pretty_json)):
                whole = json_bytes(to_json(message))
                self.assertGreater(len(whole), 4 * SLICE)
                for stream in (io.BytesIO(), BatchedStream(io.BytesIO())):
                    self.assertTrue(write_message(stream, b'header ', message, to_parts, b' end'))
                    stream.flush()
                    written = (stream.stream if isinstance(stream, BatchedStream) else stream).getvalue()
                    self.assertEqual(written, b'header ' + whole + b' end')

    def test_nested_deeper_than_json_writes(self):
        message = {'class': 'x'}
        for _ in range(100000):
            message = {'a': message}
        stream = io.BytesIO()
        self.assertFalse(write_message(stream, b'header', message, one_line_parts))
        self.assertEqual(stream.getvalue(), b'')


class CountsByLabelTest(unittest.TestCase):

    def test_classes_and_functions_in_the_order_counters_give(self):
        """Counted once per (class, function), the report's classes and functions come in the order that a
        Counter of each gives: by count, ties in the order first seen."""
        rng = seeded_rng(self)
        for _ in range(200):
            counts = DirectionStats()
            classes, functions = collections.Counter(), collections.Counter()
            for _ in range(rng.randrange(30)):
                label = (rng.choice('abcd'), rng.choice(['x', 'y', 'z', None]))
                counts.labels[label] = counts.labels.get(label, 0) + 1
                classes[label[0]] += 1
                if label[1] is not None:
                    functions[label] += 1
            expected = {}
            for (kind, function), count in functions.most_common():
                expected.setdefault(kind, {})[function] = count
            report = counts.as_dict()
            self.assertEqual(list(report['classes'].items()), classes.most_common())
            self.assertEqual(json.dumps(report['functions']), json.dumps(expected))
            self.assertEqual(report['messages'], sum(classes.values()))


def directory_answer(size):
    """A server's directory answer of about size bytes on one line (as the bench's big message)."""
    entries = ['Firstname%d Lastname%d;%d;+33 6 %08d;user%d@example.com;Example SA' % (i, i, 1000 + i, i, i)
               for i in range(size // 75)]
    return json.dumps({'class': 'directory', 'replyid': 12, 'status': 'ok', 'timenow': 1732712345.5,
                       'headers': ['Nom', 'Num\u00e9ro', 'Mobile'], 'resultlist': entries}).encode() + b'\n'


def read_until_end(fd, needle):
    """Read fd until needle is seen in what came last (what came before is not kept); return the bytes read."""
    deadline = time.monotonic() + TIMEOUT
    tail = b''
    total = 0
    while needle not in tail:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        data = os.read(fd, MiB) if ready else b''
        if not data:
            raise AssertionError('%r not seen after %d bytes of output' % (needle, total))
        total += len(data)
        tail = tail[-len(needle):] + data
    return total


class BigMessageMemoryTest(unittest.TestCase):

    def test_ctispy_shows_a_16_mb_message(self):
        """ctispy shows a 16 MB message in the interpreter (~25 MB), the line, its text or its objects (~16 and
        ~28 MB), the encoder's parts and the output a slice at a time: here 101 MiB (before: the output's text
        and bytes whole, and joined once more to be written: 135 MiB)."""
        message = directory_answer(16 * MiB)
        with Tool('ctispy', '--loop') as tool:
            client, server = tool.connect()
            with client, server:
                def send():
                    server.sendall(message)
                    server.close()
                received = in_parallel(send, lambda: recv_until_eof(client), what='the relay')[1]
                self.assertEqual(received, message)
            shown = read_until_end(tool.process.stdout.fileno(), b'session #1 ended')
            peak = peak_rss(tool.process.pid)
            code, _, err = tool.stop()
        self.assertEqual(code, 0, err)
        self.assertGreater(shown, len(message))
        self.assertLess(peak, 115 * MiB, 'a 16 MB message took %d MiB' % (peak // MiB))


if __name__ == '__main__':
    unittest.main()
