"""The tests' Chromium driver (tests/chromium.py) itself: it starts whatever file descriptors the test process
holds, so that a browser test fails only for what the page does."""

import os
import tempfile
import unittest

from tests import harness  # noqa: F401  (puts ctiproxy on the path, as every test file does)
from tests.chromium import Chromium, chromium_path


@unittest.skipUnless(chromium_path(), 'chromium is not installed (Debian: apt-get install chromium): '
                                      'the driver is not tested')
class DriverStartTest(unittest.TestCase):

    def test_starts_when_its_pipes_are_past_fd_9(self):
        """Its pipes were put on the browser's fds 3 and 4 by a shell, whose '3<&N' takes one digit in dash: in a
        full suite's test process, holding many files, Chromium did not start ("Bad fd number")."""
        held = []
        try:
            while not held or held[-1][1] < 12:
                held.append(os.pipe())
            with tempfile.TemporaryDirectory() as folder:
                browser = Chromium(folder)
                try:
                    self.assertEqual(browser.evaluate('6 * 7'), 42)
                finally:
                    browser.close()
        finally:
            for read_end, write_end in held:
                os.close(read_end)
                os.close(write_end)


if __name__ == '__main__':
    unittest.main()
