"""Memory for one big message: a 16 MiB JSON line, sent by the server in 64 KiB pieces, costs each tool at most
1.3 times the peak RSS (VmHWM, /proc/PID/status) of a bare Python process that reads the same line from a file
and json.loads it, measured here in the same test.

The bare process holds the interpreter (~14 MB), the decoded text (16 MB) and the object (~26 MB); a tool holds
its larger interpreter (~23 MB, its modules and threads) and the object, so it may hold one more copy of the
line (as bytes or as text) and little else: not the line, its text and the object at once, nor the whole
output text of the message.  No constant is added for the interpreters' difference: the 1.3 covers it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from tests.bench import big_message
from tests.harness import TIMEOUT, Tool, close_session, in_parallel, read_fd_until_all, recv_exactly
from tests.test_memory import peak_rss

MiB = 1 << 20
SIZE = 16 * MiB
PIECE = 64 * 1024         # the server sends the line in pieces of this size
PEAK_VS_LOADS = 1.3

BARE_LOADS = '''
import json, sys
message = json.loads(open(sys.argv[1], "rb").read().decode("utf-8"))
with open("/proc/self/status") as status:
    print([line.split()[1] for line in status if line.startswith("VmHWM:")][0])
'''


def read_until(fd, needle, timeout=TIMEOUT):
    """Read a pipe until needle has come (megabytes of output, kept in parts); return the size read."""
    deadline = time.monotonic() + timeout
    size, tail = 0, b''
    while needle not in tail:
        if time.monotonic() > deadline:
            raise AssertionError('%r not seen in the output: %r' % (needle, tail[-300:]))
        data = os.read(fd, MiB)
        if not data:
            raise AssertionError('output ended before %r: %r' % (needle, tail[-300:]))
        size += len(data)
        tail = tail[-len(needle):] + data
    return size


def wait_for_size(path, size, timeout=TIMEOUT):
    """Poll a file until it holds size bytes (there is no event to wait on); fail after timeout."""
    deadline = time.monotonic() + timeout
    while os.path.getsize(path) < size:
        if time.monotonic() > deadline:
            raise AssertionError('%s holds %d of %d bytes' % (path, os.path.getsize(path), size))
        time.sleep(0.01)


class BigMessageMemoryTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix='cti-big-memory-')
        cls.line = big_message(SIZE)      # the bench's: a directory answer, a big list of strings
        path = os.path.join(cls.dir, 'big.json')
        with open(path, 'wb') as file:
            file.write(cls.line)
        done = subprocess.run([sys.executable, '-c', BARE_LOADS, path], stdout=subprocess.PIPE, check=True,
                              timeout=TIMEOUT)
        os.unlink(path)
        cls.bare_peak = int(done.stdout) * 1024

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, True)

    def relay_big_line(self, tool):
        """The server sends the line through the tool in PIECE pieces, the client reads it; the session ends."""
        client, server = tool.connect()
        line = self.line

        def send():
            for start in range(0, len(line), PIECE):
                server.sendall(line[start:start + PIECE])
        got = in_parallel(send, lambda: recv_exactly(client, len(line)), what='the relay of the big line')[1]
        self.assertTrue(got == line, 'the line changed on the wire')
        close_session(self, client, server)

    def assert_within_bound(self, tool, what):
        peak = peak_rss(tool.process.pid)
        code, _, err = tool.stop(signal.SIGINT)
        self.assertEqual(code, 0, err)
        self.assertLessEqual(peak, PEAK_VS_LOADS * self.bare_peak,
                             '%s peaked at %.1f MiB for a %d MiB message, %.2f times the %.1f MiB of json.loads'
                             % (what, peak / MiB, SIZE // MiB, peak / self.bare_peak, self.bare_peak / MiB))

    def check_spy(self, ended, *options):
        """ctispy with options; ended: what its output shows at the session's end."""
        with Tool('ctispy', '--loop', *options) as tool:
            self.relay_big_line(tool)
            shown = read_until(tool.process.stdout.fileno(), ended)
            self.assertGreater(shown, len(self.line))
            self.assert_within_bound(tool, ' '.join(('ctispy',) + options))

    def test_ctispy(self):
        self.check_spy(b'session #1 ended')

    def test_ctispy_pretty_print(self):
        self.check_spy(b'session #1 ended', '--pretty-print')

    def test_ctispy_json_lines(self):
        self.check_spy(b'"event": "end"', '--json-lines')

    def test_ctistat(self):
        with Tool('ctistat', '--loop', '--json') as tool:
            self.relay_big_line(tool)
            report = read_fd_until_all(tool.process.stdout.fileno(), [b'}\n'])
            self.assertEqual(json.loads(report.decode('utf-8'))['server']['messages'], 1)
            self.assert_within_bound(tool, 'ctistat')

    def test_ctisave(self):
        client_file, server_file = os.path.join(self.dir, 'client'), os.path.join(self.dir, 'server')
        expected = json.dumps(json.loads(self.line.decode('utf-8')), indent=4, sort_keys=True,
                              ensure_ascii=False).encode('utf-8') + b'\n'
        with Tool('ctisave', client_file, server_file, '--loop') as tool:
            self.relay_big_line(tool)
            wait_for_size(server_file, len(expected))
            self.assert_within_bound(tool, 'ctisave')
        with open(server_file, 'rb') as file:
            self.assertTrue(file.read() == expected, 'the message saved is not the message sent')


if __name__ == '__main__':
    unittest.main()
