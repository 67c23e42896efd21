"""End to end with a real tcpdump: a simulated session through ctispy on loopback, captured meanwhile; reading
the capture's file and a live `tcpdump -U -w -` pipe give the messages ctispy showed live.

Skipped where tcpdump is not installed or may not capture (an unprivileged user): the reason is said."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

from tests.harness import (TIMEOUT, capture_test_end_process, closed_port, parse_spy_output, read_fd_until_all,
                           read_line_unbuffered, tool_path)

TCPDUMP = shutil.which('tcpdump') or (os.path.exists('/usr/sbin/tcpdump') and '/usr/sbin/tcpdump')
# The kernel's buffer for tcpdump: in immediate mode each packet may take a block of its own, and with the
# default 2 MB a tcpdump slowed down by a busy machine (or by its pipe) saw the kernel drop packets.
BUFFER_KIB = 32 * 1024


def messages(out):
    """ctispy's output as {direction: [body lines]}: the order within each direction (the two directions
    interleave as each side's packets were seen, live or captured)."""
    found = {'Client > Server': [], 'Server > Client': []}
    for _, direction, body in parse_spy_output(out.decode('utf-8')):
        found[direction].extend(body)
    return found


class Capturing:
    """A tcpdump capturing loopback's traffic on a port, to a file (printing each packet written, --print) or
    (-) to its stdout, ready once it said "listening on".

    tcpdump stopped drops what the kernel holds for it and it has not read yet ("dropped by kernel"): before
    stopping it, the test waits until it has written the packets that matter."""

    def __init__(self, port, target, stdout=None):
        printing = ['--print', '-l'] if target != '-' else []      # -l: each line as it is printed
        self.process = subprocess.Popen(
            [TCPDUMP, '-i', 'lo', '--immediate-mode', '-B', str(BUFFER_KIB), '-U', '-n', '-w', target] + printing
            + ['port %d' % port],
            stdout=subprocess.PIPE if printing else stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.first_line = read_line_unbuffered(self.process.stderr.fileno()).decode('utf-8', 'replace')

    def wait_for_fins(self, count=2):
        """Wait until the file holds `count` FIN packets (each side's end), as its printed lines tell."""
        seen = 0
        while seen < count:
            line = read_line_unbuffered(self.process.stdout.fileno())
            if not line:
                raise AssertionError('tcpdump ended before writing %d FIN packets' % count)
            seen += b'Flags [F' in line

    @property
    def ready(self):
        return 'listening on' in self.first_line

    def stop(self):
        """Stop it (SIGINT: it writes what it holds) and wait for its exit; return what it said at its end
        (the packets captured, and dropped)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        said = self.process.stderr.read().decode('utf-8', 'replace')
        self.process.wait(TIMEOUT)
        self.process.stderr.close()
        return ' '.join(said.split())


class TcpdumpTest(unittest.TestCase):

    def setUp(self):
        if not TCPDUMP:
            self.skipTest('tcpdump is not installed (apt-get install tcpdump)')
        self.folder = tempfile.mkdtemp(prefix='cti-tcpdump-')
        self.addCleanup(shutil.rmtree, self.folder)

    def started(self, command, **options):
        process = subprocess.Popen(command, **options)
        self.addCleanup(capture_test_end_process, process)
        return process

    def capturing(self, port, target, stdout=None):
        capture = Capturing(port, target, stdout)
        self.addCleanup(capture_test_end_process, capture.process)
        if not capture.ready:
            capture.process.wait(TIMEOUT)
            self.skipTest('tcpdump cannot capture here: %s' % capture.first_line.strip())
        return capture

    def test_file_and_pipe_show_what_ctispy_showed_live(self):
        port = closed_port()
        server = self.started([sys.executable, tool_path('ctisim'), 'server', '--port', str(port),
                               '--listen-addr', '127.0.0.1'], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
        self.assertIn('listening', read_line_unbuffered(server.stderr.fileno()).decode())
        path = os.path.join(self.folder, 'cti.pcap')
        to_file = self.capturing(port, path)
        to_pipe = self.capturing(port, '-', stdout=subprocess.PIPE)
        passive = self.started([sys.executable, tool_path('ctispy'), '--read', '-', '--port', str(port)],
                               stdin=to_pipe.process.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        to_pipe.process.stdout.close()          # the passive ctispy's now

        live = self.started([sys.executable, tool_path('ctispy'), '127.0.0.1', '--port', str(port),
                             '--listen-addr', '127.0.0.1', '--listen-port', '0'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, NO_COLOR='1'))
        start_line = read_line_unbuffered(live.stderr.fileno()).decode()
        listen_port = re.search(r'listening on port (\d+)', start_line).group(1)
        client = subprocess.run([sys.executable, tool_path('ctisim'), 'client', '127.0.0.1', '--port', listen_port],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=TIMEOUT)
        self.assertEqual(client.returncode, 0, client.stdout)
        live_out, live_err = live.communicate(timeout=TIMEOUT)
        self.assertEqual(live.returncode, 0, live_err)

        last_line = live_out.rstrip(b'\n').rsplit(b'\n', 1)[-1]
        shown_so_far = read_fd_until_all(passive.stdout.fileno(), [last_line])     # all through the pipe
        to_file.wait_for_fins()
        said = 'tcpdump to the file: %s; to the pipe: %s' % (to_file.stop(), to_pipe.stop())
        passive_out, passive_err = passive.communicate(timeout=TIMEOUT)
        passive_out = shown_so_far + passive_out
        self.assertEqual((passive.returncode, passive_err), (0, b''))
        read = subprocess.run([sys.executable, tool_path('ctispy'), '--read', path, '--port', str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
        self.assertEqual((read.returncode, read.stderr), (0, b''))

        shown_live = messages(live_out)
        self.assertIn('{"class": "login_id"', shown_live['Client > Server'][0])
        self.assertEqual(messages(read.stdout), shown_live, said)
        self.assertEqual(messages(passive_out), shown_live, said)
