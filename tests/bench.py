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
   byte sent to the tool's exit, and the tool's peak memory (its own rusage, from os.wait4).
5. Captures: a 64 MB pcap of typical server messages in 1448-byte segments (16 MB with --quick);
   ctistat --read and ctispy --read, start to exit, next to tshark's payload extraction and tcpflow
   when they are on PATH; ctistat's messages/s against its live handling rate (3.).
6. Web view: a recording of 200,000 messages (20,000 with --quick) read by ctispy --read --web, its page in
   headless Chromium: first rows, a jump to the end, frames while jumping about, filters (tests/bench_web.py;
   skipped without chromium).
"""

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import re
import select
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

GOAL_BURST = 0.2        # tool MB/s as a share of direct MB/s, at least
GOAL_ROUND_TRIP_US = 100.0   # added median microseconds per round trip, at most
GOAL_HANDLING = {'ctistat': 0.6, 'ctispy': 0.35, 'ctisave': 0.25}   # share of json.loads' rate, at least
GOAL_LINEAR = 12.0      # time(16 MB) / time(2 MB), at most
GOAL_PEAK_MB = 150.0    # peak memory for the 16 MB message, at most
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

def exit_code(status):
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


# Memory is measured by ru_maxrss, which a process also inherits across exec from the memory of the
# process it was forked (or vforked) from: this process holds all the traffic, so each tool is started
# through this small wrapper, which forks it, waits for it and writes its own ru_maxrss to a file.
WRAPPER = r'''
import os, signal, sys
report, command = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execv(command[0], command)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as file:
    file.write("%d\n" % usage.ru_maxrss)
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

    def __init__(self, kind, workdir):
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
        self.listener.listen(8)
        server_port = self.listener.getsockname()[1]
        if kind == 'direct':
            self.port = server_port
        elif kind == 'socat':
            self.port = free_port()
            self._spawn([shutil.which('socat'), '-d', '-d', 'TCP-LISTEN:%d,reuseaddr,bind=127.0.0.1' % self.port,
                         'TCP:127.0.0.1:%d' % server_port], subprocess.DEVNULL)
            self._read_stderr_until(b'listening on')
        else:
            base = os.path.join(workdir, kind)
            self.files['stdout'] = base + '.out'
            command = [sys.executable, os.path.join(TOOLS_DIR, kind), '127.0.0.1']
            if kind == 'ctisave':
                self.files['client'] = base + '.client'
                self.files['server'] = base + '.server'
                command += [self.files['client'], self.files['server']]
            command += ['--port', str(server_port), '--listen-addr', '127.0.0.1', '--listen-port', '0']
            with open(self.files['stdout'], 'wb') as stdout:
                self._spawn(command, stdout)
            start = self._read_stderr_until(b'\n').decode('utf-8', 'replace')
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
        self.stderr += self.process.stderr.read()
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
        """Return a problem (text) if the tool's output does not hold every message, else None."""
        if self.kind == 'ctispy':
            with open(self.files['stdout'], 'rb') as file:
                data = file.read()
            shown = data.count(b'\n{') + data.startswith(b'{')
            expected = client_messages + server_messages
            if shown != expected:
                return 'ctispy showed %d messages of %d' % (shown, expected)
        elif self.kind == 'ctisave':
            for side, expected in (('client', client_messages), ('server', server_messages)):
                with open(self.files[side], 'rb') as file:
                    data = file.read()
                saved = data.count(b'\n}\n')
                if saved != expected:
                    return 'ctisave saved %d %s messages of %d' % (saved, side, expected)
        elif self.kind == 'ctistat':
            with open(self.files['stdout'], 'rb') as file:
                text = file.read().decode('utf-8', 'replace')
            match = re.search(r'^messages +(\d+) +(\d+)$', text, re.M)
            counted = (int(match.group(1)), int(match.group(2))) if match else None
            if counted != (client_messages, server_messages):
                return 'ctistat counted %s messages (client, server), not %s' % (
                    counted, (client_messages, server_messages))
        return None


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


def send_then_close(sock, data, piece):
    """Send data (in pieces of piece bytes, or all at once), end the sending, wait for EOF, close.

    Return the time just before the first byte was sent."""
    view = memoryview(data)
    started = now()
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


def one_way(relay, data, piece=0):
    """The server sends data to the client through relay; both close. Return (first byte sent, last received)."""
    client, server = relay.connect()
    worker = Worker(send_then_close, server, data, piece)
    worker.start()
    last = receive_then_close(client, len(data))
    started = worker.finish()
    relay.wait_exit()
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
            if relay.kind != 'socat':
                result['seconds'] = relay.exit_time - started
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


