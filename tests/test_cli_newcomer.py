"""The command line a newcomer types: --tls picks port 5013, a clear-text answer to --tls is named as such,
HOST:PORT, TLS options that do nothing, ctisave's help words and its older numbered files."""

import os
import socket
import ssl
import tempfile
import unittest

from ctiproxy.cli import parse, save_parser, split_host_port, spy_parser
from ctiproxy.outputs import numbered_files
from ctiproxy.tls import starts_like_tls
from tests.harness import (TIMEOUT, Tool, read_line_unbuffered, recv_exactly, recv_until_eof, run_tool,
                           sigint_not_ignored, sigint_restored)

setUpModule, tearDownModule = sigint_not_ignored, sigint_restored

CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'certs')
BANNER = b'XiVO CTI Server Version 1.2.3\n'


def parsed(*argv):
    return parse(spy_parser(argv), list(argv))


def said_at_start(name, *args):
    """Every line a tool says on stderr at start: it runs with -v, and its stderr is read until it reports its
    first client connected (which it does only once it serves)."""
    with Tool(name, '-v', *args) as tool:
        client = tool.connect_client_only()
        lines = [tool.start_line]
        while lines[-1] and 'client 127.0.0.1' not in lines[-1]:
            lines.append(read_line_unbuffered(tool.process.stderr.fileno()).decode('utf-8', 'replace'))
        client.close()
    return ''.join(lines[:-1])


