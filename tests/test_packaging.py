"""The package as others take it: installed by pip into a fresh virtual environment, and the test
suite collected by the runners people already use (unittest's discovery, pytest)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from tests.harness import ROOT, TIMEOUT, assert_demo_ran
from ctiproxy import __version__

TOOL_NAMES = ('ctispy', 'ctisave', 'ctistat', 'ctisim')
INSTALL_TIMEOUT = 120      # seconds: a bound on waiting for pip, not a speed

# Run by the fresh environment's Python: what an offline install (pip --no-build-isolation, with the
# build tools of the Python it was made from) lacks there.
MISSING_BUILD_TOOLS = r'''
try:
    import setuptools       # first: setuptools must come before anything that imports distutils
except ImportError:
    setuptools = None
import importlib.util, sys
missing = [] if importlib.util.find_spec('pip') else ['pip']
if setuptools is None:
    missing.append('setuptools')
else:
    version = tuple(int(part) for part in setuptools.__version__.split('.')[:2] if part.isdigit())
    if version < (61,):
        missing.append('setuptools 61 or later (this is %s)' % setuptools.__version__)
    elif version < (70, 1) and importlib.util.find_spec('wheel') is None:
        missing.append('wheel (or setuptools 70.1 or later)')
sys.stdout.write(', '.join(missing))
'''


RUNNER_TIMEOUT = 4 * TIMEOUT     # seconds: a bound on importing the whole suite


def run(command, cwd, timeout=TIMEOUT, **env):
    """Run command to its end (bounded); return (exit code, stdout, stderr)."""
    environment = dict(os.environ, PYTHONDONTWRITEBYTECODE='1', **env)
    environment.pop('PYTHONPATH', None)
    done = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=environment, timeout=timeout)
    return done.returncode, done.stdout.decode('utf-8', 'replace'), done.stderr.decode('utf-8', 'replace')


def copy_source(folder):
    """What pip needs to build the package, copied into folder (the build writes beside its source)."""
    for name in ('pyproject.toml', 'README.md', 'LICENSE'):
        shutil.copy(os.path.join(ROOT, name), folder)
    shutil.copytree(os.path.join(ROOT, 'cti-proxy'), os.path.join(folder, 'cti-proxy'),
                    ignore=shutil.ignore_patterns('__pycache__'))


class InstallTest(unittest.TestCase):
    """pip install into a fresh venv, offline; then the installed commands, away from the checkout."""

    def setUp(self):
        if importlib.util.find_spec('venv') is None:
            self.skipTest('no venv module for this Python')
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        self.folder = temporary.name
        self.source = os.path.join(self.folder, 'source')
        os.mkdir(self.source)
        copy_source(self.source)
        self.venv = os.path.join(self.folder, 'venv')
        # --system-site-packages: pip and setuptools from the Python it is made from, so no network.
        status, _, err = run([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip', self.venv],
                             self.folder)
        if status != 0:
            self.skipTest('python3 -m venv failed: %s' % err.strip().splitlines()[-1:])
        self.bin = os.path.join(self.venv, 'bin')
        self.python = os.path.join(self.bin, 'python')
        status, missing, err = run([self.python, '-c', MISSING_BUILD_TOOLS], self.folder)
        self.assertEqual(status, 0, err)
        if missing:
            self.skipTest('to install offline, this Python lacks %s (python3 -m pip install -r requirements-dev.txt)'
                          % missing)

    def test_install_and_run(self):
        status, out, err = run([self.python, '-m', 'pip', '--isolated', 'install', '--no-build-isolation',
                                '--no-index', '--no-deps', '--no-cache-dir', '--disable-pip-version-check',
                                '--quiet', self.source], self.folder, timeout=INSTALL_TIMEOUT)
        self.assertEqual(status, 0, out + err)
        for name in TOOL_NAMES:
            with self.subTest(command=name):
                self.assertEqual(run([os.path.join(self.bin, name), '--version'], self.folder),
                                 (0, '%s (cti-proxy) %s\n' % (name, __version__), ''))
        with self.subTest(module='ctiproxy'):
            self.assertEqual(run([self.python, '-m', 'ctiproxy', 'stat', '--version'], self.folder),
                             (0, 'ctistat (cti-proxy) %s\n' % __version__, ''))
        _, where, _ = run([self.python, '-c', 'import ctiproxy; print(ctiproxy.__file__)'], self.folder)
        self.assertTrue(where.startswith(self.venv), where)
        self.assertTrue(os.path.isfile(os.path.join(os.path.dirname(where.strip()), 'web', 'page.html')),
                        'ctispy --web\'s page is installed')
        assert_demo_ran(self, *run([os.path.join(self.bin, 'ctisim'), 'demo'], self.folder, NO_COLOR='1'))


class RunnersTest(unittest.TestCase):
    """The suite is found, every module imported, by unittest's discovery and by pytest, run from the checkout
    as their users type them (discovery and collection only: running it all again is make test's job)."""

    def test_unittest_discover(self):
        # As `python3 -m unittest discover -s tests` does: the checkout in sys.path[0], tests/ the top level.
        script = ('import sys, unittest; loader = unittest.TestLoader(); suite = loader.discover("tests"); '
                  'sys.stdout.write("%d\\n" % suite.countTestCases()); sys.stdout.write("\\n".join(loader.errors))')
        status, out, err = run([sys.executable, '-c', script], ROOT, timeout=RUNNER_TIMEOUT)
        self.assertEqual(status, 0, err)
        count, _, errors = out.partition('\n')
        self.assertEqual(errors, '')
        self.assertGreater(int(count), 100)

    @unittest.skipIf(importlib.util.find_spec('pytest') is None, 'pytest is not installed for this Python')
    def test_pytest_collects(self):
        # Collecting compiles every test module afresh (no bytecode is written): on a machine busy with the suite's
        # other workers that takes longer than starting a tool, hence the longer bound.
        status, out, err = run([sys.executable, '-m', 'pytest', '--collect-only', '-q', '-p', 'no:cacheprovider'], ROOT,
                               timeout=RUNNER_TIMEOUT)
        self.assertEqual(status, 0, out + err)
        self.assertRegex(out, r'\n(\d{3,}) tests collected')


if __name__ == '__main__':
    unittest.main()
