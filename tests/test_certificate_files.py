"""--cert and --key files that cannot be used: one line naming the file at fault and what is wrong, exit 1 (it
was OpenSSL's '[SSL] PEM lib (_ssl.c:3905)', naming neither)."""

import concurrent.futures
import os
import tempfile
import unittest

from tests.harness import run_tool
from tests.test_simulator import ctisim
from tests.test_tls import CERTS, key, pem

TOOLS = ('ctispy', 'ctisave', 'ctistat', 'ctisim')


def run_with_certificate(name, cert, key_file, folder):
    """Run a tool that should refuse cert and key before it listens: (exit code, stdout, stderr)."""
    tls = ['--cert', cert, '--key', key_file]
    if name == 'ctisim':
        return ctisim('server', '--tls', '--port', '0', *tls)
    files = [os.path.join(folder, 'client'), os.path.join(folder, 'server')] if name == 'ctisave' else []
    status, out, err = run_tool(name, '127.0.0.1', *files, '--listen-addr', '127.0.0.1', '--listen-port', '0', *tls)
    return status, out.decode('utf-8', 'replace'), err


class CertificateFileTest(unittest.TestCase):

    def test_the_file_at_fault_and_what_is_wrong(self):
        with tempfile.TemporaryDirectory() as folder:
            junk = os.path.join(folder, 'junk.txt')
            with open(junk, 'w') as stream:
                stream.write('not PEM at all\n')
            missing = os.path.join(folder, 'missing.pem')
            cases = [
                ((junk, key('tool')), 'cannot use --cert %s: no PEM certificate in it' % junk),
                ((key('tool'), key('tool')), 'cannot use --cert %s: no PEM certificate in it' % key('tool')),
                ((missing, key('tool')), 'cannot use --cert %s: No such file or directory' % missing),
                ((pem('tool'), junk), 'cannot use --key %s: no PEM private key in it' % junk),
                ((pem('tool'), pem('tool')), 'cannot use --key %s: no PEM private key in it' % pem('tool')),
                ((pem('tool'), missing), 'cannot use --key %s: No such file or directory' % missing),
                ((pem('tool'), key('other')), 'cannot use --key %s: it is not the key of --cert %s'
                 % (key('other'), pem('tool'))),
                ((pem('tool'), os.path.join(CERTS, 'encrypted.key')), 'cannot use --key %s: it is encrypted; give a '
                 'key without a passphrase' % os.path.join(CERTS, 'encrypted.key')),
            ]
            runs = [(name, files, line) for files, line in cases for name in TOOLS]
            with concurrent.futures.ThreadPoolExecutor(4) as pool:     # each run is mostly Python starting up
                results = list(pool.map(lambda run: run_with_certificate(run[0], *run[1], folder), runs))
            self.assertEqual(sorted(os.listdir(folder)), ['junk.txt'])
        for (name, files, line), (status, out, err) in zip(runs, results):
            with self.subTest(tool=name, files=files):
                self.assertEqual((status, out, err), (1, '', '%s: %s\n' % (name, line)))


if __name__ == '__main__':
    unittest.main()
