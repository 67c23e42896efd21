"""Where every tool starts: the scripts beside the ctiproxy folder, `python3 -m ctiproxy TOOL`
and the commands that pip installs all come here.

This module (like ctiproxy/__init__.py, __main__.py and the scripts) must parse on Python 2.7
and 3.5, so that an old Python gets one plain line instead of a traceback: no f-strings, no
annotations, nothing newer than Python 2.7 knows.  The tools themselves are imported only
after the check.
"""

import os
import signal
import sys

OLDEST_PYTHON = (3, 7)
TOOLS = ('ctispy', 'ctisave', 'ctistat', 'ctisim')
STOPPED_STATUS = {'ctisim': 130}       # the exit status on Ctrl-C (the tools' own; 0 for the others)
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOP_SIGNALS = tuple(getattr(signal, name) for name in ('SIGINT', 'SIGTERM', 'SIGHUP') if hasattr(signal, name))
MODULE_USAGE = ('usage: python3 -m ctiproxy {spy,save,stat,sim} [ARGUMENTS]\n'
                'runs ctispy, ctisave, ctistat or ctisim with ARGUMENTS (--help for each)\n')


def run(tool, argv=None):
    """Run tool (ctispy, ctisave, ctistat or ctisim) with argv (default: the command line's
    arguments) and exit with its status."""
    hold_stop_signals()
    check_python(tool)
    try:
        if tool == 'ctisim':
            from .sim.command import main
            status = main(argv)
        else:
            from .cli import main
            status = main(tool, argv)
    except KeyboardInterrupt:
        # Ctrl-C held while the tool was being imported, delivered when it set its handlers up: as quiet
        # as Ctrl-C later, with the same exit status.
        status = STOPPED_STATUS.get(tool, 0)
    sys.exit(status)


def hold_stop_signals():
    """Hold the stop signals (SIGINT, SIGTERM, SIGHUP) until the tool's own handlers take them: one that comes
    while the tool starts waits, pending, instead of raising KeyboardInterrupt in the middle of an import,
    where Python may drop it (the tool would then start and serve on).  The scripts do the same in their first
    lines, before they import anything of ours; release_stop_signals() ends the hold."""
    if hasattr(signal, 'pthread_sigmask'):
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def release_stop_signals():
    """Called once the tool's handlers are set: a stop signal held since the start is delivered to them now
    (a SIGHUP ignored under nohup stays ignored)."""
    if hasattr(signal, 'pthread_sigmask'):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def check_python(name):
    """Exit with one line when this Python is too old for the tools."""
    if sys.version_info < OLDEST_PYTHON:
        sys.exit('%s: needs Python %d.%d or later (this is %d.%d)'
                 % ((name,) + OLDEST_PYTHON + tuple(sys.version_info[:2])))


def run_module(argv):
    """`python3 -m ctiproxy TOOL [ARGUMENTS]`, TOOL being spy, save, stat or sim."""
    tool = 'cti' + argv[0] if argv else None
    check_python(tool if tool in TOOLS else 'ctiproxy')
    if argv and argv[0] in ('-h', '--help'):
        sys.stdout.write(MODULE_USAGE)
        sys.exit(0)
    if tool not in TOOLS:
        sys.stderr.write(MODULE_USAGE)
        sys.stderr.write('ctiproxy: error: %s\n' % ('unknown tool %r' % argv[0] if argv else 'which tool?'))
        sys.exit(2)
    run(tool, argv[1:])


def tool_command(tool):
    """The command line that starts tool with this Python and this very ctiproxy package, wherever
    it lies (a checkout, a copied cti-proxy folder, an installed environment)."""
    script = 'import sys; sys.path.insert(0, %r); from ctiproxy.launch import run; run(%r)' % (PACKAGE_PARENT, tool)
    return [sys.executable, '-c', script]


# The commands that pip installs (pyproject.toml's [project.scripts]).

def ctispy():
    run('ctispy')


def ctisave():
    run('ctisave')


def ctistat():
    run('ctistat')


def ctisim():
    run('ctisim')
