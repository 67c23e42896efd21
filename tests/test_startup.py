"""Where the tools start: the scripts on a Python too old for them, a script copied without its
ctiproxy folder, a copied folder, `python3 -m ctiproxy TOOL`, and Ctrl-C while the tool is still
being imported.  Real processes, each run to its end."""

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

from tests.harness import ROOT, TIMEOUT, assert_demo_ran, sigint_not_ignored, sigint_restored, tool_path
from ctiproxy import __version__

setUpModule, tearDownModule = sigint_not_ignored, sigint_restored

TOOL_NAMES = ('ctispy', 'ctisave', 'ctistat', 'ctisim')
PACKAGE_PARENT = os.path.join(ROOT, 'cti-proxy')


def run(command, cwd=None, **env):
    """Run command to its end (bounded), with env added to ours; return (exit code, stdout, stderr)."""
    done = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE='1', **env), timeout=TIMEOUT)
    return done.returncode, done.stdout.decode('utf-8', 'replace'), done.stderr.decode('utf-8', 'replace')


def old_pythons():
    """{version: interpreter} for the Pythons older than 3.7 found here (pyenv's, or on PATH)."""
    candidates = [shutil.which(name) for name in ('python2', 'python2.7', 'python3.5', 'python3.6')]
    for version in ('2.7', '3.5', '3.6'):
        candidates += glob.glob(os.path.expanduser('~/.pyenv/versions/%s.*/bin/python' % version))
    found = {}
    for python in filter(None, candidates):
        try:
            status, out, _ = run([python, '-c', 'import sys; sys.stdout.write("%d.%d" % sys.version_info[:2])'])
        except OSError:
            continue
        if status == 0 and out in ('2.7', '3.5', '3.6'):
            found.setdefault(out, python)
    return found


class OldPythonTest(unittest.TestCase):
    """Python 2.7, 3.5 and 3.6 get one line and exit 1, whatever is asked (the scripts, ctiproxy/__init__.py
    and launch.py parse there)."""

    def test_one_line_on_an_old_python(self):
        pythons = old_pythons()
        if not pythons:
            self.skipTest('no Python 2.7, 3.5 or 3.6 here (pyenv or PATH)')
        for version, python in sorted(pythons.items()):
            for name in TOOL_NAMES:
                for args in (['--version'], ['--help'], []):
                    with self.subTest(python=version, tool=name, args=args):
                        status, out, err = run([python, tool_path(name)] + args)
                        self.assertEqual((status, out, err),
                                         (1, '', '%s: needs Python 3.7 or later (this is %s)\n' % (name, version)))
            with self.subTest(python=version, module='ctiproxy'):
                status, out, err = run([python, '-m', 'ctiproxy', 'spy', '--version'], PYTHONPATH=PACKAGE_PARENT)
                self.assertEqual((status, out, err),
                                 (1, '', 'ctispy: needs Python 3.7 or later (this is %s)\n' % version))


class CopiedTest(unittest.TestCase):

    def test_script_copied_alone(self):
        with tempfile.TemporaryDirectory() as folder:
            for name in TOOL_NAMES:
                with self.subTest(tool=name):
                    copy = shutil.copy(tool_path(name), folder)
                    # -S: no site-packages, where an installed ctiproxy would (rightly) be found.
                    status, out, err = run([sys.executable, '-S', copy, '--version'])
                    self.assertEqual((status, out), (1, ''))
                    self.assertEqual(err, '%s: the ctiproxy folder is not beside it in %s: copy the whole cti-proxy '
                                          'folder\n' % (name, os.path.realpath(folder)))

    def test_folder_copied_runs_the_demo(self):
        """The cti-proxy folder copied elsewhere, started through a link from a third place: ctisim demo
        starts the copy's ctispy."""
        with tempfile.TemporaryDirectory() as folder:
            copy = os.path.join(folder, 'copy', 'cti-proxy')
            shutil.copytree(PACKAGE_PARENT, copy, ignore=shutil.ignore_patterns('__pycache__'))
            os.mkdir(os.path.join(folder, 'bin'))
            link = os.path.join(folder, 'bin', 'ctisim')
            os.symlink(os.path.join(copy, 'ctisim'), link)
            assert_demo_ran(self, *run([sys.executable, link, 'demo'], cwd=folder, NO_COLOR='1'))


class ModuleTest(unittest.TestCase):
    """python3 -m ctiproxy TOOL [ARGUMENTS]."""

    def run_module(self, *args):
        return run([sys.executable, '-m', 'ctiproxy'] + list(args), cwd=tempfile.gettempdir(),
                   PYTHONPATH=PACKAGE_PARENT)

    def test_each_tool(self):
        for tool in ('spy', 'save', 'stat', 'sim'):
            with self.subTest(tool=tool):
                self.assertEqual(self.run_module(tool, '--version'),
                                 (0, 'cti%s (cti-proxy) %s\n' % (tool, __version__), ''))

    def test_arguments_reach_the_tool(self):
        status, out, err = self.run_module('stat', '--listen-port', '70000', 'host')
        self.assertEqual(status, 2)
        self.assertIn('usage: ctistat', err)
        self.assertIn('--listen-port', err)

    def test_usage(self):
        for args, status, stream in (([], 2, 2), (['spies'], 2, 2), (['--help'], 0, 1)):
            with self.subTest(args=args):
                result = self.run_module(*args)
                self.assertEqual(result[0], status)
                self.assertIn('usage: python3 -m ctiproxy {spy,save,stat,sim} [ARGUMENTS]', result[stream])
                self.assertEqual(result[3 - stream], '')


# Run the script with an import hook that stops at the import of one module until a signal comes: a
# Ctrl-C at a known moment of the start-up (the hook stands in for a slow disk).
PAUSED_IMPORT = '''
import os, runpy, sys
module, ready, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
class PauseAt:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            os.write(ready, b'.')
            os.read(hold, 1)
        return None
sys.meta_path.insert(0, PauseAt())
sys.argv = sys.argv[4:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


class InterruptedImportTest(unittest.TestCase):
    """Ctrl-C while the tool is being imported: no traceback, the exit status of a later Ctrl-C."""

    def interrupt_import(self, name, module):
        """Run tool name --version, interrupted while it imports module; return (exit code, stdout, stderr)."""
        ready_read, ready_write = os.pipe()
        hold_read, hold_write = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, '-c', PAUSED_IMPORT, module, str(ready_write), str(hold_read), tool_path(name),
                 '--version'], pass_fds=(ready_write, hold_read), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        finally:
            os.close(ready_write)
            os.close(hold_read)
        try:
            if os.read(ready_read, 1) == b'.':
                process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
            os.close(ready_read)
            os.close(hold_write)
        return process.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')

    def test_tools(self):
        for name in ('ctispy', 'ctisave', 'ctistat'):
            with self.subTest(tool=name):
                self.assertEqual(self.interrupt_import(name, 'ctiproxy.cli'), (0, '', ''))

    def test_simulator(self):
        self.assertEqual(self.interrupt_import('ctisim', 'ctiproxy.simulator'), (130, '', ''))


if __name__ == '__main__':
    unittest.main()
