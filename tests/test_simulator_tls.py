"""ctisim with encryption: `ctisim server --tls` and `--starttls`, `ctisim client --tls` and `--starttls`,
`ctisim demo --starttls` and `make demo-tls` (STARTTLS seen through by the real ctispy).  Real processes over
loopback; the certificates are tests/certs/ ones, or one that ctisim makes with openssl for the run."""

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import unittest

from tests.harness import ROOT, TIMEOUT, read_line_unbuffered, tool_path
from tests.test_demo import messages
from tests.test_simulator import BANNER, SimServer, ctisim

CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'certs')
SERVER_CERT = ('--cert', os.path.join(CERTS, 'server.pem'), '--key', os.path.join(CERTS, 'server.key'))
TRUST_SERVER = ('--tls-ca', os.path.join(CERTS, 'server.pem'))
SESSION_DONE = r'^ctisim: session done: \d+ requests answered, \d+ messages from the server unasked\n$'
needs_openssl = unittest.skipIf(shutil.which('openssl') is None, 'the openssl command is not installed')


def trusting(name='server'):
    return ssl.create_default_context(cafile=os.path.join(CERTS, name + '.pem'))


def read_line(stream):
    line = b''
    while not line.endswith(b'\n'):
        data = stream.recv(1)
        if not data:
            break
        line += data
    return line


class ServerTest(unittest.TestCase):
    """ctisim server, seen by a client of the test's own (the standard ssl module)."""

    def test_tls_from_the_first_byte(self):
        with SimServer('--tls', *SERVER_CERT) as server:
            self.assertRegex(server.start_line, r'listening on port \d+ of 127\.0\.0\.1; 5 users; TLS\n$')
            with socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT) as sock:
                with trusting().wrap_socket(sock, server_hostname='localhost') as tls:
                    self.assertEqual(read_line(tls), BANNER)
                    tls.sendall(b'{"class": "keepalive", "commandid": 7}\n')
                    self.assertEqual(json.loads(read_line(tls).decode())['replyid'], 7)
            status, err = server.stop()
        self.assertEqual(status, 0, err)

    def test_starttls_offered_taken(self):
        with SimServer('--starttls', *SERVER_CERT) as server:
            self.assertRegex(server.start_line, r'; STARTTLS offered\n$')
            with socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT) as sock:
                self.assertEqual(read_line(sock), BANNER)
                self.assertEqual(json.loads(read_line(sock).decode())['class'], 'starttls')
                sock.sendall(b'{"class": "starttls", "status": true}\n')
                confirmation = json.loads(read_line(sock).decode())
                self.assertEqual((confirmation['class'], confirmation['starttls']), ('starttls', True))
                with trusting().wrap_socket(sock, server_hostname='localhost') as tls:
                    tls.sendall(b'{"class": "keepalive", "commandid": 3}\n')
                    self.assertEqual(json.loads(read_line(tls).decode())['replyid'], 3)
            status, err = server.stop()
        self.assertEqual(status, 0, err)

    def test_starttls_offered_declined(self):
        with SimServer('--starttls', *SERVER_CERT) as server:
            with socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT) as sock:
                self.assertEqual(read_line(sock), BANNER)
                read_line(sock)                                       # the offer
                sock.sendall(b'{"class": "starttls", "status": false}\n{"class": "keepalive", "commandid": 4}\n')
                self.assertIs(json.loads(read_line(sock).decode())['starttls'], False)
                self.assertEqual(json.loads(read_line(sock).decode())['replyid'], 4)     # in clear text
            server.stop()

    def test_starttls_not_offered(self):
        with SimServer() as server:
            talk = server.connect()
            talk.sock.sendall(b'{"class": "starttls", "status": true, "commandid": 1}\n')
            self.assertIn('not offered', json.loads(read_line(talk.sock).decode())['error_string'])
            server.stop()


