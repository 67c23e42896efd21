#!/usr/bin/env python3
"""Benchmark: ctispy, ctisave and ctistat against a direct connection (and socat, if on PATH), on loopback.

A measurement, not a test: it prints figures next to their goals and exits 0 unless something
breaks (a tool that fails, hangs or leaves its output incomplete: exit 1 after all the tables).

    python3 tests/bench.py                 the full run (under 3 minutes on 2 cores)
    python3 tests/bench.py --quick         a smaller, faster run
    python3 tests/bench.py --tools ctispy  only some tools (direct is always measured)

Each tool runs as its real script (`--listen-port 0 --listen-addr 127.0.0.1`), between a scripted
client and a scripted server that are threads of this process; ctispy and ctistat write stdout to a
file, ctisave its two files, all in a temporary folder.

1. Burst: the server sends many typical server messages at once; time from the first byte sent to
   the last byte received by the client.
2. Round trip: a small request and its small answer, one after the other; median per round trip.
3. Handling: the same burst; time from the first byte sent to the tool's exit after the client and
   the server closed (nothing subtracted), against json.loads alone on the same lines, in this process.
4. Big messages: one message of 2 MB and one of 16 MB, sent in 64 KB pieces; time from the first
   byte sent to the tool's exit, and the tool's peak memory (VmHWM, sampled while it runs).
5. Captures: a 64 MB pcap of typical server messages in 1448-byte segments (16 MB with --quick);
   ctistat --read and ctispy --read, start to exit, next to tshark's payload extraction and tcpflow
   when they are on PATH; ctistat's handling rate against its live handling rate (3.).  Live timing
   starts at the first byte, once the tool has started, so a capture's handling time is its start to
   exit less the same tool's start to exit on a one-message capture (the interpreter's start and the
   imports, ~0.2 s).
6. Sustained load, more than the analysis buffer holds: 256 MB through one session, and 128 sessions
   of 1 MB at once; throughput on the wire and handled, next to socat and direct.
7. Web view: a recording of 200,000 messages (20,000 with --quick) read by ctispy --read --web, its page in
   headless Chromium: first rows, a jump to the end, frames while jumping about, filters (tests/bench_web.py;
   skipped without chromium).

socat is measured twice: with its default 8 KiB buffer, and with -b 262144 (socat-b256k).  The burst
also goes through two bare Python relays of a few lines (two threads, recv of up to 1 MiB, sendall), as
references: python-relay forwards only; python-keep also keeps every chunk until the end, as any relay
must hold what its analysis has not read yet (in a fresh process, that memory is new: its pages are made
as the burst comes).

    python3 tests/bench.py --sections burst big    only some measurements
    python3 tests/bench.py --compare /tmp/old      also the tools of another checkout, as ctispy-before...
"""

import argparse
import datetime
import glob
import itertools
import json
import os
import platform
import random
import re
import select
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import bench_web  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS_DIR = os.path.join(ROOT, 'cti-proxy')
TOOL_NAMES = ('ctispy', 'ctisave', 'ctistat')
TIMEOUT = 60.0          # seconds: a bound on every wait, so that a hang is reported instead of blocking
MB = 1024 * 1024
PIECE = 64 * 1024       # the big messages are sent in pieces of this size
SOCAT_BIG = 'socat-b256k'
SOCAT_BIG_BUFFER = 262144
PYTHON_RELAYS = ('python-relay', 'python-keep')     # the burst's reference relays (PYTHON_RELAY)
BEFORE_SUFFIX = '-before'   # a tool of --compare's checkout: 'ctispy-before'
COMPARE_DIR = None          # --compare's cti-proxy folder

GOAL_BURST = 0.5        # tool MB/s as a share of direct MB/s, at least (and at least socat -b 262144's share)
GOAL_ROUND_TRIP_US = 100.0   # added median microseconds per round trip, at most
GOAL_HANDLING = {'ctistat': 1.0, 'ctispy': 0.5, 'ctisave': 0.4}   # share of json.loads' rate, at least
GOAL_BURST_PEAK_MB = 60.0    # peak memory during the burst, at most
GOAL_LINEAR = 12.0      # time(16 MB) / time(2 MB), at most
GOAL_PEAK_VS_LOADS = 1.3     # peak memory for the 16 MB message, at most this times a bare json.loads process's
SUSTAINED_SIZE = 256 * MB    # through one session (the burst repeated)
MANY_SESSIONS = 128          # sessions at once, each of MANY_SIZE
MANY_SIZE = MB
SECTIONS = ('burst', 'round-trip', 'big', 'sustained', 'capture', 'web')
GOAL_CAPTURE_VS_LIVE = 0.8   # ctistat --read messages/s as a share of its live handling rate, at least
SEGMENT = 1448          # TCP payload per captured packet (an Ethernet MTU's)

now = time.perf_counter   # CLOCK_MONOTONIC on Linux: one clock for every thread of this process

problems = []             # what broke; the exit status is 1 if any


# -- traffic --

AVAILSTATES = ['available', 'away', 'berightback', 'donotdisturb', 'outtolunch', 'disconnected']


def server_message(rng, when):
    """A typical getlist/updatestatus message from the server, about 220 bytes."""
    listname = rng.choice(['users', 'users', 'phones', 'agents', 'queues'])
    if listname == 'users':
        status = {'availstate': rng.choice(AVAILSTATES), 'connection': rng.choice(['yes', 'no']),
                  'userlogin': 'user%d' % rng.randint(1, 3000)}
    elif listname == 'phones':
        status = {'hintstatus': str(rng.choice([0, 1, 2, 4, 8, 16])), 'groups': [],
                  'channels': ['SIP/abc%04x-%08x' % (rng.randint(0, 65535), rng.randint(0, 1 << 30))],
                  'queues': []}
    elif listname == 'agents':
        status = {'availability': rng.choice(['available', 'unavailable', 'logged_out']),
                  'availability_since': round(when - rng.uniform(0, 3600), 2), 'on_call': False,
                  'channel': None, 'queues': [str(rng.randint(1, 40))]}
    else:
        status = {'agentmembers': [str(rng.randint(1, 300)) for _ in range(rng.randint(1, 6))],
                  'phonemembers': [str(rng.randint(1, 300)) for _ in range(rng.randint(0, 3))]}
    return {'class': 'getlist', 'function': 'updatestatus', 'listname': listname, 'tipbxid': 'xivo',
            'tid': str(rng.randint(1, 3000)), 'status': status, 'timenow': round(when, 2)}