def ipv6_loopback():
    """Whether ::1 can be bound here."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(('::1', 0))
    except OSError:
        return False
    return True


class ServerAddressTest(unittest.TestCase):
    """HOST, HOST:PORT, [IPV6]:PORT and --port, as parse() reads them."""

    def test_split(self):
        for text, expected in [('xivo', ('xivo', None)), ('xivo:5013', ('xivo', '5013')), ('::1', ('::1', None)),
                               ('fe80::1%eth0', ('fe80::1%eth0', None)), ('[::1]:5003', ('::1', '5003')),
                               ('[::1]', ('::1', None)), ('xivo:', ('xivo', ''))]:
            self.assertEqual(split_host_port(text), expected, text)
        for text in ('[::1', '[::1]5003', '[::1]x:1'):
            with self.assertRaises(ValueError, msg=text):
                split_host_port(text)

    def test_ports(self):
        cases = [(['xivo'], ('xivo', 5003)), (['xivo', '--tls'], ('xivo', 5013)),
                 (['xivo', '--tls', '--port', '5003'], ('xivo', 5003)), (['xivo:6000', '--tls'], ('xivo', 6000)),
                 (['xivo:6000', '--port', '6000'], ('xivo', 6000)), (['[::1]:6000'], ('::1', 6000)),
                 (['::1'], ('::1', 5003)), (['::1', '--tls'], ('::1', 5013)), (['--read', 'x'], (None, 5003))]
        for argv, expected in cases:
            args = parsed(*argv)
            self.assertEqual((args.host, args.port), expected, argv)

    def test_usage_errors(self):
        with tempfile.TemporaryDirectory() as folder:
            files = [os.path.join(folder, 'client'), os.path.join(folder, 'server')]
            cases = [('ctispy', ['xivo:6000', '--port', '6001'], '--port'), ('ctistat', ['xivo:0'], 'port'),
                     ('ctispy', ['xivo:http'], 'port'), ('ctispy', ['[::1'], '[::1'), ('ctispy', [':5003'], 'host'),
                     ('ctisave', ['xivo:6000', '--port', '5003'] + files, '--port')]
            for name, argv, needle in cases:
                with self.subTest(argv=argv):
                    status, out, err = run_tool(name, *argv)
                    self.assertEqual(status, 2, err)
                    self.assertNotIn('Traceback', err)
                    self.assertIn(needle, err.strip().splitlines()[-1])
            self.assertEqual(os.listdir(folder), [])


class StartLineTest(unittest.TestCase):

    def test_tls_without_port_relays_to_5013(self):
        with Tool('ctispy', '--tls', '--tls-no-verify', server=False) as tool:
            self.assertRegex(tool.start_line, r'relaying each client to 127\.0\.0\.1:5013 \(TLS\)\n$')

    def test_ipv6_host_is_shown_in_brackets(self):
        with Tool('ctispy', server=False, host='::1') as tool:
            self.assertRegex(tool.start_line, r'relaying each client to \[::1\]:5003\n$')

    def test_host_colon_port_relays_there(self):
        self.relay_one_line(socket.AF_INET, '127.0.0.1', '127.0.0.1:%d')

    @unittest.skipUnless(ipv6_loopback(), 'no IPv6 loopback here')
    def test_bracketed_ipv6_host_and_port_relays_there(self):
        self.relay_one_line(socket.AF_INET6, '::1', '[::1]:%d')

    def relay_one_line(self, family, address, operand):
        """ctispy given HOST:PORT (operand % port) of a server listening on address: one line relayed."""
        with socket.socket(family) as listener:
            listener.bind((address, 0))
            listener.listen(1)
            port = listener.getsockname()[1]
            with Tool('ctispy', server=False, host=operand % port) as tool:
                self.assertIn('relaying each client to %s\n' % (operand % port), tool.start_line)
                self.relay_through(tool, listener)

    def relay_through(self, tool, listener):
        client = tool.connect_client_only()
        listener.settimeout(TIMEOUT)
        server, _ = listener.accept()
        with client, server:
            server.settimeout(TIMEOUT)
            client.sendall(b'{"class": "ping"}\n')
            self.assertEqual(recv_exactly(server, 18), b'{"class": "ping"}\n')
            client.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(server), b'')
            server.close()
            self.assertEqual(recv_until_eof(client), b'')
        status, _, err = tool.finish()
        self.assertEqual(status, 0, err)


class ClearTextAnswerTest(unittest.TestCase):
    """--tls against a port that speaks clear text: the session's failure says so."""

    def session_error(self, serve):
        """Run ctispy --tls against a scripted server that does serve(socket); return its exit code and stderr."""
        with Tool('ctispy', '--tls', '--tls-no-verify') as tool:
            client = tool.connect_client_only()
            tool.listener.settimeout(TIMEOUT)
            server, _ = tool.listener.accept()
            with client, server:
                server.settimeout(TIMEOUT)
                serve(server)
                self.assertEqual(recv_until_eof(client), b'')
            status, _, err = tool.finish()
        self.assertNotIn('Traceback', err)
        return status, err

    def test_banner_first(self):
        """A CTI server on its clear-text port sends its banner at once."""
        status, err = self.session_error(lambda server: server.sendall(BANNER))
        self.assertEqual(status, 1, err)
        self.assertRegex(err, r'cannot connect to server 127\.0\.0\.1:\d+: the server answered in clear text, '
                              r'not TLS: port \d+ probably does not speak TLS')

    def test_answer_to_the_client_hello_then_close(self):
        """A server that reads first, then answers in clear text and closes."""
        def serve(server):
            self.assertEqual(server.recv(1)[:1], b'\x16')          # the ClientHello's first byte
            server.sendall(b'HTTP/1.0 400 Bad Request\r\n\r\n')
            server.close()
        status, err = self.session_error(serve)
        self.assertEqual(status, 1, err)
        self.assertIn('the server answered in clear text, not TLS', err)

    def test_a_tls_failure_is_not_taken_for_clear_text(self):
        """A TLS server whose certificate is refused: the TLS reason, not a clear-text answer."""
        with Tool('ctispy', '--tls', '--tls-ca', os.path.join(CERTS, 'other.pem')) as tool:
            client = tool.connect_client_only()
            tool.listener.settimeout(TIMEOUT)
            server, _ = tool.listener.accept()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(os.path.join(CERTS, 'server.pem'), os.path.join(CERTS, 'server.key'))
            with client, server:
                server.settimeout(TIMEOUT)
                with self.assertRaises((ssl.SSLError, OSError)):
                    context.wrap_socket(server, server_side=True)
                self.assertEqual(recv_until_eof(client), b'')
            status, _, err = tool.finish()
        self.assertEqual(status, 1, err)
        self.assertIn('certificate verify failed', err)
        self.assertNotIn('clear text', err)

    def test_starts_like_tls(self):
        for data in (b'\x16\x03\x01\x00\x05', b'\x15\x03\x03', b'\x17', b'\x16\x03'):
            self.assertTrue(starts_like_tls(data), data)
        for data in (b'', b'XiVO', b'\x16\x00', b'{"class"', b'\x13\x03', b'\x19\x03'):
            self.assertFalse(starts_like_tls(data), data)


