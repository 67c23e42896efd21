"""`ctisim demo`: the simulated server, ctispy in front of it, and the simulated client through ctispy."""

import queue
import re
import subprocess
import sys
import threading

from ..launch import tool_command
from ..relay import ListenAddress, describe_error
from .client import ProtocolError, SimulatedClient
from .server import SimulatorServer
from .protocol import TIMEOUT
from .tls import certificate_for_run, client_context, server_context


def start_spy(server_port, options=()):
    """Start ctispy between the simulated client and server; return (process, queue of its port)."""
    command = tool_command('ctispy') + ['127.0.0.1', '--port', str(server_port), '--listen-port', '0',
                                        '--listen-addr', '127.0.0.1', '--pretty-print'] + list(options)
    spy = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ports = queue.Queue()
    threading.Thread(target=relay_spy_stderr, args=(spy.stderr, ports), name='ctispy-stderr', daemon=True).start()
    return spy, ports


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
    spy = None
    try:
        log.error('simulated CTI server on 127.0.0.1:%d; starting ctispy in front of it' % server.port)
        spy, ports = start_spy(server.port, tls.spy_options if tls else ())
        try:
            spy_port = ports.get(timeout=TIMEOUT)
        except queue.Empty:
            spy_port = None
        if spy_port is None:
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
        log.error('demo done: %d requests answered and %d messages from the server unasked, all shown above '
                  'by ctispy' % (requests, unsolicited))
        return 0
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        server.shutdown()
        server.server_close()