def make_burst(size):
    """About size bytes of server messages, one per line: (the bytes, the lines without b'\\n')."""
    rng = random.Random(5003)
    when = 1732712345.0
    lines, total = [], 0
    while total < size:
        when += rng.uniform(0.0, 0.002)
        line = json.dumps(server_message(rng, when)).encode('utf-8')
        lines.append(line)
        total += len(line) + 1
    return b'\n'.join(lines) + b'\n', lines


def round_trip_traffic(count):
    """count (request, answer) pairs: a small getlist request and the server's small answer."""
    pairs = []
    for number in range(100001, 100001 + count):
        request = {'class': 'getlist', 'commandid': number, 'function': 'listid', 'listname': 'users'}
        answer = {'class': 'getlist', 'function': 'listid', 'replyid': number, 'list': ['17'],
                  'timenow': round(1732712345.0 + number / 1000.0, 2)}
        pairs.append((json.dumps(request).encode() + b'\n', json.dumps(answer).encode() + b'\n'))
    return pairs


def big_message(size):
    """One directory answer of about size bytes: a JSON object with a big list of strings, one line."""
    def build(count):
        entries = ['Firstname%d Lastname%d;%d;+33 6 %08d;user%d@example.com;Example SA' % (i, i, 1000 + i, i, i)
                   for i in range(count)]
        message = {'class': 'directory', 'replyid': 12, 'status': 'ok', 'timenow': 1732712345.5,
                   'headers': ['Nom', 'Num\u00e9ro', 'Mobile', 'Courriel', 'Soci\u00e9t\u00e9'],
                   'resultlist': entries}
        return json.dumps(message).encode('utf-8') + b'\n'
    count = 1000
    for _ in range(3):      # the entries grow with their numbers: home in on the size
        count = max(1, int(count * size / len(build(count))))
    return build(count)


# -- relays: direct, socat, or a tool --

def tool_of(kind):
    """(the tool's name, the folder of its script) for a tool's kind."""
    if kind.endswith(BEFORE_SUFFIX):
        return kind[:-len(BEFORE_SUFFIX)], COMPARE_DIR
    return kind, TOOLS_DIR


def is_tool(kind):
    return kind not in ('direct', 'socat', SOCAT_BIG) + PYTHON_RELAYS


# A bare relay for one session, as a reference for the burst: argv: 'relay' (forward only) or 'keep' (hold every chunk
# until the end), the server's port.  It says the port it listens on, as the tools do.
PYTHON_RELAY = r'''
import socket, sys, threading
keep, server_port = sys.argv[1] == "keep", int(sys.argv[2])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
sys.stderr.write("listening on port %d\n" % listener.getsockname()[1])
sys.stderr.flush()
client, _ = listener.accept()
server = socket.create_connection(("127.0.0.1", server_port))
kept = []
def pump(source, sink):
    while True:
        data = source.recv(1 << 20)
        if not data:
            break
        if keep:
            kept.append(data)
        sink.sendall(data)
    sink.shutdown(socket.SHUT_WR)
pumps = [threading.Thread(target=pump, args=ends) for ends in ((client, server), (server, client))]
for thread in pumps:
    thread.start()
for thread in pumps:
    thread.join()
'''