def main():
    parser = argparse.ArgumentParser(description='Benchmark ctispy, ctisave and ctistat on loopback.')
    parser.add_argument('--quick', action='store_true', help='a smaller, faster run')
    parser.add_argument('--runs', type=int, help='runs of each measurement (default: 3, or 1 with --quick; '
                        'round trips: 2 more)')
    parser.add_argument('--tools', nargs='+', choices=TOOL_NAMES, default=list(TOOL_NAMES),
                        help='the tools to measure (default: all three)')
    args = parser.parse_args()
    if args.quick:
        burst_size, trips, warmup, small, large, runs = 4 * MB, 300, 50, MB // 2, 4 * MB, 1
        capture_size = 16 * MB
    else:
        burst_size, trips, warmup, small, large, runs = 32 * MB, 2000, 200, 2 * MB, 16 * MB, 3
        capture_size = 64 * MB
    runs = max(1, args.runs or runs)
    trip_runs = runs + 2          # round trips vary most from run to run (threads woken on an idle core or not)
    tools = [name for name in TOOL_NAMES if name in args.tools]
    socat = shutil.which('socat')
    kinds = ['direct'] + (['socat'] if socat else []) + tools
    bench_started = now()

    print('cti-proxy benchmark%s, %s' % (' --quick' if args.quick else '',
                                         datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')))
    print('Python %s (%s)' % (platform.python_version(), sys.executable))
    print('machine: %s; %s at start' % (machine_line(), load_line()))
    print('socat: %s' % (socat or 'not on PATH, not measured'))
    sys.stdout.flush()

    data, lines = make_burst(burst_size)
    pairs = round_trip_traffic(warmup + trips)
    messages = {size: big_message(size) for size in (small, large)}
    print('traffic: a burst of %.1f MB = %d server messages of %.0f bytes on average; round trips of a %d-byte '
          'request and a %d-byte answer; big messages of %s and %s'
          % (len(data) / MB, len(lines), len(data) / len(lines), len(pairs[0][0]), len(pairs[0][1]),
             size_text(len(messages[small])), size_text(len(messages[large]))))
    print('each measurement: %d run%s per relay (round trips: %d), the relays taking turns; figures are medians '
          'over the runs, with min..max' % (runs, '' if runs == 1 else 's', trip_runs))
    print()
    sys.stdout.flush()

    results = Results()
    with tempfile.TemporaryDirectory(prefix='cti-bench-') as workdir:
        for _ in range(runs):
            for kind in kinds:
                key = ('burst', kind)
                results.add(key, attempt(key, measure_burst, kind, workdir, data, lines))
        loads_bytes, loads_text = json_loads_seconds(lines, 3)
        for _ in range(trip_runs):
            for kind in kinds:
                key = ('round trip', kind)
                results.add(key, attempt(key, measure_round_trip, kind, workdir, pairs, warmup))
        for _ in range(runs):
            for kind in kinds:
                for size in (small, large):
                    key = ('%s message' % size_text(size), kind)
                    results.add(key, attempt(key, measure_big, kind, workdir, messages[size]))
        loads_peak = attempt(('json.loads peak memory', 'python'), json_loads_peak_mb, messages[large], workdir)
        capture_kinds = [name for name in ('ctistat', 'ctispy') if name in tools]
        capture_kinds += [name for name in ('tshark', 'tcpflow') if shutil.which(name)]
        capture_data, capture_lines = make_burst(capture_size)
        capture_path = os.path.join(workdir, 'cti.pcap')
        capture_packets = write_capture(capture_path, capture_data)
        capture_mb = os.path.getsize(capture_path) / MB
        for _ in range(runs):
            for kind in capture_kinds:
                key = ('capture', kind)
                results.add(key, attempt(key, measure_capture_read, kind, workdir, capture_path, capture_lines))

    # 1. Burst
    print('1. Burst: %.1f MB of server messages to the client; first byte sent -> last byte received by the client'
          % (len(data) / MB))
    direct = results.median(('burst', 'direct'), 'received')
    rows = []
    for kind in kinds:
        key = ('burst', kind)
        seconds = results.median(key, 'received')
        share = direct / seconds if seconds and direct else None
        is_tool = kind in tools
        rows.append([kind, fmt(seconds, '%.3f'), fmt(seconds and len(data) / MB / seconds, '%.1f'),
                     spread([len(data) / MB / value for value in results.values(key, 'received')], '%.0f'),
                     fmt(share, '%.2f'), '>= %.2f' % GOAL_BURST if is_tool else '',
                     verdict(share is not None and share >= GOAL_BURST) if is_tool else ''])
    table(['relay', 'seconds', 'MB/s', 'MB/s runs', 'vs direct', 'goal', 'result'], rows)
    print()

    # 2. Round trip
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
        is_tool = kind in tools
        rows.append([kind, fmt(median and median * 1e6, '%.1f'), spread(results.values(key, 'median'), '%.0f', 1e6),
                     fmt(p90 and p90 * 1e6, '%.1f'), fmt(added, '%+.1f'),
                     '<= %.0f' % GOAL_ROUND_TRIP_US if is_tool else '',
                     verdict(added is not None and added <= GOAL_ROUND_TRIP_US) if is_tool else ''])
    table(['relay', 'median us', 'run medians', 'p90 us', 'added us', 'goal', 'result'], rows)
    print()

    # 3. Handling
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
        goal = GOAL_HANDLING[kind]
        complete = results.complete(key)
        rows.append([kind, fmt(seconds, '%.3f'), fmt(seconds and len(lines) / seconds, '%.0f'),
                     spread(results.values(key, 'handled'), '%.2f'), fmt(share, '%.2f'), '>= %.2f' % goal,
                     verdict(share is not None and share >= goal and complete),
                     'complete' if complete else 'INCOMPLETE', fmt(results.median(key, 'peak'), '%.1f')])
    table(['tool', 'handling s', 'messages/s', 'seconds runs', 'vs json.loads', 'goal', 'result', 'output',
           'peak MB'], rows)
    print()

    # 4. Big messages
    small_key, large_key = '%s message' % size_text(small), '%s message' % size_text(large)
    print('4. Big messages: one line of %s, one of %s, each sent in %d KB pieces; first byte sent -> tool exit'
          % (size_text(len(messages[small])), size_text(len(messages[large])), PIECE // 1024))
    print('   (direct and socat: -> last byte received, for reference); peak MB: the process\'s own ru_maxrss')
    if loads_peak is not None:
        print('   for reference, a Python process that reads the %s message and json.loads it peaks at %.1f MB'
              % (size_text(len(messages[large])), loads_peak))
    rows = []
    for kind in kinds:
        first = results.median((small_key, kind), 'seconds')
        second = results.median((large_key, kind), 'seconds')
        ratio = second / first if first and second else None
        peak = results.median((large_key, kind), 'peak')
        is_tool = kind in tools
        complete = results.complete((small_key, kind)) and results.complete((large_key, kind))
        rows.append([kind, fmt(first, '%.3f'), fmt(second, '%.3f'), fmt(ratio, '%.2f'),
                     '<= %.0f' % GOAL_LINEAR if is_tool else '',
                     verdict(ratio is not None and ratio <= GOAL_LINEAR and complete) if is_tool else '',
                     fmt(peak, '%.1f') if kind != 'direct' else '', '<= %.0f' % GOAL_PEAK_MB if is_tool else '',
                     verdict(peak is not None and peak <= GOAL_PEAK_MB) if is_tool else ''])
    table(['relay', '%s s' % size_text(small), '%s s' % size_text(large), 'ratio', 'goal', 'result',
           'peak MB (%s)' % size_text(large), 'goal', 'result'], rows)
    print()

    # 5. Captures
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
        rate = len(capture_lines) / seconds if seconds else None
        goal = result = ''
        if kind == 'ctistat':
            share = rate / live_rate if rate and live_rate else None
            goal = '>= %.2f of live%s' % (GOAL_CAPTURE_VS_LIVE, ', < tshark' if tshark else '')
            result = verdict(share is not None and share >= GOAL_CAPTURE_VS_LIVE and results.complete(key)
                             and (tshark is None or seconds < tshark))
        rows.append([kind, fmt(seconds, '%.3f'), spread(results.values(key, 'seconds'), '%.2f'),
                     fmt(rate, '%.0f') if kind.startswith('cti') else '',
                     fmt(rate and live_rate and rate / live_rate, '%.2f') if kind == 'ctistat' else '',
                     goal, result])
    table(['reader', 'seconds', 'seconds runs', 'messages/s', 'vs live', 'goal', 'result'], rows)
    print('   ctistat live (3.): %s messages/s' % fmt(live_rate, '%.0f'))
    print()

    problems.extend(bench_web.browser_section(args.quick, number=6))

    print('bench took %.1f s; %s at the end' % (now() - bench_started, load_line()))
    if problems:
        print('PROBLEMS (the bench exits 1):')
        for problem in problems:
            print('  - ' + problem)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
