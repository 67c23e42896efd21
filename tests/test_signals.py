"""Stop signals and odd start states: a signal repeated by process-group delivery is one stop request,
SIGHUP stops as SIGTERM does (nohup still works), and a tool started with stdout closed says so or runs."""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import unittest

from ctiproxy.stopping import StopRequests
from tests.harness import (TIMEOUT, Tool, close_session, read_line_unbuffered, recv_exactly, sigint_restored,
                           stop_signals_not_ignored, tool_path)

setUpModule, tearDownModule = stop_signals_not_ignored, sigint_restored

REQUEST = b'{"class": "login_id", "commandid": 1}\n'
ANSWER = b'{"class": "login_id", "replyid": 1}\n'
RUNS = 6        # each run of a race the old code lost about one time in four


class StopRequestsTest(unittest.TestCase):
    """The decision, from when each signal comes."""

    def test_first_stops(self):
        self.assertEqual(StopRequests(0.5).received(100.0), StopRequests.STOP)

    def test_repeat_within_the_window_is_the_same_request(self):
        requests = StopRequests(0.5)
        requests.received(100.0)
        self.assertEqual(requests.received(100.0), StopRequests.REPEATED)
        self.assertEqual(requests.received(100.49), StopRequests.REPEATED)

    def test_later_signal_ends_at_once(self):
        requests = StopRequests(0.5)
        requests.received(100.0)
        self.assertEqual(requests.received(100.3), StopRequests.REPEATED)
        self.assertEqual(requests.received(100.5), StopRequests.END_NOW)     # counted from the first

    def test_ending_on_its_own(self):
        requests = StopRequests(0.5)
        requests.settle(100.0)
        self.assertEqual(requests.received(100.2), StopRequests.REPEATED)
        self.assertEqual(requests.received(101.0), StopRequests.END_NOW)
        stopped = StopRequests(0.5)
        stopped.received(100.0)
        stopped.settle(100.4)                       # the first request's moment stays
        self.assertEqual(stopped.received(100.6), StopRequests.END_NOW)


class StartedTool(Tool):
    """A Tool started after a command prefix (timeout, nohup, sh), or in a session of its own."""

    def __init__(self, name, *args, prefix=(), new_session=False):
        self.name = name
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(8)
        command = list(prefix) + [sys.executable, tool_path(name), '127.0.0.1', '--port',
                                  str(self.listener.getsockname()[1]), '--listen-addr', '127.0.0.1',
                                  '--listen-port', '0'] + list(args)
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=new_session)
        self.start_line = read_line_unbuffered(self.process.stderr.fileno()).decode('utf-8', 'replace')
        match = re.search(r'listening on port (\d+)', self.start_line)
        self.port = int(match.group(1)) if match else None


def one_exchange(test, tool):
    """A session with one request and its answer, left open; return (client, server)."""
    client, server = tool.connect()
    client.sendall(REQUEST)
    test.assertEqual(recv_exactly(server, len(REQUEST)), REQUEST)
    server.sendall(ANSWER)
    test.assertEqual(recv_exactly(client, len(ANSWER)), ANSWER)
    return client, server


class RepeatedSignalTest(unittest.TestCase):
    """The same signal twice at once (a process group's delivery) is one request: ctistat prints its report."""

    def check_report(self, status, out, err):
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        self.assertIn('login_id', out.decode('utf-8'), 'no report: ' + err)

    def test_timeout_forwards_sigterm_to_the_tool_and_its_group(self):
        """`timeout` passes a SIGTERM it gets on to the tool, then to its process group: the tool gets it twice."""
        for run in range(RUNS):
            with self.subTest(run=run), StartedTool('ctistat', prefix=('timeout', '-s', 'TERM', '600')) as tool:
                client, server = one_exchange(self, tool)
                status, out, err = tool.stop(signal.SIGTERM)        # to timeout, which forwards it twice
                client.close()
                server.close()
                self.check_report(status, out, err)

    def check_group_signalled_twice(self, sig):
        for run in range(RUNS):
            with self.subTest(run=run), StartedTool('ctistat', new_session=True) as tool:
                client, server = one_exchange(self, tool)
                os.killpg(tool.process.pid, sig)
                os.killpg(tool.process.pid, sig)
                status, out, err = tool.finish()
                client.close()
                server.close()
                self.check_report(status, out, err)

    def test_sigterm_to_the_group_twice(self):
        self.check_group_signalled_twice(signal.SIGTERM)

    def test_sigint_to_the_group_twice(self):
        self.check_group_signalled_twice(signal.SIGINT)

    def test_sighup_then_sigterm(self):
        """systemd's way: SIGTERM then SIGHUP at once."""
        for run in range(RUNS):
            with self.subTest(run=run), StartedTool('ctistat', new_session=True) as tool:
                client, server = one_exchange(self, tool)
                os.kill(tool.process.pid, signal.SIGTERM)
                os.kill(tool.process.pid, signal.SIGHUP)
                status, out, err = tool.finish()
                client.close()
                server.close()
                self.check_report(status, out, err)