def exit_code(status):
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# Memory is measured as the process's VmHWM (peak resident set size, from /proc/PID/status), read every few
# milliseconds while it runs: ru_maxrss would not do, as a process inherits it across exec from the process it
# was forked from (this one holds all the traffic).  Each process is started through this small wrapper, which
# forks it, samples its VmHWM until it exits, and writes the last figure seen (in KB) to a file.
WRAPPER = r'''
import os, signal, sys, threading, time
report, command = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execv(command[0], command)
    finally:
        os._exit(127)
peak = [0]
done = threading.Event()
def sample():
    path = "/proc/%d/status" % pid
    while not done.is_set():
        try:
            with open(path) as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
                        break
        except (OSError, ValueError):
            pass
        done.wait(0.002)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
_, status = os.waitpid(pid, 0)
done.set()
with open(report, "w") as file:
    file.write("%d\n" % peak[0])
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.WEXITSTATUS(status))
'''
SPAWNED = itertools.count(1)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Relay:
    """Where the scripted client connects: to the scripted server directly, or through socat or a tool.

    A process (socat or a tool, started through WRAPPER) is reaped by os.wait4 on a thread of its
    own, which notes the time of its exit; WRAPPER reports the process's own peak memory.
    """

    def __init__(self, kind, workdir, loop=False):
        """kind: 'direct', 'socat', 'socat-b256k' (socat -b 262144), one of PYTHON_RELAYS, a tool's name, or a
        tool's name with BEFORE_SUFFIX (the tool of --compare's checkout); loop: serve many sessions (socat fork,
        a tool's --loop)."""
        self.kind = kind
        self.process = None
        self.exit_time = None
        self.status = None
        self.report = None
        self.stderr = b''
        self.workdir = workdir
        self.files = {}
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(256)
        server_port = self.listener.getsockname()[1]
        if kind == 'direct':
            self.port = server_port
        elif kind.startswith('socat'):
            self.port = free_port()
            buffer = ['-b', str(SOCAT_BIG_BUFFER)] if kind == SOCAT_BIG else []
            self._spawn([shutil.which('socat'), '-d', '-d'] + buffer + [
                'TCP-LISTEN:%d,reuseaddr,bind=127.0.0.1%s' % (self.port, ',fork' if loop else ''),
                'TCP:127.0.0.1:%d' % server_port], subprocess.DEVNULL)
            self._read_stderr_until(b'listening on')
            self._drain_stderr()
        elif kind in PYTHON_RELAYS:
            mode = kind.split('-')[1]
            self._spawn([sys.executable, '-c', PYTHON_RELAY, mode, str(server_port)], subprocess.DEVNULL)
            self.port = int(re.search(rb'listening on port (\d+)', self._read_stderr_until(b'\n')).group(1))
            self._drain_stderr()
        else:
            tool, tools_dir = tool_of(kind)
            base = os.path.join(workdir, kind)
            self.files['stdout'] = base + '.out'
            command = [sys.executable, os.path.join(tools_dir, tool), '127.0.0.1']
            if tool == 'ctisave':
                self.files['client'] = base + '.client'
                self.files['server'] = base + '.server'
                command += [self.files['client'], self.files['server']]
            command += ['--port', str(server_port), '--listen-addr', '127.0.0.1', '--listen-port', '0']
            if loop:
                command += ['--loop']
            with open(self.files['stdout'], 'wb') as stdout:
                self._spawn(command, stdout)
            start = self._read_stderr_until(b'\n').decode('utf-8', 'replace')
            self._drain_stderr()
            match = re.search(r'listening on port (\d+)', start)
            if not match:
                raise RuntimeError('%s did not say where it listens: %r' % (kind, start))
            self.port = int(match.group(1))

    def _spawn(self, command, stdout):
        """Start command through WRAPPER, in a session of its own (so that kill() ends both)."""
        env = dict(os.environ)
        env.pop('PYTHONUNBUFFERED', None)
        self.report = os.path.join(self.workdir, 'maxrss-%d' % next(SPAWNED))
        self.process = subprocess.Popen([sys.executable, '-c', WRAPPER, self.report] + command,
                                        stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE,
                                        env=env, start_new_session=True)
        self.waiter = threading.Thread(target=self._reap, name='reap-' + self.kind, daemon=True)
        self.waiter.start()

    def _reap(self):
        _, status, _ = os.wait4(self.process.pid, 0)
        self.exit_time = now()
        self.status = status
        self.process.returncode = exit_code(status)   # reaped here: Popen must not wait for it again

    def _read_stderr_until(self, needle):
        fd = self.process.stderr.fileno()
        deadline = now() + TIMEOUT
        while needle not in self.stderr:
            remaining = deadline - now()
            if remaining <= 0:
                raise RuntimeError('%s: %r not seen on stderr: %r' % (self.kind, needle, self.stderr[-300:]))
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                data = os.read(fd, 4096)
                if not data:
                    raise RuntimeError('%s ended before %r on stderr: %r' % (self.kind, needle, self.stderr[-300:]))
                self.stderr += data
        return self.stderr

    def _drain_stderr(self):
        """Read the rest of stderr as it comes, on a thread of its own: socat -d -d says something of each
        session, and would stop, many sessions on, on a full pipe."""
        self.stderr_reader = threading.Thread(target=self._read_rest_of_stderr, name='stderr-' + self.kind,
                                              daemon=True)
        self.stderr_reader.start()

    def _read_rest_of_stderr(self):
        fd = self.process.stderr.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.stderr += data

    def _rest_of_stderr(self):
        self.stderr_reader.join(TIMEOUT)

    def connect(self):
        """Connect the scripted client; return (client socket, the scripted server's socket)."""
        client = socket.create_connection(('127.0.0.1', self.port), timeout=TIMEOUT)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.listener.settimeout(TIMEOUT)
        server, _ = self.listener.accept()
        server.settimeout(TIMEOUT)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, server

    def wait_exit(self):
        """Wait (bounded) for the process to exit after its session; raise if it does not or fails."""
        if self.process is None:
            return
        self.waiter.join(TIMEOUT)
        if self.waiter.is_alive():
            self.kill()
            raise RuntimeError('%s did not exit within %.0f s after its session' % (self.kind, TIMEOUT))
        self._rest_of_stderr()
        code = self.process.returncode
        text = self.stderr.decode('utf-8', 'replace')
        if code != 0 or 'Traceback' in text:
            raise RuntimeError('%s exited with %s: %s' % (self.kind, code, text[-800:]))

    @property
    def peak_mb(self):
        """The process's own peak memory (ru_maxrss, as WRAPPER reported it), in MB; None without a process."""
        if self.process is None:
            return None
        with open(self.report) as file:
            return int(file.read()) / 1024.0         # ru_maxrss is in KB on Linux

    def kill(self):
        if self.process is not None and self.exit_time is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
            self.waiter.join(TIMEOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        if self.process is not None:
            self.process.stderr.close()
        self.listener.close()

    # -- what the tool made of the traffic --

    def check_output(self, client_messages, server_messages):
        """Return a problem (text) if the tool's output does not hold every message (of all its sessions), else
        None."""
        tool = tool_of(self.kind)[0]
        if tool == 'ctispy':
            with open(self.files['stdout'], 'rb') as file:
                data = file.read()
            shown = data.count(b'\n{') + data.startswith(b'{')
            expected = client_messages + server_messages
            if shown != expected:
                return 'ctispy showed %d messages of %d' % (shown, expected)
        elif tool == 'ctisave':
            for side, expected in (('client', client_messages), ('server', server_messages)):
                saved = 0
                for path in [self.files[side]] + glob.glob(glob.escape(self.files[side]) + '.*'):
                    with open(path, 'rb') as file:
                        saved += file.read().count(b'\n}\n')
                if saved != expected:
                    return 'ctisave saved %d %s messages of %d' % (saved, side, expected)
        elif tool == 'ctistat':
            with open(self.files['stdout'], 'rb') as file:
                text = file.read().decode('utf-8', 'replace')
            found = re.findall(r'^messages +(\d+) +(\d+)$', text, re.M)
            counted = (sum(int(client) for client, _ in found), sum(int(server) for _, server in found))
            if counted != (client_messages, server_messages):
                return 'ctistat counted %s messages (client, server), not %s' % (
                    counted, (client_messages, server_messages))
        return None

    def cpu_seconds(self):
        """The CPU time the relay's process has used so far (user and system), None once it is gone."""
        pid = self._relay_pid()
        try:
            with open('/proc/%d/stat' % pid) as file:
                fields = file.read().rsplit(')', 1)[1].split()
        except (OSError, TypeError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def _relay_pid(self):
        """The relay's own process: WRAPPER's child."""
        try:
            with open('/proc/%d/task/%d/children' % (self.process.pid, self.process.pid)) as file:
                return int(file.read().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    def wait_idle(self, quiet=0.2):
        """Wait (bounded) until the process has used no CPU for `quiet` seconds: it has handled what it got.
        Return the time it went idle."""
        deadline = now() + 10 * TIMEOUT
        last, since = self.cpu_seconds(), now()
        while now() < deadline:
            time.sleep(0.02)
            used = self.cpu_seconds()
            if used is None:
                return since
            if used != last:
                last, since = used, now()
            elif now() - since >= quiet:
                return since
        raise RuntimeError('%s still busy %.0f s after its sessions' % (self.kind, 10 * TIMEOUT))

    def stop(self):
        """End a --loop tool (or a socat fork) with SIGTERM, and wait for its exit."""
        if self.process is None:
            return
        pid = self._relay_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)        # the relay itself: WRAPPER must live to report its peak
        if self.kind.startswith('socat'):       # socat ends with the signal's status
            self.waiter.join(TIMEOUT)
            self._rest_of_stderr()
            return
        self.wait_exit()


class Worker(threading.Thread):
    """The scripted server's side of a session, on its own thread; finish() re-raises what it raised."""

    def __init__(self, target, *args):
        super().__init__(name='scripted-server', daemon=True)
        self.target = target
        self.args = args
        self.result = None
        self.error = None

    def run(self):
        try:
            self.result = self.target(*self.args)
        except BaseException as error:
            self.error = error

    def finish(self):
        self.join(TIMEOUT)
        if self.is_alive():
            raise RuntimeError('the scripted server did not finish within %.0f s' % TIMEOUT)
        if self.error is not None:
            raise self.error
        return self.result


def drain(sock):
    """Receive until EOF; return the number of bytes."""
    got = 0
    buffer = bytearray(1 << 20)
    while True:
        count = sock.recv_into(buffer)
        if not count:
            return got
        got += count


def send_then_close(sock, data, piece, repeat=1):
    """Send data (in pieces of piece bytes, or all at once; `repeat` times), end the sending, wait for EOF, close.

    Return the time just before the first byte was sent."""
    view = memoryview(data)
    started = now()
    for _ in range(repeat):
        if piece:
            for start in range(0, len(data), piece):
                sock.sendall(view[start:start + piece])
        else:
            sock.sendall(view)
    sock.shutdown(socket.SHUT_WR)
    drain(sock)
    sock.close()
    return started


def receive_then_close(sock, size):
    """Receive until EOF; return the time the size-th byte arrived."""
    got, last = 0, None
    buffer = bytearray(1 << 20)
    while True:
        count = sock.recv_into(buffer)
        if not count:
            break
        got += count
        if got >= size and last is None:
            last = now()
    sock.close()
    if got != size:
        raise RuntimeError('the client received %d bytes of %d' % (got, size))
    return last


def one_way(relay, data, piece=0, repeat=1):
    """The server sends data (repeat times) to the client through relay; both close. Return (first byte sent, last
    received)."""
    client, server = relay.connect()
    worker = Worker(send_then_close, server, data, piece, repeat)
    worker.start()
    last = receive_then_close(client, len(data) * repeat)
    started = worker.finish()
    relay.wait_exit()
    return started, last


def many_at_once(relay, data, sessions):
    """`sessions` clients connect through relay; each one's server sends data at once, all on one thread; every
    side closes once done.  Return (first byte sent, last byte received)."""
    pairs = [relay.connect() for _ in range(sessions)]
    selector = selectors.DefaultSelector()
    view = memoryview(data)
    buffer = bytearray(MB)
    received = {}
    for client, server in pairs:
        client.setblocking(False)
        server.setblocking(False)
        selector.register(server, selectors.EVENT_WRITE, [0])
        selector.register(client, selectors.EVENT_READ, None)
        received[client] = 0
    started = now()
    last = None
    deadline = started + 10 * TIMEOUT
    while selector.get_map():
        if now() > deadline:
            raise RuntimeError('%d sessions at once: not done within %.0f s' % (sessions, 10 * TIMEOUT))
        for key, _ in selector.select(1.0):
            sock, sent = key.fileobj, key.data
            if sent is not None and key.events == selectors.EVENT_WRITE:     # a server sending
                try:
                    sent[0] += sock.send(view[sent[0]:])
                except BlockingIOError:
                    continue
                if sent[0] == len(data):
                    sock.shutdown(socket.SHUT_WR)
                    selector.modify(sock, selectors.EVENT_READ, sent)
                continue
            try:
                count = sock.recv_into(buffer)
            except BlockingIOError:
                continue
            if count:
                if sent is None:
                    received[sock] += count
                    if received[sock] == len(data) and all(got == len(data) for got in received.values()):
                        last = now()
                continue
            selector.unregister(sock)
            sock.close()
    if last is None:
        raise RuntimeError('%d sessions at once: a client received %d bytes of %d'
                           % (sessions, min(received.values()), len(data)))
    return started, last


def answer_requests(sock, answers):
    """The scripted server: answer each request line with the next answer, until EOF; then close."""
    pending = b''
    index = 0
    while True:
        data = sock.recv(65536)
        if not data:
            break
        pending += data
        lines = pending.split(b'\n')
        pending = lines.pop()
        for _ in lines:
            sock.sendall(answers[index])
            index += 1
    sock.close()
    return index


def ping_pong(relay, pairs):
    """Each request, then its answer, one after the other; return the seconds of each round trip."""
    client, server = relay.connect()
    worker = Worker(answer_requests, server, [answer for _, answer in pairs])
    worker.start()
    times = []
    for request, answer in pairs:
        started = now()
        client.sendall(request)
        size, got = len(answer), 0
        while got < size:
            data = client.recv(size - got)
            if not data:
                raise RuntimeError('EOF in the middle of an answer')
            got += len(data)
        times.append(now() - started)
    client.shutdown(socket.SHUT_WR)
    drain(client)
    client.close()
    answered = worker.finish()
    if answered != len(pairs):
        raise RuntimeError('the scripted server answered %d requests of %d' % (answered, len(pairs)))
    relay.wait_exit()
    return times


# -- measuring --

def measure_burst(kind, workdir, data, lines):
    """{'received': seconds to the last byte, 'handled': seconds to exit, 'peak': MB, 'problem': text}."""
    with Relay(kind, workdir) as relay:
        started, last = one_way(relay, data)
        result = {'received': last - started}
        if relay.process is not None:
            result.update(handled=relay.exit_time - started, peak=relay.peak_mb,
                          problem=relay.check_output(0, len(lines)))
        return result


def measure_round_trip(kind, workdir, pairs, warmup):
    """{'times': seconds of each round trip after the warm-up, 'median': theirs; 'problem': text}."""
    with Relay(kind, workdir) as relay:
        times = ping_pong(relay, pairs)[warmup:]
        result = {'times': times, 'median': statistics.median(times)}
        if relay.process is not None:
            result.update(problem=relay.check_output(len(pairs), len(pairs)))
        return result


def measure_big(kind, workdir, message):
    """{'seconds': to the exit of a process (direct: to the last byte received), 'peak': MB, 'problem'}."""
    with Relay(kind, workdir) as relay:
        started, last = one_way(relay, message, PIECE)
        result = {'seconds': last - started}
        if relay.process is not None:
            result.update(peak=relay.peak_mb, problem=relay.check_output(0, 1))
            if not relay.kind.startswith('socat'):
                result['seconds'] = relay.exit_time - started
        return result


def measure_sustained(kind, workdir, data, lines, repeat):
    """The burst sent `repeat` times through one session: {'received', 'handled', 'peak', 'problem'}."""
    with Relay(kind, workdir) as relay:
        started, last = one_way(relay, data, repeat=repeat)
        result = {'received': last - started}
        if relay.process is not None:
            result.update(peak=relay.peak_mb)
            if is_tool(kind):
                result.update(handled=relay.exit_time - started, problem=relay.check_output(0, len(lines) * repeat))
        return result


def measure_many(kind, workdir, data, lines, sessions):
    """`sessions` sessions at once, each server sending data: {'received', 'handled', 'peak', 'problem'}."""
    with Relay(kind, workdir, loop=True) as relay:
        started, last = many_at_once(relay, data, sessions)
        result = {'received': last - started}
        if relay.process is not None:
            if is_tool(kind):
                result['handled'] = relay.wait_idle() - started
            relay.stop()
            result['peak'] = relay.peak_mb
            if is_tool(kind):
                result['problem'] = relay.check_output(0, len(lines) * sessions)
        return result


def json_loads_seconds(lines, runs):
    """The median time of json.loads over the lines, in this process: (bytes lines, lines decoded first)."""
    loads = json.loads
    as_bytes, as_text = [], []
    for _ in range(runs):
        started = now()
        for line in lines:
            loads(line)
        as_bytes.append(now() - started)
        started = now()
        for line in lines:
            loads(line.decode('utf-8'))
        as_text.append(now() - started)
    return statistics.median(as_bytes), statistics.median(as_text)


def json_loads_peak_mb(message, workdir):
    """The peak memory of a Python process that reads the message from a file and json.loads it."""
    path = os.path.join(workdir, 'big.json')
    report = os.path.join(workdir, 'maxrss-json')
    with open(path, 'wb') as file:
        file.write(message)
    code = ('import json, sys\n'
            'message = json.loads(open(sys.argv[1], "rb").read().decode("utf-8"))\n')
    subprocess.run([sys.executable, '-c', WRAPPER, report, sys.executable, '-c', code, path],
                   check=True, timeout=TIMEOUT)
    os.unlink(path)
    with open(report) as file:
        return int(file.read()) / 1024.0


class Results:
    """The runs of each measurement for each relay; figures are medians over the runs that worked."""

    def __init__(self):
        self.runs = {}

    def add(self, key, result):
        self.runs.setdefault(key, [])
        if result is not None:
            self.runs[key].append(result)
            if result.get('problem'):
                problems.append('%s: output incomplete: %s' % (describe(key), result['problem']))
        else:
            self.runs[key].append(None)

    def median(self, key, field):
        values = [run[field] for run in self.runs.get(key, []) if run is not None and run.get(field) is not None]
        return statistics.median(values) if values else None

    def values(self, key, field):
        return [run[field] for run in self.runs.get(key, []) if run is not None and run.get(field) is not None]

    def pooled(self, key, field='times'):
        """The median and the 90th percentile of the samples of all the runs together."""
        samples = sorted(sample for run in self.values(key, field) for sample in run)
        return (statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]) if samples else (None, None)

    def complete(self, key):
        """Whether every run worked and gave complete output."""
        runs = self.runs.get(key, [])
        return bool(runs) and all(run is not None and not run.get('problem') for run in runs)


def describe(key):
    if isinstance(key, tuple):
        return '%s via %s' % (key[0], key[1])
    return key


def attempt(key, action, *args):
    """Run one measurement; on failure note the problem and return None, so that the others still run."""
    try:
        return action(*args)
    except Exception as error:
        problems.append('%s: %s' % (describe(key), error))
        sys.stderr.write('bench: %s failed:\n' % describe(key))
        traceback.print_exc()
        return None


# -- captures --

def write_capture(path, data):
    """data as the server's side of one session on port 5003, in SEGMENT-byte segments 20 us apart, the client
    acknowledging every second one, written as a pcap; return the number of packets."""
    sys.path.insert(0, ROOT)
    from tests.capwriter import ACK, ETHERNET, FIN, SYN, Conversation, frame, pcap
    conversation = Conversation()
    records = []
    when = int(1732712345 * 1e9)

    def add(side, payload=b'', flags=ACK):
        nonlocal when
        when += 20000
        records.append((when, frame(ETHERNET, conversation.packet(side, payload, flags))))

    add('client', flags=SYN)
    add('server', flags=SYN | ACK)
    add('client')
    for number, start in enumerate(range(0, len(data), SEGMENT)):
        add('server', data[start:start + SEGMENT])
        if number % 2:
            add('client')
    add('client', flags=FIN | ACK)
    add('server', flags=FIN | ACK)
    add('client')
    with open(path, 'wb') as file:
        file.write(pcap(records))
    return len(records)


def measure_capture_read(kind, workdir, path, lines):
    """{'seconds': start -> exit of `kind --read path` (or of tshark, tcpflow), 'problem': text}."""
    out = os.path.join(workdir, 'capture-%s.out' % kind)
    if kind == 'tshark':
        command = [shutil.which('tshark'), '-r', path, '-T', 'fields', '-e', 'tcp.payload']
    elif kind == 'tcpflow':
        flows = os.path.join(workdir, 'flows')
        shutil.rmtree(flows, ignore_errors=True)
        os.mkdir(flows)
        command = [shutil.which('tcpflow'), '-r', path, '-o', flows]
    else:
        command = [sys.executable, os.path.join(TOOLS_DIR, kind), '--read', path] + (
            ['--json'] if kind == 'ctistat' else [])
    with open(out, 'wb') as stdout:
        started = now()
        done = subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              timeout=10 * TIMEOUT)
        seconds = now() - started
    result = {'seconds': seconds}
    if done.returncode != 0:
        result['problem'] = 'exit %d: %s' % (done.returncode, done.stderr.decode('utf-8', 'replace')[-300:])
    elif kind == 'ctistat':
        with open(out, 'rb') as file:
            report = json.loads(file.read())
        if report['server']['messages'] != len(lines):
            result['problem'] = '%d messages counted of %d' % (report['server']['messages'], len(lines))
    return result


