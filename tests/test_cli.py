"""The command line: ctispy's options, usage errors of all three tools; ctispy's start line, verbose events,
signals, a closed output."""

import concurrent.futures
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

from tests.harness import (TIMEOUT, Tool, notes, parse_spy_output, recv_exactly, recv_until_eof,
                           recv_until_eof_or_reset, run_tool, sigint_not_ignored, sigint_restored, tool_path)
from ctiproxy import __version__
from ctiproxy.cli import parse, spy_parser

setUpModule, tearDownModule = sigint_not_ignored, sigint_restored


def run_spy(*args):
    """Run ctispy to its end with these arguments; return (exit code, stdout text, stderr text)."""
    status, out, err = run_tool('ctispy', *args)
    return status, out.decode('utf-8', 'replace'), err


def start_spy(*args):
    """Start ctispy with exactly these arguments; return (process, its start line)."""
    process = subprocess.Popen([sys.executable, tool_path('ctispy')] + list(args), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return process, process.stderr.readline().decode('utf-8', 'replace')


def end_process(process):
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=TIMEOUT)


def scripted_server():
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(8)
    listener.settimeout(TIMEOUT)
    return listener


class HelpTest(unittest.TestCase):

    def test_help_lists_options_and_examples(self):
        status, out, err = run_spy('--help')
        self.assertEqual(status, 0, err)
        self.assertEqual(err, '')
        for option in ('HOST', '--port', '--listen-port', '--listen-addr', '--loop', '-v', '--verbose', '--version',
                       '--help', '--pretty-print', '--raw', '--strip', '--include', '--exclude', '--no-client',
                       '--no-server'):
            self.assertRegex(out, r'(?<![\w-])%s\b' % re.escape(option))
        self.assertIn('5003', out)
        self.assertIn('50030', out)
        examples = out[out.lower().index('examples'):]
        self.assertRegex(examples, r'ctispy \S+ --include \S+=\S+')
        self.assertRegex(examples, r'ctispy \S+ --strip ')

    def test_short_help(self):
        status, out, _ = run_spy('-h')
        self.assertEqual(status, 0)
        self.assertIn('--listen-port', out)

    def test_version(self):
        status, out, err = run_spy('--version')
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith('ctispy'), out)
        self.assertIn(__version__, out)
        self.assertEqual(len(out.strip().splitlines()), 1)


class OptionValuesTest(unittest.TestCase):
    """Option values as the real parser reads them."""

    def test_defaults(self):
        args = parse(spy_parser(), ['xivo-new'])
        self.assertEqual(args.host, 'xivo-new')
        self.assertEqual(args.port, 5003)
        self.assertEqual(args.listen_port, 50030)
        self.assertIsNone(args.listen_addr)
        self.assertFalse(args.loop)
        self.assertFalse(args.verbose)
        self.assertFalse(args.pretty_print or args.raw or args.no_client or args.no_server)
        self.assertEqual((args.strip, args.include, args.exclude), ([], [], []))

    def test_values(self):
        args = spy_parser().parse_args(['xivo', '--port', '65535', '--listen-port', '1', '--listen-addr', '::1',
                                        '--loop', '-v', '--strip', 'a.b', '--strip', 'c',
                                        '--include', 'class=getlist', '--include', 'data=a=b', '--exclude', 'x='])
        self.assertEqual((args.port, args.listen_port, args.listen_addr), (65535, 1, '::1'))
        self.assertTrue(args.loop and args.verbose)
        self.assertEqual(args.strip, ['a.b', 'c'])
        self.assertEqual([tuple(pair) for pair in args.include], [('class', 'getlist'), ('data', 'a=b')])
        self.assertEqual([tuple(pair) for pair in args.exclude], [('x', '')])

    def test_listen_port_zero_and_long_verbose(self):
        args = spy_parser().parse_args(['xivo', '--listen-port', '0', '--verbose', '--port', '1'])
        self.assertEqual((args.listen_port, args.port, args.verbose), (0, 1, True))


ALL_THREE, FILTERING, SPY = ('ctispy', 'ctisave', 'ctistat'), ('ctispy', 'ctisave'), ('ctispy',)
BAD_SIZES = ('0', '10', '1023', '1000B', 'abc', 'lots', '1X', 'M', '', ' ', '-5', 'nan', 'inf', '1e400', '-inf')

