"""A hostile review of --read of a capture: crafted captures that once broke the real tools."""

import struct
import unittest

from tests.capwriter import ETHERNET, Pcapng, frame
from tests.test_capture_read import CaptureTestCase, login_session


def pcapng_with_timestamps(timestamps, tsresol=None, tsoffset=None):
    """A pcapng of the login session whose enhanced packet blocks carry the given raw 64-bit timestamps."""
    writer = Pcapng()
    writer.section()
    writer.interface(ETHERNET, tsresol=tsresol, tsoffset=tsoffset)
    for timestamp, (_, packet) in zip(timestamps, login_session().records):
        data = frame(ETHERNET, packet)
        writer.block(6, struct.pack('<IIIII', 0, timestamp >> 32, timestamp & 0xFFFFFFFF, len(data), len(data)) + data)
    return writer.bytes()


class TimestampTest(CaptureTestCase):
    """A pcapng timestamp, resolution or offset that puts a packet outside the years a time can be shown in is
    one line naming its byte offset, exit 1, never a traceback."""

    def test_far_future_and_before_1970(self):
        cases = {'far future': pcapng_with_timestamps([0xFFFFFFFFFFFFFFFF] * 20, tsresol=0),
                 'before 1970': pcapng_with_timestamps([1] * 20, tsoffset=-(1 << 40))}
        for name, data in cases.items():
            for tool in ('ctispy', 'ctistat'):
                with self.subTest(name=name, tool=tool):
                    status, _, err = self.read(tool, '-', stdin=data)
                    self.assertEqual(status, 1)
                    self.assertRegex(err, r'^%s: stdin: not a capture: packet time out of range .* at byte \d+\n$'
                                     % tool)
        for tool, args in (('ctispy', ['--json-lines']), ('ctisave', [self.folder + '/c', self.folder + '/s'])):
            with self.subTest(tool=tool):
                status, _, err = self.read(tool, '-', *args, stdin=cases['far future'])
                self.assertEqual(status, 1)

    def test_the_last_showable_years_still_read(self):
        seconds = 253370764800 - 86400 * 366          # in the year 9997
        data = pcapng_with_timestamps([seconds + n for n in range(20)], tsresol=0)
        status, out, _ = self.read('ctispy', '-', stdin=data)
        self.assertEqual(status, 0)
        self.assertIn(b'login_id', out)


if __name__ == '__main__':
    unittest.main()
