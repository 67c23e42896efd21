"""Unit tests for the message formats: they must equal what json.dumps writes."""

import json
import unittest

from tests.harness import seeded_rng
from ctiproxy.outputs import one_line_json, pretty_json


def random_text(rng):
    return ''.join(rng.choice(['a', 'Z', ' ', '"', '\\', '\n', '\x00', '\u00e9', '\U0001f600', '\ud800', '/'])
                   for _ in range(rng.randrange(8)))


def random_value(rng, depth=0):
    kind = rng.randrange(10 if depth < 4 else 6)
    if kind == 0:
        return rng.randint(-10 ** 20, 10 ** 20)
    if kind == 1:
        return rng.choice([0.0, -0.0, 1.5, 1e300, -2.5e-300, rng.random(), float('inf'), float('-inf')])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind in (3, 4, 5):
        return random_text(rng)
    if kind in (6, 7):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_text(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


class FormatTest(unittest.TestCase):

    def test_pretty_equals_json_dumps(self):
        rng = seeded_rng(self)
        for _ in range(3000):
            value = {'class': 'x', 'v': random_value(rng)}
            self.assertEqual(pretty_json(value), json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False))

    def test_one_line_equals_json_dumps(self):
        rng = seeded_rng(self)
        for _ in range(3000):
            value = {'class': 'x', 'v': random_value(rng)}
            self.assertEqual(one_line_json(value), json.dumps(value, ensure_ascii=False))

    def test_nan(self):
        value = {'n': float('nan')}
        self.assertEqual(pretty_json(value), json.dumps(value, indent=4, sort_keys=True))
        self.assertEqual(one_line_json(value), json.dumps(value))

    def test_empty_containers(self):
        value = {'a': {}, 'b': [], 'c': [{}], 'd': {'e': []}}
        self.assertEqual(pretty_json(value), json.dumps(value, indent=4, sort_keys=True))


if __name__ == '__main__':
    unittest.main()
