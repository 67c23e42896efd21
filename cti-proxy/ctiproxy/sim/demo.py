"""`ctisim demo`: the simulated server, ctispy in front of it, and the simulated client through ctispy."""

import queue
import re
import shutil
import subprocess
import sys
import threading

from ..launch import tool_command
from ..relay import ListenAddress, describe_error
from .client import ProtocolError, SimulatedClient
from .server import SimulatorServer
from .protocol import TIMEOUT
from .tls import certificate_for_run, client_context, server_context


# What ctispy shows by default: one line per message, slow answers marked, and the lists' contents left out, so
# that the session (its paired answers, its error answer and its slow answer) fits one screen.  Any ctispy display
# option given to `ctisim demo` replaces these (`ctisim demo --pretty-print`: the whole session).
SHORT_DISPLAY = ['--oneline', '--slow', '100',
                 '--exclude', 'function=updateconfig', '--exclude', 'function=updatestatus']
MARK = '}  # '          # where --oneline's note on an answer starts (reply to ..., SLOW, ERROR: ...)


def start_spy(server_port, display, options=(), piped=False):
    """Start ctispy between the simulated client and server (its stdout a pipe if piped); return (process, queue of
    its port)."""
    command = tool_command('ctispy') + ['127.0.0.1', '--port', str(server_port), '--listen-port', '0',
                                        '--listen-addr', '127.0.0.1'] + list(display) + list(options)
    spy = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if piped else None,
                           stderr=subprocess.PIPE)
    ports = queue.Queue()
    threading.Thread(target=relay_spy_stderr, args=(spy.stderr, ports), name='ctispy-stderr', daemon=True).start()
    return spy, ports


def cut_line(line, width):
    """line (without its newline) cut to width characters, the message cut in its middle with '…' so that an
    answer's note at its end (reply to ..., SLOW, ERROR: ...) stays in sight."""
    if len(line) <= width:
        return line
    end = line.rfind(MARK)
    note = line[end + 1:] if end >= 0 else ''
    room = width - len(note) - 1
    if room < width // 3:
        return line[:width - 1] + '\u2026'
    return line[:room] + '\u2026' + note


def start_cutting(spy, width):
    """Copy ctispy's stdout to ours, each line cut to width (the demo on a terminal); return the copying thread."""
    def copy():
        for line in spy.stdout:
            text = line.decode('utf-8', 'replace').rstrip('\n')
            sys.stdout.write(cut_line(text, width) + '\n')
            sys.stdout.flush()
    thread = threading.Thread(target=copy, name='ctispy-stdout', daemon=True)
    thread.start()
    return thread


def relay_spy_stderr(stream, ports):
    """Copy ctispy's stderr to ours; put the port of its start line, then None at its end, on ports."""
    for line in stream:
        match = re.search(rb'listening on port (\d+)', line)
        if match:
            ports.put(int(match.group(1)))
        sys.stderr.buffer.write(line)
        sys.stderr.flush()
    ports.put(None)


def run_demo(args, log):
    """The simulated server, ctispy in front of it, and the simulated client through ctispy; with --starttls,
    the server offers STARTTLS and ctispy sees through it, with one certificate made for the run for both."""
    if not args.starttls:
        return demo_session(args, log)
    with certificate_for_run() as (cert, key, _):
        log.error('certificate made for this run: %s (the server\'s and ctispy\'s)' % cert)
        return demo_session(args, log, DemoTls(cert, key))


class DemoTls:
    """The demo's STARTTLS: the server offers it, ctispy sees through it and the client takes it, all with
    one certificate (for localhost and 127.0.0.1) that each trusts."""

    def __init__(self, cert, key):
        self.server_context = server_context(cert, key)
        self.spy_options = ['--cert', cert, '--key', key, '--tls-ca', cert]
        self.client_context = client_context(cert)


def demo_session(args, log, tls=None):
    """One session of the demo: in clear text, or with STARTTLS seen through (tls: a DemoTls)."""
    server = SimulatorServer(ListenAddress('127.0.0.1', 0), users=args.users, log=log,
                             tls_context=tls and tls.server_context, starttls=tls is not None)
    threading.Thread(target=server.serve_forever, name='simulator', daemon=True).start()
    spy = cutting = None
    display = args.spy_options or SHORT_DISPLAY
    width = shutil.get_terminal_size().columns if not args.spy_options and sys.stdout.isatty() else None
    try:
        log.error('simulated CTI server on 127.0.0.1:%d; starting ctispy %s in front of it'
                  % (server.port, ' '.join(args.spy_options) or '(one line per message, slow answers marked)'))
        spy, ports = start_spy(server.port, display, tls.spy_options if tls else (), piped=width is not None)
        if width is not None:
            cutting = start_cutting(spy, width)
        try:
            spy_port = ports.get(timeout=TIMEOUT)
        except queue.Empty:
            log.error('ctispy did not start')
            return 1
        if spy_port is None:        # ctispy ended (its stderr did) before listening
            if spy.wait(timeout=TIMEOUT) == 2:
                return 2            # a usage error in the options given to ctispy: ctispy said it
            log.error('ctispy did not start')
            return 1
        try:
            requests, unsolicited = SimulatedClient('127.0.0.1', spy_port, tls_context=tls and tls.client_context,
                                                    starttls=tls is not None).run()
        except (ProtocolError, OSError) as error:
            reason = describe_error(error) if isinstance(error, OSError) else str(error)
            log.error('the session through ctispy failed: %s' % reason)
            return 1
        try:
            status = spy.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error('ctispy did not exit at the end of the session')
            return 1
        if status != 0:
            log.error('ctispy exited with status %d' % status)
            return 1
        if cutting is not None:
            cutting.join(TIMEOUT)
        log.error('demo done: %d requests answered and %d messages from the server unasked'
                  % (requests, unsolicited))
        if not args.spy_options:
            log.error('the lists\' contents were left out: `make demo ARGS=--pretty-print` shows every message')
        return 0
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        server.shutdown()
        server.server_close()
