"""Unit tests for StarttlsWatch: the relay's reading of the server's opening lines."""

import unittest

from tests.harness import seeded_rng
from ctiproxy.tls import StarttlsWatch

OFFER = b'{"class": "starttls"}\n'
CONFIRMATION = b'{"class": "starttls", "starttls": true}\n'


def random_opening(rng):
    """A server's opening: banner, some lines (offers, messages, long lines), then either the
    confirmation and TLS bytes, or an unfinished line."""
    lines = [b'XiVO CTI Server Version 1.2.3\n']
    for number in range(rng.randrange(6)):
        lines.append(rng.choice([OFFER, b'{"class": "x", "n": %d}\n' % number,
                                 b'y' * rng.randrange(5000, 9000) + b'\n', b'{"class":"keepalive"}\n',
                                 b'{"class": "starttls", "status": true}\n']))
    confirmed = rng.random() < 0.5
    tail = CONFIRMATION + b'\x16\x03\x01 TLS bytes' if confirmed else b'{"unfinished": 1'
    return b''.join(lines) + tail, confirmed


def feed_in_pieces(watch, stream, rng):
    """Feed stream cut at random places; return (all forwarded bytes, confirmation offset in them)."""
    forwarded, confirmed_at = b'', None
    cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(1, 12))))
    for start, end in zip([0] + cuts, cuts + [len(stream)]):
        forward, confirmed = watch.feed(stream[start:end])
        if confirmed is not None and confirmed_at is None:
            confirmed_at = len(forwarded) + confirmed
        forwarded += forward
    return forwarded + watch.finish(), confirmed_at


class StarttlsWatchTest(unittest.TestCase):

    def check(self, hide_offer):
        rng = seeded_rng(self)
        for _ in range(1500):
            stream, confirmed = random_opening(rng)
            forwarded, confirmed_at = feed_in_pieces(StarttlsWatch(hide_offer), stream, rng)
            expected = stream.replace(OFFER, b'') if hide_offer else stream
            self.assertEqual(forwarded, expected)
            if confirmed:
                self.assertEqual(confirmed_at, expected.index(CONFIRMATION) + len(CONFIRMATION))
            else:
                self.assertIsNone(confirmed_at)

    def test_forwards_every_byte_and_finds_the_confirmation(self):
        self.check(hide_offer=False)

    def test_hides_only_the_offer(self):
        self.check(hide_offer=True)

    def test_stops_watching_after_the_opening(self):
        watch = StarttlsWatch()
        watch.feed(b'{"class": "x"}\n' * (StarttlsWatch.WATCH_LIMIT // 15 + 1))
        self.assertFalse(watch.watching)
        self.assertEqual(watch.feed(CONFIRMATION), (CONFIRMATION, None))


if __name__ == '__main__':
    unittest.main()
