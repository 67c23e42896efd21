"""A stop signal whose arrival does not interrupt the main thread's sleep still stops the tool.

That is what happens when a signal comes just before the main thread goes to sleep (its Python handler is
then pending, and nothing wakes the thread to run it: the rare hang of two SIGTERMs to the process group),
and what happens when another thread of the process takes the signal.  The second is made here at will: the
tool runs under a wrapper whose own thread takes the stop signals, and raises one on itself for each byte
the test writes to the tool's stdin."""

import re
import socket
import subprocess
import sys
import unittest

from tests.harness import TIMEOUT, read_line_unbuffered, recv_exactly, sigint_not_ignored, sigint_restored, tool_path

setUpModule, tearDownModule = sigint_not_ignored, sigint_restored

ROUNDS = 3
REQUEST = b'{"class": "login_id", "commandid": 1}\n'
ANSWER = b'{"class": "login_id", "replyid": 1}\n'

# The tool's script run by a wrapper that first starts a thread taking the stop signals (started before the script
# holds them, it takes them as a thread that a library started could): it signals itself for each byte on stdin.
SIGNALLING_THREAD = '''
import os, runpy, signal, sys, threading
def signal_on_request():
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))
    while True:
        byte = os.read(0, 1)
        if not byte:
            return
        signal.pthread_kill(threading.get_ident(), signal.SIGINT if byte == b'i' else signal.SIGTERM)
threading.Thread(target=signal_on_request, daemon=True).start()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


class WrappedTool:
    """ctistat under SIGNALLING_THREAD, relaying to a scripted server of the test's own."""

    def __init__(self, *args):
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(8)
        self.process = subprocess.Popen(
            [sys.executable, '-c', SIGNALLING_THREAD, tool_path('ctistat'), '127.0.0.1', '--port',
             str(self.listener.getsockname()[1]), '--listen-addr', '127.0.0.1', '--listen-port', '0'] + list(args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.start_line = read_line_unbuffered(self.process.stderr.fileno()).decode('utf-8', 'replace')
        match = re.search(r'listening on port (\d+)', self.start_line)
        self.port = int(match.group(1)) if match else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        self.listener.close()

    def one_exchange(self, test):
        """A session with one request and its answer, left open; return (client, server)."""
        test.assertIsNotNone(self.port, self.start_line)
        client = socket.create_connection(('127.0.0.1', self.port), timeout=TIMEOUT)
        self.listener.settimeout(TIMEOUT)
        server, _ = self.listener.accept()
        client.sendall(REQUEST)
        test.assertEqual(recv_exactly(server, len(REQUEST)), REQUEST)
        server.sendall(ANSWER)
        test.assertEqual(recv_exactly(client, len(ANSWER)), ANSWER)
        return client, server

    def signalled(self, signals):
        """Have the wrapper's thread signal the tool (b't': SIGTERM, b'i': SIGINT, each); return (status, stdout
        text, stderr text) once it exits (bounded)."""
        try:
            out, err = self.process.communicate(signals, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError('still running %d s after the signals: %s' % (TIMEOUT, err.decode('utf-8', 'replace')))
        return self.process.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')


class SignalOffTheMainThreadTest(unittest.TestCase):

    def check_stopped(self, args, signals):
        for run in range(ROUNDS):
            with self.subTest(run=run), WrappedTool(*args) as tool:
                client, server = tool.one_exchange(self)
                status, out, err = tool.signalled(signals)
                client.close()
                server.close()
                self.assertEqual(status, 0, err)
                self.assertNotIn('Traceback', err)
                self.assertIn('login_id', out, 'no report: ' + err)

    def test_one_session_waiting_for_its_end(self):
        self.check_stopped((), b't')

    def test_twice_as_a_process_group_gets_it(self):
        self.check_stopped((), b'tt')

    def test_sigint_with_loop(self):
        self.check_stopped(('--loop',), b'i')


if __name__ == '__main__':
    unittest.main()