# (the tools that have the option, the arguments after HOST (and ctisave's two files), what the error names)
USAGE_ERRORS = [
    (ALL_THREE, ['--capture-idle', '60'], '--capture-idle applies to --read'),     # live: nothing to say it of
    (ALL_THREE, ['--port', '0'], '--port'),
    (ALL_THREE, ['--port', '65536'], '--port'),
    (ALL_THREE, ['--port', 'abc'], '--port'),
    (ALL_THREE, ['--port', 'http'], '--port'),
    (ALL_THREE, ['--port', '-1'], '--port'),
    (ALL_THREE, ['--port', ''], '--port'),
    (ALL_THREE, ['--port'], '--port'),
    (ALL_THREE, ['--listen-port', '65536'], '--listen-port'),
    (ALL_THREE, ['--listen-port', '70000'], '--listen-port'),
    (ALL_THREE, ['--listen-port', '-1'], '--listen-port'),
    (ALL_THREE, ['--listen-port', 'http'], '--listen-port'),
] + [(ALL_THREE, ['--max-message-size=' + size], '--max-message-size') for size in BAD_SIZES] + [
    (ALL_THREE, ['--cert', 'c.pem'], '--key'),
    (ALL_THREE, ['--key', 'k.pem'], '--cert'),
    (ALL_THREE, ['--listen-tls'], '--listen-tls'),
    (ALL_THREE, ['--listen-tls', '--key', 'k.pem'], '--cert'),
    (ALL_THREE, ['other'], 'other'),
    (ALL_THREE, ['--no-such-option'], '--no-such-option'),
    (FILTERING, ['--include', 'class'], '--include'),
    (FILTERING, ['--include', '=getlist'], '--include'),
    (FILTERING, ['--exclude', 'class'], '--exclude'),
    (FILTERING, ['--strip', ''], '--strip'),
] + [(FILTERING, [option, value], "argument %s: not a key path: '%s'" % (option, value.partition('=')[0]))
     for option, values in (('--strip', ('a.', '.a', 'a..b', '.')),
                            ('--include', ('a.=x', 'a..b=x', '.a=x')),
                            ('--exclude', ('a.=x', 'a..b=x', '.=x')))
     for value in values] + [
    (SPY, ['--no-client', '--no-server'], '--no-'),
    (SPY, ['--raw', '--pretty-print'], '--raw'),
    (SPY, ['--raw', '--strip', 'timenow'], '--raw'),
    (SPY, ['--strip', 'timenow', '--raw'], '--raw'),
    (SPY, ['--raw', '--include', 'class=getlist'], '--raw'),
    (SPY, ['--raw', '--exclude', 'class=getlist'], '--raw'),
]


class UsageErrorTest(unittest.TestCase):
    """A bad command line, for each tool that has the option: argparse's usage and message on stderr, exit
    code 2, no traceback."""

    def test_usage_errors(self):
        with tempfile.TemporaryDirectory() as folder:
            files = {'ctisave': [os.path.join(folder, 'client'), os.path.join(folder, 'server')]}
            cases = [(name, ['xivo'] + files.get(name, []) + args, needle)
                     for tools, args, needle in USAGE_ERRORS for name in tools]
            cases += [(name, [], 'CLIENTFILE' if name == 'ctisave' else 'HOST') for name in ALL_THREE]
            cases += [('ctisave', ['xivo'], 'CLIENTFILE'),             # HOST given: the error names the missing file
                      ('ctisave', ['xivo', 'client-only'], 'SERVERFILE'),
                      ('ctisave', ['xivo', '', files['ctisave'][1]], 'CLIENTFILE is empty'),
                      ('ctisave', ['xivo', files['ctisave'][0], ''], 'SERVERFILE is empty'),
                      ('ctisave', ['xivo', '', ''], 'CLIENTFILE is empty'),
                      ('ctisave', ['--read', '-', files['ctisave'][0], ''], 'SERVERFILE is empty')]
            with concurrent.futures.ThreadPoolExecutor(4) as pool:     # each run is mostly Python starting up
                results = list(pool.map(lambda case: run_tool(case[0], *case[1]), cases))
            self.assertEqual(os.listdir(folder), [])
        for (name, args, needle), (status, out, err) in zip(cases, results):
            with self.subTest(tool=name, args=args):
                self.assertEqual(status, 2, err)
                self.assertEqual(out, b'')
                self.assertNotIn('Traceback', err)
                self.assertNotIn('internal error', err)
                self.assertTrue(err.startswith('usage: %s' % name), err)
                message = err.strip().splitlines()[-1]
                self.assertTrue(message.startswith('%s: error: ' % name), err)
                self.assertIn(needle, message)


