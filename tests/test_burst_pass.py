"""A burst passes first: while the relay reads big chunks back to back, the analysis waits (BurstWatch), at
most MOST_DELAY behind the wire; nothing is lost or late beyond that bound, and interactive traffic is never held."""

import json
import threading
import time
import unittest

from tests.harness import TIMEOUT, Tool, recv_exactly      # first: it puts the checkout's ctiproxy on the path
from ctiproxy.analysis import BURST_GAP, BURST_READ, Analyzer, BurstWatch
from ctiproxy.events import SessionInfo
from ctiproxy.filters import SERVER
from ctiproxy.outputs import Output


class BurstWatchTest(unittest.TestCase):

    def test_no_read_no_burst(self):
        self.assertFalse(BurstWatch().under_way(time.monotonic()))

    def test_a_big_read_just_now_is_a_burst(self):
        watch = BurstWatch()
        watch.read(BURST_READ)
        self.assertTrue(watch.under_way(time.monotonic()))

    def test_a_smaller_read_ends_it(self):
        watch = BurstWatch()
        watch.read(BURST_READ)
        watch.read(BURST_READ - 1)
        self.assertFalse(watch.under_way(time.monotonic()))

    def test_a_pause_ends_it(self):
        watch = BurstWatch()
        watch.read(4 * BURST_READ)
        _, at = watch.latest
        self.assertTrue(watch.under_way(at + BURST_GAP / 2))
        self.assertFalse(watch.under_way(at + BURST_GAP))


class FirstMessage(Output):
    """Sets `seen` once the first message reaches the output."""

    def __init__(self):
        super().__init__()
        self.seen = threading.Event()

    def message(self, session, direction, when, message, line):
        self.seen.set()


class EndlessBurst(BurstWatch):
    """A burst that never pauses."""

    def under_way(self, now):
        return True


class EndlessBurstTest(unittest.TestCase):
    """A burst that never pauses does not hold the analysis back beyond its bound."""

    def handled_during_an_endless_burst(self, when):
        """Whether a chunk received at `when` reaches the output while the burst never pauses."""
        output = FirstMessage()
        analyzer = Analyzer(output, buffer_size=1 << 50)    # never half full: only the delay bound applies
        analyzer.burst = EndlessBurst()
        session = SessionInfo(1, time.time())
        analyzer.start()
        analyzer.session_opened(session)
        try:
            analyzer.received(session, SERVER, when, b'{"class": "getlist"}\n')
            return output.seen.wait(TIMEOUT)
        finally:
            analyzer.finish(TIMEOUT)

    def test_a_chunk_is_handled_during_an_endless_burst(self):
        self.assertTrue(self.handled_during_an_endless_burst(time.time()), 'nothing handled in %.0f s' % TIMEOUT)

    def test_a_clock_set_back_does_not_stretch_the_wait(self):
        """The chunk's time is an hour ahead of the clock, as if the clock was set back after it came."""
        self.assertTrue(self.handled_during_an_endless_burst(time.time() + 3600), 'nothing handled in %.0f s'
                        % TIMEOUT)


class BurstThroughToolsTest(unittest.TestCase):
    """A burst bigger than the queue's half crosses each tool byte for byte, every message counted or shown."""

    def test_burst_byte_for_byte(self):
        message = (json.dumps({'class': 'getlist', 'function': 'updateconfig', 'listname': 'phones',
                               'timenow': 1732800000.123, 'config': {'number': '1234', 'state': 'available'}})
                   + '\n').encode()
        count = (6 * 1024 * 1024) // len(message)
        burst = message * count
        for name in ('ctistat', 'ctispy'):
            with self.subTest(tool=name), Tool(name) as tool:
                client, server = tool.connect()
                with client, server:
                    sender = threading.Thread(target=server.sendall, args=(burst,))
                    sender.start()
                    self.assertEqual(recv_exactly(client, len(burst)), burst)
                    sender.join(TIMEOUT)
                code, out, err = tool.finish()
                self.assertEqual(code, 0, err)
                if name == 'ctistat':
                    self.assertRegex(out.decode(), r'(?m)^messages +0 +%d$' % count)
                else:
                    self.assertEqual(out.count(b'"class": "getlist"'), count)


if __name__ == '__main__':
    unittest.main()