class ClientTest(unittest.TestCase):
    """ctisim client against ctisim server, both encrypted."""

    def test_tls(self):
        with SimServer('--tls', *SERVER_CERT) as server:
            status, _, err = ctisim('client', '127.0.0.1', '--port', str(server.port), '--tls', *TRUST_SERVER)
            server.stop()
        self.assertEqual(status, 0, err)
        self.assertRegex(err, SESSION_DONE)

    def test_starttls(self):
        with SimServer('--starttls', '-v', *SERVER_CERT) as server:
            status, _, err = ctisim('client', '127.0.0.1', '--port', str(server.port), '--starttls', *TRUST_SERVER)
            _, server_err = server.stop()
        self.assertEqual(status, 0, err)
        self.assertRegex(err, SESSION_DONE)
        self.assertRegex(server_err, r'session #1: STARTTLS TLSv1\.[23]')

    def test_clear_text_client_ignores_the_offer(self):
        with SimServer('--starttls', *SERVER_CERT) as server:
            status, _, err = ctisim('client', '127.0.0.1', '--port', str(server.port))
            server.stop()
        self.assertEqual(status, 0, err)

    def test_certificate_not_trusted(self):
        with SimServer('--tls', *SERVER_CERT) as server:
            status, _, err = ctisim('client', '127.0.0.1', '--port', str(server.port), '--tls',
                                    '--tls-ca', os.path.join(CERTS, 'other.pem'))
            server.stop()
        self.assertEqual(status, 1)
        self.assertRegex(err, r'^ctisim: connection to 127\.0\.0\.1:\d+ failed: TLS: certificate verify failed')
        self.assertEqual(len(err.splitlines()), 1, err)

    def test_starttls_not_offered(self):
        """A server whose next line after the banner is not the offer (a plain server sends nothing: the client
        says the same after waiting 10 s)."""
        with socket.socket() as listener:
            listener.bind(('127.0.0.1', 0))
            listener.listen(1)
            client = subprocess.Popen([sys.executable, tool_path('ctisim'), 'client', '127.0.0.1', '--port',
                                       str(listener.getsockname()[1]), '--starttls', *TRUST_SERVER],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            listener.settimeout(TIMEOUT)
            sock, _ = listener.accept()
            with sock:
                sock.sendall(BANNER + b'{"class": "login_id"}\n')
                _, err = client.communicate(timeout=TIMEOUT)
        self.assertEqual((client.returncode, err), (1, b'ctisim: the server did not offer STARTTLS after its banner\n'))

    def test_usage_errors(self):
        for args in (['server', '--cert', 'c.pem', '--key', 'k.pem'], ['server', '--tls', '--cert', 'c.pem'],
                     ['server', '--tls', '--starttls'], ['client', 'h', '--tls-ca', 'x'],
                     ['client', 'h', '--tls-no-verify'], ['client', 'h', '--tls', '--tls-ca', 'x', '--tls-no-verify'],
                     ['client', 'h', '--tls', '--starttls']):
            status, _, err = ctisim(*args)
            self.assertEqual(status, 2, args)
            self.assertNotIn('Traceback', err)

    def test_unusable_files(self):
        status, _, err = ctisim('server', '--tls', '--cert', 'missing.pem', '--key', 'missing.key', '--port', '0')
        self.assertEqual(status, 1)
        self.assertRegex(err, r'^ctisim: cannot use --cert missing\.pem: .+\n$')
        status, _, err = ctisim('client', 'h', '--tls', '--tls-ca', 'missing.pem')
        self.assertEqual(status, 1)
        self.assertRegex(err, r'^ctisim: cannot use --tls-ca missing\.pem: .+\n$')


class CertificateForTheRunTest(unittest.TestCase):

    @needs_openssl
    def test_made_said_trusted_and_removed(self):
        with SimServer('--tls') as server:
            line = read_line_unbuffered(server.process.stderr.fileno()).decode()
            match = re.match(r'^ctisim: certificate made for this run: (\S+) \(trust it with --tls-ca; '
                             r'removed when ctisim ends\)\n$', line)
            self.assertTrue(match, line)
            cert = match.group(1)
            for host in ('127.0.0.1', 'localhost'):
                status, _, err = ctisim('client', host, '--port', str(server.port), '--tls', '--tls-ca', cert)
                self.assertEqual(status, 0, err)
            status, err = server.stop()
        self.assertEqual(status, 0, err)
        self.assertFalse(os.path.exists(os.path.dirname(cert)))

    def test_without_openssl(self):
        with tempfile.TemporaryDirectory() as empty:
            process = subprocess.run([sys.executable, tool_path('ctisim'), 'server', '--tls', '--port', '0'],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, PATH=empty), timeout=TIMEOUT)
        self.assertEqual(process.returncode, 1)
        self.assertEqual(process.stderr.decode(), 'ctisim: cannot make a certificate for this run: the openssl '
                                                  'command is not installed here; give a certificate with --cert '
                                                  'and --key\n')


class TlsThroughTheToolsTest(unittest.TestCase):

    def test_tls_to_a_clear_text_server_says_so(self):
        """ctispy --tls in front of a plain ctisim server: the session's failure names the clear text."""
        with SimServer() as server:
            spy = subprocess.Popen([sys.executable, tool_path('ctispy'), '127.0.0.1:%d' % server.port, '--tls',
                                    '--tls-no-verify', '--listen-addr', '127.0.0.1', '--listen-port', '0'],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                start = read_line_unbuffered(spy.stderr.fileno()).decode()
                port = re.search(r'listening on port (\d+)', start).group(1)
                status, _, err = ctisim('client', '127.0.0.1', '--port', port)
                self.assertEqual(status, 1)
                _, spy_err = spy.communicate(timeout=TIMEOUT)
            finally:
                if spy.poll() is None:
                    spy.kill()
                    spy.communicate()
            server.stop()
        self.assertEqual(spy.returncode, 1)
        self.assertIn('the server answered in clear text, not TLS: port %d probably does not speak TLS'
                      % server.port, spy_err.decode())


def run(command):
    process = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=TIMEOUT, env=dict(os.environ, NO_COLOR='1'))
    return process.returncode, process.stdout.decode('utf-8'), process.stderr.decode('utf-8')


@needs_openssl
class DemoTlsTest(unittest.TestCase):
    """STARTTLS seen through: the whole session is shown, the login after the STARTTLS notice."""

    def check_seen_through(self, status, out, err):
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        self.assertRegex(err, r'ctisim: demo done: \d+ requests answered')
        before, notice, after = out.partition('-- STARTTLS: the tool decrypts this session with its certificate\n')
        self.assertTrue(notice, out[:2000])
        self.assertIn('"starttls": true', before)
        shown = messages(after)
        self.assertEqual(shown[0][1]['class'], 'login_id')
        self.assertIn('H\u00e9l\u00e8ne Dupr\u00e9', after)
        self.assertEqual(re.findall(r'certificate made for this run: (\S+)', err)[:1] != [], True)
        self.assertFalse(os.path.exists(re.search(r'certificate made for this run: (\S+)', err).group(1)))

    def test_demo_starttls(self):
        self.check_seen_through(*run([sys.executable, tool_path('ctisim'), 'demo', '--starttls', '--pretty-print']))

    @unittest.skipIf(shutil.which('make') is None, 'make is not installed')
    def test_make_demo_tls(self):
        self.check_seen_through(*run(['make', '-s', '--no-print-directory', 'demo-tls', 'PYTHON=' + sys.executable,
                                      'ARGS=--pretty-print']))


if __name__ == '__main__':
    unittest.main()
