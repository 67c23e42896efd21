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


# Run the script (or -m MODULE) with an import hook that, at the import of one module, sends the process a
# signal: a stop signal at a known moment of the start-up.  It does so inside a weakref callback, where Python
# drops an exception (printing "Exception ignored"), as it does in importlib's own callbacks: a KeyboardInterrupt
# raised in the middle of an import may be lost there.  (pthread_kill runs the Python handler before returning.)
SIGNALLED_IMPORT = '''
import os, runpy, signal, sys, threading, weakref
module, signum = sys.argv[1], int(sys.argv[2])
class SignalAt:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            lock = SignalAt()
            callback = weakref.ref(lock, lambda ref: signal.pthread_kill(threading.get_ident(), signum))
            del lock                    # runs the callback
        return None
sys.meta_path.insert(0, SignalAt())
if sys.argv[3] == '-m':
    sys.argv = sys.argv[4:]
    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
else:
    sys.argv = sys.argv[3:]
    runpy.run_path(sys.argv[0], run_name='__main__')
'''

# What each tool needs to listen (and go on until stopped); ctispy and ctistat relay to a port that nobody need open.
LISTENING_ARGS = {
    'ctispy': ['127.0.0.1:9', '--listen-port', '0', '--listen-addr', '127.0.0.1'],
    'ctistat': ['127.0.0.1:9', '--listen-port', '0', '--listen-addr', '127.0.0.1', '--loop'],
    'ctisim': ['server', '--port', '0', '--listen-addr', '127.0.0.1'],
}


class InterruptedStartTest(unittest.TestCase):
    """A stop signal while the tool is being imported waits until the tool's handlers are set, and then stops
    it, before it listens: no traceback, the exit status of a later Ctrl-C."""

    def start_signalled(self, command, module, signum, ignore_sighup=False):
        """Start command under SIGNALLED_IMPORT, sent signum at the import of module."""
        process = subprocess.Popen(
            [sys.executable, '-c', SIGNALLED_IMPORT, module, str(int(signum))] + command, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tempfile.gettempdir(),
            env=dict(os.environ, PYTHONPATH=PACKAGE_PARENT),
            preexec_fn=(lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if ignore_sighup else None)
        self.addCleanup(self.ended, process)
        return process

    def ended(self, process):
        if process.poll() is None:
            process.kill()
        process.communicate()

    def interrupted(self, command, module, signum=signal.SIGINT):
        """Run command, sent signum while it imports module; return (exit code, stdout, stderr)."""
        process = self.start_signalled(command, module, signum)
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            self.fail('still running after the signal: %s' % err.decode('utf-8', 'replace'))
        return process.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')

    def test_tools(self):
        for name in ('ctispy', 'ctisave', 'ctistat'):
            with self.subTest(tool=name):
                self.assertEqual(self.interrupted([tool_path(name), '--version'], 'ctiproxy.cli'), (0, '', ''))

    def test_simulator(self):
        self.assertEqual(self.interrupted([tool_path('ctisim'), '--version'], 'ctiproxy.sim.command'), (130, '', ''))

    def test_stopped_before_listening(self):
        """Arguments that would make it listen: it stops instead, quietly (no "listening" line, no traceback)."""
        for name, status in (('ctispy', 0), ('ctistat', 0), ('ctisim', 130)):
            module = 'ctiproxy.sim.command' if name == 'ctisim' else 'ctiproxy.cli'
            with self.subTest(tool=name):
                self.assertEqual(self.interrupted([tool_path(name)] + LISTENING_ARGS[name], module), (status, '', ''))

    def test_sigterm(self):
        self.assertEqual(self.interrupted([tool_path('ctispy')] + LISTENING_ARGS['ctispy'], 'ctiproxy.cli',
                                          signal.SIGTERM), (0, '', ''))

    def test_module_and_installed_commands(self):
        """python3 -m ctiproxy, and the commands that pip installs (launch.ctispy() and the others): both hold the
        stop signals from launch.run."""
        self.assertEqual(self.interrupted(['-m', 'ctiproxy', 'spy'] + LISTENING_ARGS['ctispy'], 'ctiproxy.cli'),
                         (0, '', ''))
        self.assertEqual(self.interrupted(['-m', 'ctiproxy', 'sim'] + LISTENING_ARGS['ctisim'], 'ctiproxy.sim.command'),
                         (130, '', ''))

    def test_sighup_ignored_under_nohup(self):
        """Started with SIGHUP ignored (nohup), a SIGHUP during the start-up stays ignored: the tool listens."""
        process = self.start_signalled([tool_path('ctispy')] + LISTENING_ARGS['ctispy'], 'ctiproxy.cli',
                                       signal.SIGHUP, ignore_sighup=True)
        line = process.stderr.readline().decode('utf-8', 'replace')
        self.assertTrue(line.startswith('ctispy: listening on '), line)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=TIMEOUT)
        self.assertEqual((process.returncode, out, err), (0, b'', b''))


if __name__ == '__main__':
    unittest.main()