class HangUpTest(unittest.TestCase):
    """SIGHUP (a dropped ssh session) stops the tool as SIGTERM does; nohup keeps it running."""

    def test_sighup_prints_the_report(self):
        for args in ((), ('--loop',)):
            with self.subTest(args=args), Tool('ctistat', *args) as tool:
                client, server = one_exchange(self, tool)
                status, out, err = tool.stop(signal.SIGHUP)
                client.close()
                server.close()
            self.assertEqual(status, 0, err)
            self.assertNotIn('Traceback', err)
            self.assertIn('login_id', out.decode('utf-8'))

    def test_sighup_closes_ctisave_files(self):
        with tempfile.TemporaryDirectory() as folder:
            paths = [os.path.join(folder, name) for name in ('client', 'server')]
            with Tool('ctisave', *paths) as tool:
                client, server = one_exchange(self, tool)
                status, _, err = tool.stop(signal.SIGHUP)
                client.close()
                server.close()
            self.assertEqual(status, 0, err)
            with open(paths[0], encoding='utf-8') as saved:
                self.assertIn('"login_id"', saved.read())

    def test_nohup_keeps_sighup_ignored(self):
        status_path = None
        with StartedTool('ctistat', '--loop', prefix=('nohup',)) as tool:
            status_path = '/proc/%d/status' % tool.process.pid
            if not os.path.exists(status_path):
                self.skipTest('no /proc here')
            with open(status_path) as status:
                ignored = int(re.search(r'^SigIgn:\s*([0-9a-f]+)$', status.read(), re.M).group(1), 16)
            self.assertTrue(ignored & (1 << (signal.SIGHUP - 1)), 'the tool took SIGHUP back from nohup')
            tool.process.send_signal(signal.SIGHUP)         # discarded: ignored
            client, server = one_exchange(self, tool)       # still relaying
            close_session(self, client, server)
            status, out, err = tool.stop(signal.SIGTERM)
        self.assertEqual(status, 0, err)
        self.assertIn('login_id', out.decode('utf-8'))


CLOSED_STDOUT = ('sh', '-c', 'exec "$0" "$@" >&-')


def run_with_stdout_closed(name, *args):
    return run_tool_command(list(CLOSED_STDOUT) + [sys.executable, tool_path(name)] + list(args))


def run_tool_command(command):
    done = subprocess.run(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=TIMEOUT)
    return done.returncode, done.stderr.decode('utf-8', 'replace')


class ClosedStdoutTest(unittest.TestCase):
    """Started with stdout closed (>&-): ctispy and ctistat have nowhere to show anything: one line, exit 1,
    before listening; ctisave does not use stdout: it runs."""

    def check_refused(self, name, *args):
        status, err = run_with_stdout_closed(name, *args)
        self.assertEqual(status, 1, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertRegex(err, r'^%s: stdout is closed: ' % name)

    def test_ctispy(self):
        self.check_refused('ctispy', '127.0.0.1', '--listen-port', '0')

    def test_ctispy_json_lines(self):
        self.check_refused('ctispy', '127.0.0.1', '--listen-port', '0', '--json-lines')

    def test_ctistat(self):
        self.check_refused('ctistat', '127.0.0.1', '--listen-port', '0', '--loop')

    def test_ctispy_read(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'recording.jsonl')
            with open(path, 'w') as recording:
                recording.write('{"time": "2024-01-01T00:00:00+00:00", "session": 1, "direction": "client", '
                                '"message": {"class": "x"}}\n')
            self.check_refused('ctispy', '--read', path)

    def test_help_still_shown(self):
        status, err = run_with_stdout_closed('ctispy', '--help')
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)

    def test_ctisave_runs(self):
        with tempfile.TemporaryDirectory() as folder:
            paths = [os.path.join(folder, name) for name in ('client', 'server')]
            with StartedTool('ctisave', *paths, prefix=CLOSED_STDOUT) as tool:
                self.assertIn('listening on', tool.start_line)
                client, server = one_exchange(self, tool)
                close_session(self, client, server)
                status, _, err = tool.finish()
            self.assertEqual(status, 0, err)
            self.assertNotIn('Traceback', err)
            with open(paths[1], encoding='utf-8') as saved:
                self.assertIn('"replyid": 1', saved.read())


if __name__ == '__main__':
    unittest.main()