class StartLineTest(unittest.TestCase):
    """On start, one line on stderr: where the tool listens and where it relays."""

    def test_default_server_port(self):
        with Tool('ctispy', server=False) as tool:
            self.assertRegex(tool.start_line, r'^ctispy: listening on port [1-9]\d* of 127\.0\.0\.1; '
                                              r'relaying each client to 127\.0\.0\.1:5003\n$')

    def test_given_server_port_and_picked_listen_port(self):
        with Tool('ctispy', server=False, port=6123, host='localhost') as tool:
            self.assertRegex(tool.start_line, r'^ctispy: listening on port [1-9]\d* of 127\.0\.0\.1; '
                                              r'relaying each client to localhost:6123\n$')
            self.assertNotEqual(tool.port, 0)

    def test_default_listen_port(self):
        with scripted_server() as listener:
            process, line = start_spy('127.0.0.1', '--port', str(listener.getsockname()[1]),
                                      '--listen-addr', '127.0.0.1')
            try:
                if 'cannot listen' in line:
                    self.skipTest('port 50030 is in use here: ' + line)
                self.assertRegex(line, r'^ctispy: listening on port 50030 of 127\.0\.0\.1; relaying each client to '
                                       r'127\.0\.0\.1:\d+\n$')
                client = socket.create_connection(('127.0.0.1', 50030), timeout=TIMEOUT)
                server, _ = listener.accept()
                server.settimeout(TIMEOUT)
                client.sendall(b'{"class": "ping"}\n')
                self.assertEqual(recv_exactly(server, 18), b'{"class": "ping"}\n')
                client.close()
                self.assertEqual(recv_until_eof(server), b'')
                server.close()
                self.assertEqual(process.wait(TIMEOUT), 0)
            finally:
                end_process(process)

    def test_all_interfaces_by_default(self):
        with scripted_server() as listener:
            process, line = start_spy('127.0.0.1', '--port', str(listener.getsockname()[1]), '--listen-port', '0',
                                      '--loop')
            try:
                match = re.match(r'^ctispy: listening on port (\d+) of all interfaces \((IPv4 and IPv6|IPv4)\); '
                                 r'relaying each client to 127\.0\.0\.1:\d+\n$', line)
                self.assertTrue(match, line)
                addresses = ['127.0.0.1'] + (['::1'] if match.group(2) == 'IPv4 and IPv6' else [])
                for address in addresses:
                    client = socket.create_connection((address, int(match.group(1))), timeout=TIMEOUT)
                    server, _ = listener.accept()
                    server.settimeout(TIMEOUT)
                    server.sendall(b'{"class": "hi"}\n')
                    self.assertEqual(recv_exactly(client, 16), b'{"class": "hi"}\n')
                    client.close()
                    self.assertEqual(recv_until_eof(server), b'')
                    server.close()
                process.send_signal(signal.SIGINT)
                self.assertEqual(process.wait(TIMEOUT), 0)
            finally:
                end_process(process)

    def test_ipv6_listen_address(self):
        if not socket.has_ipv6:
            self.skipTest('no IPv6 here')
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(('::1', 0))
        except OSError:
            self.skipTest('no IPv6 loopback here')
        with Tool('ctispy', '--listen-addr', '::1', '-v') as tool:
            self.assertRegex(tool.start_line, r'^ctispy: listening on port [1-9]\d* of ::1; ')
            client = socket.create_connection(('::1', tool.port), timeout=TIMEOUT)
            client_port = client.getsockname()[1]
            tool.listener.settimeout(TIMEOUT)
            server, _ = tool.listener.accept()
            server.settimeout(TIMEOUT)
            server.sendall(b'{"class": "v6"}\n')
            self.assertEqual(recv_exactly(client, 16), b'{"class": "v6"}\n')
            client.close()
            self.assertEqual(recv_until_eof(server), b'')
            server.close()
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertIn('[::1]:%d' % client_port, err)             # the verbose event names the client
        self.assertEqual(parse_spy_output(out.decode('utf-8'))[0][2], ['{"class": "v6"}'])


class VerboseTest(unittest.TestCase):

    def session(self, *args):
        with Tool('ctispy', *args) as tool:
            client, server = tool.connect()
            client_port = client.getsockname()[1]
            server_port = tool.listener.getsockname()[1]
            client.sendall(b'{"class": "x"}\n')
            recv_exactly(server, 15)
            client.close()
            self.assertEqual(recv_until_eof(server), b'')
            server.close()
            status, _, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        return notes(err), client_port, server_port

    def test_verbose_reports_connection_events(self):
        events, client_port, server_port = self.session('-v')
        self.assertGreaterEqual(len(events), 2, events)
        for event in events:
            self.assertTrue(event.startswith('ctispy: '), event)
        self.assertTrue(any('127.0.0.1:%d' % client_port in event for event in events), events)
        self.assertTrue(any('127.0.0.1:%d' % server_port in event for event in events), events)

    def test_quiet_without_verbose(self):
        events, _, _ = self.session()
        self.assertEqual(events, [])


