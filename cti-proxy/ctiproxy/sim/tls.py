"""TLS for ctisim: a certificate made for the run, and a connection that can start TLS between two lines.

Python's ssl module cannot make a certificate, so ctisim runs the openssl command for one
(self-signed, for localhost, 127.0.0.1 and ::1), in a private temporary folder removed when
ctisim ends.  Without openssl, it says so: give --cert and --key instead.
"""

import contextlib
import os
import shutil
import ssl
import subprocess
import tempfile

from ..tls import CertificateFileError, PlainConnection, TlsConnection, load_certificate, tls_reason

OPENSSL_TIMEOUT = 60.0         # seconds for openssl to make a key and a certificate
HANDSHAKE_TIMEOUT = 10.0       # seconds for a TLS handshake

OPENSSL_CONFIG = '''\
[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
CN = localhost
O = ctisim (cti-proxy), made for one run
[ext]
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature,keyEncipherment,keyCertSign
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
'''


class CertificateError(Exception):
    """No certificate to serve TLS with (one line for the user)."""


def make_certificate(folder):
    """Make ctisim.pem and ctisim.key in folder with the openssl command; return their paths."""
    openssl = shutil.which('openssl')
    if openssl is None:
        raise CertificateError('cannot make a certificate for this run: the openssl command is not installed '
                               'here; give a certificate with --cert and --key')
    config, cert, key = (os.path.join(folder, name) for name in ('openssl.cnf', 'ctisim.pem', 'ctisim.key'))
    with open(config, 'w') as stream:
        stream.write(OPENSSL_CONFIG)
    command = [openssl, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '30', '-config', config,
               '-keyout', key, '-out', cert]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=OPENSSL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CertificateError('cannot make a certificate for this run with %s: %s' % (openssl, error))
    if done.returncode != 0:
        reason = done.stderr.decode('utf-8', 'replace').strip().splitlines()[-1:] or ['exit %d' % done.returncode]
        raise CertificateError('openssl could not make a certificate for this run: %s' % reason[0])
    return cert, key


@contextlib.contextmanager
def certificate_for_run(cert=None, key=None):
    """Yield (certificate, key, made): the ones given, or ones made for the run and removed at the end."""
    if cert is not None:
        yield cert, key, False
        return
    with tempfile.TemporaryDirectory(prefix='ctisim-') as folder:
        yield make_certificate(folder) + (True,)


def server_context(cert, key):
    """A TLS server context with this certificate and key; CertificateError if they cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        load_certificate(context, cert, key)
    except CertificateFileError as error:
        raise CertificateError(str(error))
    return context


def client_context(ca=None, verify=True):
    """A TLS client context trusting the system's CAs, or ca; checking nothing when verify is False."""
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ValueError) as error:
        raise CertificateError('cannot use --tls-ca %s: %s' % (ca, tls_reason(error)))
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class LineConnection:
    """A socket read line by line and written whole, in clear text until start_tls() (STARTTLS), or TLS.

    It stands for both rfile and wfile of a socketserver.StreamRequestHandler (readline(), iteration,
    write(), flush(), close()); closing the socket is left to its owner.
    """

    closed = False

    def __init__(self, sock):
        self.sock = sock
        self.connection = PlainConnection(sock)
        self.buffer = bytearray()      # received, not yet read as a line

    @property
    def encrypted(self):
        return self.connection.encrypted

    def start_tls(self, context, server_side, server_hostname=None):
        """Complete a TLS handshake, taking what was received after the last line read as its start."""
        connection = TlsConnection(self.sock, context, server_side=server_side, server_hostname=server_hostname,
                                   received=bytes(self.buffer))
        del self.buffer[:]
        previous = self.sock.gettimeout()
        self.sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            connection.handshake()
        finally:
            self.sock.settimeout(previous)
        self.connection = connection

    def describe(self):
        return self.connection.describe() if self.encrypted else 'clear text'

    def readline(self):
        """The next line, with its newline; what is left at the end of the stream; b'' after it."""
        searched = 0
        while True:
            end = self.buffer.find(b'\n', searched)
            if end >= 0:
                line = bytes(self.buffer[:end + 1])
                del self.buffer[:end + 1]
                return line
            searched = len(self.buffer)
            data = self.connection.recv()
            if not data:
                line = bytes(self.buffer)
                del self.buffer[:]
                return line
            self.buffer += data

    def __iter__(self):
        return iter(self.readline, b'')

    def write(self, data):
        self.connection.sendall(data)

    def shutdown_write(self):
        self.connection.shutdown_write()

    def flush(self):
        pass

    def close(self):
        pass