# -- reporting --

def table(headers, rows, indent='   '):
    """Print rows under headers, the first column left-aligned, the others right-aligned."""
    cells = [headers] + [['' if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        parts = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        print(indent + '  '.join(parts).rstrip())


def verdict(ok):
    return 'pass' if ok else 'FAIL'


def fmt(value, pattern):
    return 'error' if value is None else pattern % value


def spread(values, pattern, scale=1.0):
    """'min..max' of the runs, or '' for a single run."""
    if len(values) < 2:
        return ''
    return (pattern + '..' + pattern) % (min(values) * scale, max(values) * scale)


def machine_line():
    model = ''
    try:
        with open('/proc/cpuinfo') as file:
            for line in file:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return 'nproc %s, %s, %s' % (usable, model or platform.machine(), platform.platform())


def load_line():
    try:
        return 'load average %.2f %.2f %.2f' % os.getloadavg()
    except OSError:
        return 'load average unknown'


def size_text(size):
    return '%g MB' % round(size / MB, 1)


def parse_args():
    parser = argparse.ArgumentParser(description='Benchmark ctispy, ctisave and ctistat on loopback.')
    parser.add_argument('--quick', action='store_true', help='a smaller, faster run')
    parser.add_argument('--runs', type=int, help='runs of each measurement (default: 3, or 1 with --quick; '
                        'round trips: 2 more; sustained load: 1)')
    parser.add_argument('--tools', nargs='+', choices=TOOL_NAMES, default=list(TOOL_NAMES),
                        help='the tools to measure (default: all three)')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS),
                        help='the measurements to make (default: all; handling comes with burst)')
    parser.add_argument('--compare', metavar='DIR',
                        help='also measure the tools of another checkout (its top folder), as TOOL%s' % BEFORE_SUFFIX)
    return parser.parse_args()


