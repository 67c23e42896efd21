"""A stop signal whose arrival does not interrupt the main thread's sleep still stops the tool.

That is what happens when a signal comes just before the main thread goes to sleep (its Python handler is
then pending, and nothing wakes the thread to run it: the rare hang of two SIGTERMs to the process group),
and what happens when another thread of the process takes the signal.  The second is made here at will: the
tool runs under a wrapper whose own thread takes the stop signals, and sends them to itself when the test
asks (with SIGUSR1)."""

import signal
import sys
import unittest

from tests.harness import sigint_not_ignored, sigint_restored
from tests.test_signals import StartedTool, one_exchange

setUpModule, tearDownModule = sigint_not_ignored, sigint_restored

ROUNDS = 3

# Runs `python3 -c SIGNALLING_THREAD SIGNAL COUNT PYTHON SCRIPT ARGUMENTS...`: SCRIPT, with a thread of its own
# started first, before the script holds the stop signals (so that it takes them, as a thread that a library
# started could), which sends itself SIGNAL COUNT times for each SIGUSR1 the process gets.
SIGNALLING_THREAD = '''
import runpy, signal, sys, threading
signum, count = getattr(signal, sys.argv[1]), int(sys.argv[2])
signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGUSR1,))        # for sigwait(); the tool's threads inherit it
def signal_on_request():
    while True:
        signal.sigwait((signal.SIGUSR1,))
        for _ in range(count):
            signal.pthread_kill(threading.get_ident(), signum)
threading.Thread(target=signal_on_request, daemon=True).start()
sys.argv = sys.argv[4:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@unittest.skipUnless(hasattr(signal, 'pthread_kill') and hasattr(signal, 'sigwait'), 'no pthread_kill or sigwait here')
class SignalOffTheMainThreadTest(unittest.TestCase):
    """ctistat with a session open, signalled by a thread that is not its main thread: it stops, with its report."""

    def check_stopped(self, args, signame, count):
        for run in range(ROUNDS):
            with self.subTest(run=run), StartedTool('ctistat', *args,
                                                    prefix=(sys.executable, '-c', SIGNALLING_THREAD, signame,
                                                            str(count))) as tool:
                client, server = one_exchange(self, tool)
                tool.process.send_signal(signal.SIGUSR1)
                status, out, err = tool.finish()
                client.close()
                server.close()
                self.assertEqual(status, 0, err)
                self.assertNotIn('Traceback', err)
                self.assertIn('login_id', out.decode('utf-8'), 'no report: ' + err)

    def test_one_session_waiting_for_its_end(self):
        self.check_stopped((), 'SIGTERM', 1)

    def test_twice_as_a_process_group_gets_it(self):
        self.check_stopped((), 'SIGTERM', 2)

    def test_sigint_with_loop(self):
        self.check_stopped(('--loop',), 'SIGINT', 1)


if __name__ == '__main__':
    unittest.main()