class UnusedTlsOptionsTest(unittest.TestCase):

    def test_without_tls_or_cert_they_have_no_effect(self):
        for option in (['--tls-no-verify'], ['--tls-ca', os.path.join(CERTS, 'server.pem')]):
            with self.subTest(option=option[0]):
                err = said_at_start('ctispy', *option)
                self.assertIn('warning: %s has no effect without --tls or --cert' % option[0], err)
                self.assertNotIn('not checked', err)

    def test_with_tls_no_verify_still_warns(self):
        self.assertEqual(parsed('xivo', '--tls', '--tls-no-verify').tls_options.warnings,
                         ['warning: --tls-no-verify: the server\'s certificate is not checked'])
        self.assertEqual(parsed('xivo', '--tls', '--tls-ca', os.path.join(CERTS, 'server.pem')).tls_options.warnings,
                         [])


def help_sections(text):
    """--help's sections as {title: text}."""
    sections, title = {}, ''
    for line in text.splitlines():
        if line and not line.startswith(' ') and line.endswith(':'):
            title = line[:-1]
        else:
            sections[title] = sections.get(title, '') + line + '\n'
    return sections


class HelpWordsTest(unittest.TestCase):

    def test_ctisave_filters_say_saved(self):
        sections = help_sections(save_parser(['h']).format_help())
        title = [name for name in sections if name.startswith('filters')][0]
        self.assertEqual(title, 'filters (they change what is saved, never what is relayed)')
        self.assertNotIn('shown', sections[title])
        self.assertNotRegex(sections[title], r'\b(show|hide|hides)\b')

    def test_ctispy_filters_say_shown(self):
        sections = help_sections(spy_parser(['h']).format_help())
        self.assertIn('filters (they change what is shown, never what is relayed)', sections)

    def test_version_is_not_a_relay_option(self):
        sections = help_sections(spy_parser(['h']).format_help())
        self.assertNotIn('--version', sections['relay'])
        self.assertIn('--version', ''.join(text for title, text in sections.items() if title != 'relay'))


class OlderNumberedFilesTest(unittest.TestCase):
    """ctisave --loop says at start which numbered files of an earlier run are there."""

    def start_line_and_notes(self, folder, *args):
        return said_at_start('ctisave', os.path.join(folder, 'client'), os.path.join(folder, 'server'), *args)

    def test_names_them_in_one_line(self):
        with tempfile.TemporaryDirectory() as folder:
            for name in ('client.2', 'client.3', 'server.2', 'client.02', 'client.1', 'client.x', 'clientx.4'):
                with open(os.path.join(folder, name), 'w'):
                    pass
            err = self.start_line_and_notes(folder, '--loop')
        notes = [line for line in err.splitlines() if 'earlier run' in line]
        self.assertEqual(len(notes), 1, err)
        named = [os.path.join(folder, name) for name in ('client.2', 'client.3', 'server.2')]
        self.assertIn(', '.join(named) + ';', notes[0])
        self.assertIn('overwrites', notes[0])
        self.assertIn('left as they are', notes[0])
        for other in ('client.02', 'client.1', 'client.x', 'clientx.4'):
            self.assertNotIn(other, notes[0])

    def test_quiet_without_them_or_without_loop(self):
        with tempfile.TemporaryDirectory() as folder:
            self.assertNotIn('earlier run', self.start_line_and_notes(folder, '--loop'))
            with open(os.path.join(folder, 'server.2'), 'w'):
                pass
            self.assertNotIn('earlier run', self.start_line_and_notes(folder))

    def test_numbered_files(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'c')
            for number in (10, 2, 9):
                with open('%s.%d' % (path, number), 'w'):
                    pass
            self.assertEqual(numbered_files(path), ['%s.%d' % (path, number) for number in (2, 9, 10)])
            os.mkdir(path + '.3')                      # not a file: not one of them
            self.assertEqual(numbered_files(path), ['%s.%d' % (path, number) for number in (2, 9, 10)])
            self.assertEqual(numbered_files(os.path.join(folder, 'missing', 'c')), [])


if __name__ == '__main__':
    unittest.main()