def main():
    global COMPARE_DIR
    args = parse_args()
    if args.quick:
        burst_size, trips, warmup, small, large, runs = 4 * MB, 300, 50, MB // 2, 4 * MB, 1
        capture_size, sustained_size, many = 16 * MB, 64 * MB, 32
    else:
        burst_size, trips, warmup, small, large, runs = 32 * MB, 2000, 200, 2 * MB, 16 * MB, 3
        capture_size, sustained_size, many = 64 * MB, SUSTAINED_SIZE, MANY_SESSIONS
    runs = max(1, args.runs or runs)
    trip_runs = runs + 2          # round trips vary most from run to run (threads woken on an idle core or not)
    sustained_runs = max(1, args.runs or 1)
    sections = set(args.sections)
    tools = [name for name in TOOL_NAMES if name in args.tools]
    if args.compare:
        COMPARE_DIR = os.path.join(os.path.abspath(args.compare), 'cti-proxy')
        tools = [kind for name in tools for kind in (name + BEFORE_SUFFIX, name)]
    socat = shutil.which('socat')
    kinds = ['direct'] + (['socat', SOCAT_BIG] if socat else []) + tools
    burst_kinds = kinds[:-len(tools)] + list(PYTHON_RELAYS) + tools
    bench_started = now()

    print('cti-proxy benchmark%s, %s' % (' --quick' if args.quick else '',
                                         datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')))
    print('Python %s (%s)' % (platform.python_version(), sys.executable))
    print('machine: %s; %s at start' % (machine_line(), load_line()))
    print('socat: %s' % ('%s (socat: default 8 KiB buffer; %s: -b %d)' % (socat, SOCAT_BIG, SOCAT_BIG_BUFFER)
                         if socat else 'not on PATH, not measured'))
    if args.compare:
        print('%s: the tools of %s' % (BEFORE_SUFFIX.strip('-'), COMPARE_DIR))
    sys.stdout.flush()

    data, lines = make_burst(burst_size)
    pairs = round_trip_traffic(warmup + trips)
    messages = {size: big_message(size) for size in (small, large)}
    repeat = max(1, sustained_size // len(data))
    many_data, many_lines = make_burst(MANY_SIZE)
    print('traffic: a burst of %.1f MB = %d server messages of %.0f bytes on average; round trips of a %d-byte '
          'request and a %d-byte answer; big messages of %s and %s'
          % (len(data) / MB, len(lines), len(data) / len(lines), len(pairs[0][0]), len(pairs[0][1]),
             size_text(len(messages[small])), size_text(len(messages[large]))))
    print('each measurement: %d run%s per relay (round trips: %d; sustained load: %d), the relays taking turns; '
          'figures are medians over the runs, with min..max'
          % (runs, '' if runs == 1 else 's', trip_runs, sustained_runs))
    print('peak MB: the process\'s peak resident memory (VmHWM, /proc/PID/status, sampled every 2 ms while it runs)')
    print()
    sys.stdout.flush()

    results = Results()
    loads_bytes = loads_text = loads_peak = None
    capture_kinds, capture_lines, capture_packets, capture_mb = [], [], 0, 0.0
    with tempfile.TemporaryDirectory(prefix='cti-bench-') as workdir:
        if 'burst' in sections:
            for _ in range(runs):
                for kind in burst_kinds:
                    key = ('burst', kind)
                    results.add(key, attempt(key, measure_burst, kind, workdir, data, lines))
            loads_bytes, loads_text = json_loads_seconds(lines, 3)
        if 'round-trip' in sections:
            for _ in range(trip_runs):
                for kind in kinds:
                    key = ('round trip', kind)
                    results.add(key, attempt(key, measure_round_trip, kind, workdir, pairs, warmup))
        if 'big' in sections:
            for _ in range(runs):
                for kind in kinds:
                    for size in (small, large):
                        key = ('%s message' % size_text(size), kind)
                        results.add(key, attempt(key, measure_big, kind, workdir, messages[size]))
            loads_peak = attempt(('json.loads peak memory', 'python'), json_loads_peak_mb, messages[large], workdir)
        if 'sustained' in sections:
            for _ in range(sustained_runs):
                for kind in kinds:
                    key = ('sustained', kind)
                    results.add(key, attempt(key, measure_sustained, kind, workdir, data, lines, repeat))
                for kind in kinds:
                    key = ('many', kind)
                    results.add(key, attempt(key, measure_many, kind, workdir, many_data, many_lines, many))
        if 'capture' in sections:
            capture_kinds = [name for name in ('ctistat', 'ctispy') if name in tools]
            capture_kinds += [name for name in ('tshark', 'tcpflow') if shutil.which(name)]
            capture_data, capture_lines = make_burst(capture_size)
            capture_path = os.path.join(workdir, 'cti.pcap')
            capture_packets = write_capture(capture_path, capture_data)
            capture_mb = os.path.getsize(capture_path) / MB
            tiny_path = os.path.join(workdir, 'one-message.pcap')
            write_capture(tiny_path, capture_lines[0] + b'\n')
            for _ in range(runs):
                for kind in capture_kinds:
                    key = ('capture', kind)
                    results.add(key, attempt(key, measure_capture_read, kind, workdir, capture_path, capture_lines))
                    if kind.startswith('cti'):
                        key = ('capture start', kind)
                        results.add(key, attempt(key, measure_capture_read, kind, workdir, tiny_path,
                                                 capture_lines[:1]))

    if 'burst' in sections:
        report_burst(results, burst_kinds, tools, data)
    if 'round-trip' in sections:
        report_round_trip(results, kinds, tools, pairs, trips, warmup, trip_runs)
    if 'burst' in sections:
        report_handling(results, tools, lines, loads_bytes, loads_text)
    if 'big' in sections:
        report_big(results, kinds, tools, messages, small, large, loads_peak)
    if 'capture' in sections:
        report_capture(results, capture_kinds, lines, capture_lines, capture_mb, capture_packets)
    if 'sustained' in sections:
        report_sustained(results, kinds, tools, len(data) * repeat, many, len(many_data))
    if 'web' in sections:
        problems.extend(bench_web.browser_section(args.quick, number=7))

    print('bench took %.1f s; %s at the end' % (now() - bench_started, load_line()))
    if problems:
        print('PROBLEMS (the bench exits 1):')
        for problem in problems:
            print('  - ' + problem)
        return 1
    return 0


def report_burst(results, kinds, tools, data):
    print('1. Burst: %.1f MB of server messages to the client; first byte sent -> last byte received by the client'
          % (len(data) / MB))
    direct = results.median(('burst', 'direct'), 'received')
    socat_big = results.median(('burst', SOCAT_BIG), 'received')
    goal = max(GOAL_BURST, direct / socat_big if direct and socat_big else 0.0)
    rows = []
    for kind in kinds:
        key = ('burst', kind)
        seconds = results.median(key, 'received')
        share = direct / seconds if seconds and direct else None
        tool = kind in tools
        rows.append([kind, fmt(seconds, '%.3f'), fmt(seconds and len(data) / MB / seconds, '%.1f'),
                     spread([len(data) / MB / value for value in results.values(key, 'received')], '%.0f'),
                     fmt(share, '%.2f'), '>= %.2f' % goal if tool else '',
                     verdict(share is not None and share >= goal) if tool else ''])
    table(['relay', 'seconds', 'MB/s', 'MB/s runs', 'vs direct', 'goal', 'result'], rows)
    print('   goal: at least %.2f of direct, and at least %s\'s share in this run' % (GOAL_BURST, SOCAT_BIG))
    print()


def report_handling(results, tools, lines, loads_bytes, loads_text):
    loads_rate = len(lines) / loads_bytes
    print('3. Handling: the burst of %d messages; first byte sent -> tool exit after client and server closed '
          '(nothing subtracted)' % len(lines))
    print('   json.loads(line) alone, here: %.3f s = %.0f messages/s (lines as bytes: the baseline); '
          'json.loads(line.decode()): %.0f messages/s' % (loads_bytes, loads_rate, len(lines) / loads_text))
    rows = []
    for kind in tools:
        key = ('burst', kind)
        seconds = results.median(key, 'handled')
        share = len(lines) / seconds / loads_rate if seconds else None
        goal = GOAL_HANDLING[tool_of(kind)[0]]
        complete = results.complete(key)
        peak = results.median(key, 'peak')
        rows.append([kind, fmt(seconds, '%.3f'), fmt(seconds and len(lines) / seconds, '%.0f'),
                     spread(results.values(key, 'handled'), '%.2f'), fmt(share, '%.2f'), '>= %.2f' % goal,
                     verdict(share is not None and share >= goal and complete),
                     'complete' if complete else 'INCOMPLETE', fmt(peak, '%.1f'), '<= %.0f' % GOAL_BURST_PEAK_MB,
                     verdict(peak is not None and peak <= GOAL_BURST_PEAK_MB)])
    table(['tool', 'handling s', 'messages/s', 'seconds runs', 'vs json.loads', 'goal', 'result', 'output',
           'peak MB', 'goal', 'result'], rows)
    print()


def report_round_trip(results, kinds, tools, pairs, trips, warmup, trip_runs):
    print('2. Round trip: a %d-byte request, then its %d-byte answer, %d times a run (after %d not counted), %d runs; '
          'microseconds per round trip, over all the runs'
          % (len(pairs[0][0]), len(pairs[0][1]), trips, warmup, trip_runs))
    pooled = results.pooled
    direct = pooled(('round trip', 'direct'))[0]
    rows = []
    for kind in kinds:
        key = ('round trip', kind)
        median, p90 = pooled(key)
        added = (median - direct) * 1e6 if median is not None and direct is not None else None
        tool = kind in tools
        rows.append([kind, fmt(median and median * 1e6, '%.1f'), spread(results.values(key, 'median'), '%.0f', 1e6),
                     fmt(p90 and p90 * 1e6, '%.1f'), fmt(added, '%+.1f'),
                     '<= %.0f' % GOAL_ROUND_TRIP_US if tool else '',
                     verdict(added is not None and added <= GOAL_ROUND_TRIP_US) if tool else ''])
    table(['relay', 'median us', 'run medians', 'p90 us', 'added us', 'goal', 'result'], rows)
    print()


def report_big(results, kinds, tools, messages, small, large, loads_peak):
    small_key, large_key = '%s message' % size_text(small), '%s message' % size_text(large)
    print('4. Big messages: one line of %s, one of %s, each sent in %d KB pieces; first byte sent -> tool exit'
          % (size_text(len(messages[small])), size_text(len(messages[large])), PIECE // 1024))
    print('   (direct and socat: -> last byte received, for reference)')
    peak_goal = None
    if loads_peak is not None:
        peak_goal = GOAL_PEAK_VS_LOADS * loads_peak
        print('   a Python process that reads the %s message and json.loads it peaks at %.1f MB; goal: at most %.1f '
              'times that, %.1f MB' % (size_text(len(messages[large])), loads_peak, GOAL_PEAK_VS_LOADS, peak_goal))
    rows = []
    for kind in kinds:
        first = results.median((small_key, kind), 'seconds')
        second = results.median((large_key, kind), 'seconds')
        ratio = second / first if first and second else None
        peak = results.median((large_key, kind), 'peak')
        tool = kind in tools
        complete = results.complete((small_key, kind)) and results.complete((large_key, kind))
        rows.append([kind, fmt(first, '%.3f'), fmt(second, '%.3f'), fmt(ratio, '%.2f'),
                     '<= %.0f' % GOAL_LINEAR if tool else '',
                     verdict(ratio is not None and ratio <= GOAL_LINEAR and complete) if tool else '',
                     fmt(peak, '%.1f') if kind != 'direct' else '',
                     fmt(peak_goal, '<= %.1f') if tool else '',
                     verdict(peak is not None and peak_goal is not None and peak <= peak_goal) if tool else ''])
    table(['relay', '%s s' % size_text(small), '%s s' % size_text(large), 'ratio', 'goal', 'result',
           'peak MB (%s)' % size_text(large), 'goal', 'result'], rows)
    print()


def report_sustained(results, kinds, tools, one_size, many, many_size):
    print('6. Sustained load, more than the analysis buffer holds: (a) %s through one session (the burst repeated); '
          '(b) %d sessions at once, each server sending %s' % (size_text(one_size), many, size_text(many_size)))
    print('   wire MB/s: first byte sent -> last byte received by the client(s); handled: -> tool exit (a), or -> the '
          'tool idle (b), after it handled every message; a tool\'s wire rate is its analysis rate by design')
    rows = []
    direct = {name: results.median((name, 'direct'), 'received') for name in ('sustained', 'many')}
    for kind in kinds:
        row = [kind]
        for name, size in (('sustained', one_size), ('many', many * many_size)):
            key = (name, kind)
            seconds = results.median(key, 'received')
            handled = results.median(key, 'handled')
            row += [fmt(seconds and size / MB / seconds, '%.1f'),
                    fmt(seconds and direct[name] and direct[name] / seconds, '%.2f'),
                    fmt(handled and size / MB / handled, '%.1f') if kind in tools else '',
                    fmt(results.median(key, 'peak'), '%.1f') if kind != 'direct' else '']
        rows.append(row)
    table(['relay', '(a) MB/s', 'vs direct', 'handled MB/s', 'peak MB',
           '(b) MB/s', 'vs direct', 'handled MB/s', 'peak MB'], rows)
    print()


def report_capture(results, capture_kinds, lines, capture_lines, capture_mb, capture_packets):
    print('5. Captures: a pcap of %.1f MB, %d packets, %d messages in %d-byte segments; --read start -> exit'
          % (capture_mb, capture_packets, len(capture_lines), SEGMENT))
    print('   tshark: -T fields -e tcp.payload; tcpflow: -r into a folder (%s)' % ', '.join(
        '%s %s' % (name, 'on PATH' if shutil.which(name) else 'not on PATH, not measured')
        for name in ('tshark', 'tcpflow')))
    live_seconds = results.median(('burst', 'ctistat'), 'handled')
    live_rate = len(lines) / live_seconds if live_seconds else None
    tshark = results.median(('capture', 'tshark'), 'seconds')
    rows = []
    for kind in capture_kinds:
        key = ('capture', kind)
        seconds = results.median(key, 'seconds')
        start = results.median(('capture start', kind), 'seconds') if kind.startswith('cti') else None
        handling = seconds - start if seconds and start and seconds > start else None
        rate = len(capture_lines) / handling if handling else None
        goal = result = ''
        if kind == 'ctistat':
            share = rate / live_rate if rate and live_rate else None
            goal = '>= %.2f of live%s' % (GOAL_CAPTURE_VS_LIVE, ', < tshark' if tshark else '')
            result = verdict(share is not None and share >= GOAL_CAPTURE_VS_LIVE and results.complete(key)
                             and (tshark is None or seconds < tshark))
        rows.append([kind, fmt(seconds, '%.3f'), spread(results.values(key, 'seconds'), '%.2f'),
                     fmt(start, '%.3f') if kind.startswith('cti') else '',
                     fmt(rate, '%.0f') if kind.startswith('cti') else '',
                     fmt(rate and live_rate and rate / live_rate, '%.2f') if kind == 'ctistat' else '',
                     goal, result])
    table(['reader', 'seconds', 'seconds runs', 'start s', 'handled/s', 'vs live', 'goal', 'result'], rows)
    print('   start s: the same tool\'s start to exit on a one-message capture; handled/s: messages / (seconds - '
          'start s)')
    print('   ctistat live (3.): %s messages/s' % fmt(live_rate, '%.0f'))
    print()


if __name__ == '__main__':
    sys.exit(main())
