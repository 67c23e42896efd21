"""What the outputs keep from one message to the next to do less per message must not change a byte: the
local second's text (Clock), the keys' texts (pretty_json), ctistat's counts by class and function."""

import collections
import datetime
import json
import unittest

from tests.harness import seeded_rng
from ctiproxy import outputs
from ctiproxy.outputs import KEPT_KEY_SIZE, KEYS_KEPT, Clock, pretty_json
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


if __name__ == '__main__':
    unittest.main()