class SignalTest(unittest.TestCase):
    """Ctrl-C (SIGINT) and SIGTERM end the tool: sessions closed, output complete, exit 0, no traceback."""

    def check_stop(self, sig, loop, sessions):
        args = ['--loop'] if loop else []
        with Tool('ctispy', *args) as tool:
            if loop:              # a first session, over before the signal: the tool is serving
                client, server = tool.connect()
                client.close()
                self.assertEqual(recv_until_eof(server), b'')
                server.close()
            pairs = [tool.connect() for _ in range(sessions)]
            for number, (client, server) in enumerate(pairs):
                server.sendall(b'{"class": "s%d"}\n' % number)
                self.assertEqual(recv_exactly(client, 16), b'{"class": "s%d"}\n' % number)
                client.sendall(b'{"class": "c%d"}\n' % number)
                self.assertEqual(recv_exactly(server, 16), b'{"class": "c%d"}\n' % number)
            status, out, err = tool.stop(sig)
            for client, server in pairs:
                self.assertEqual(recv_until_eof(client), b'')
                self.assertEqual(recv_until_eof(server), b'')
                client.close()
                server.close()
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        bodies = sorted(body[0] for _, _, body in parse_spy_output(out.decode('utf-8')))
        expected = sorted('{"class": "%s%d"}' % (side, number) for side in 'cs' for number in range(sessions))
        self.assertEqual(bodies, expected)

    def test_sigint_during_session(self):
        self.check_stop(signal.SIGINT, loop=False, sessions=1)

    def test_sigterm_during_session(self):
        self.check_stop(signal.SIGTERM, loop=False, sessions=1)

    def test_sigint_with_loop_and_open_sessions(self):
        self.check_stop(signal.SIGINT, loop=True, sessions=3)

    def test_sigterm_with_loop_and_open_sessions(self):
        self.check_stop(signal.SIGTERM, loop=True, sessions=3)

    def test_sigint_with_loop_and_no_session(self):
        self.check_stop(signal.SIGINT, loop=True, sessions=0)

    def test_sigterm_with_loop_and_no_session(self):
        self.check_stop(signal.SIGTERM, loop=True, sessions=0)

    def check_stop_right_after_start(self, sig, *args):
        """The start line says the tool is ready: a signal from then on ends it cleanly."""
        with Tool('ctispy', *args) as tool:
            self.assertIn('listening on', tool.start_line)
            status, out, err = tool.stop(sig)
        self.assertNotIn('Traceback', err)
        self.assertEqual(status, 0, err)
        self.assertEqual(out, b'')

    def test_sigint_right_after_start(self):
        self.check_stop_right_after_start(signal.SIGINT)

    def test_sigterm_right_after_start(self):
        self.check_stop_right_after_start(signal.SIGTERM)

    def test_sigint_right_after_start_with_loop(self):
        self.check_stop_right_after_start(signal.SIGINT, '--loop')

    def test_sigterm_right_after_start_with_loop(self):
        self.check_stop_right_after_start(signal.SIGTERM, '--loop')


class ClosedOutputTest(unittest.TestCase):
    """stdout's reader goes away (ctispy ... | head): the tool ends, quietly."""

    def check_closed_output(self, *args):
        with Tool('ctispy', *args) as tool:
            client, server = tool.connect()
            server.sendall(b'{"class": "first"}\n')
            tool.read_stdout_until(b'"first"')
            tool.process.stdout.close()
            batch = b''.join(b'{"class": "getlist", "tid": %d, "pad": "%s"}\n' % (number, b'x' * 100)
                             for number in range(1000))

            def drain():
                try:
                    recv_until_eof_or_reset(client)
                except OSError:
                    pass

            def push():                       # about 5 MB of messages, or until the tool ends the session
                try:
                    for _ in range(40):
                        server.sendall(batch)
                except OSError:
                    pass
            threads = [threading.Thread(target=drain, daemon=True), threading.Thread(target=push, daemon=True)]
            for thread in threads:
                thread.start()
            try:
                status = tool.process.wait(10)
            except subprocess.TimeoutExpired:
                status = None
            # the tool's end may leave the server's sending stuck on a full window: unblock it
            for sock in (server, client):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for thread in threads:
                thread.join(TIMEOUT)
            self.assertIsNotNone(status, 'ctispy %s did not end after its output was closed' % ' '.join(args))
            err = tool.start_line + tool.process.stderr.read().decode('utf-8', 'replace')
            client.close()
            server.close()
        self.assertNotIn('Traceback', err)
        self.assertNotIn('Exception', err)

    def test_closed_output_without_loop(self):
        self.check_closed_output()

    def test_closed_output_with_loop(self):
        self.check_closed_output('--loop')


if __name__ == '__main__':
    unittest.main()
