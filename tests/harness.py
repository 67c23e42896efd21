"""Run the real tools as processes between a scripted CTI client and server on loopback."""

import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, 'cti-proxy')
TIMEOUT = 20.0        # seconds: a bound on waiting, never a way to synchronise
# The tools run as most users run them: stdout buffered.  Any non-empty PYTHONUNBUFFERED (even '0') would make
# it unbuffered, and many machines set it; a test that wants it sets it itself (see test_hostile_use).
os.environ.pop('PYTHONUNBUFFERED', None)


def tool_path(name):
    return os.path.join(TOOLS, name)


def recv_exactly(sock, size, timeout=TIMEOUT):
    """Receive exactly size bytes (fails the test on EOF or timeout)."""
    sock.settimeout(timeout)
    parts, got = [], 0
    while got < size:
        data = sock.recv(min(size - got, 1 << 20))
        if not data:
            raise AssertionError('EOF after %d of %d bytes' % (got, size))
        parts.append(data)
        got += len(data)
    return b''.join(parts)


def recv_until_eof(sock, timeout=TIMEOUT):
    """Receive everything until the peer ends its sending."""
    sock.settimeout(timeout)
    parts = []
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return b''.join(parts)
        parts.append(data)


def random_cuts(data, rng, most=64):
    """Cut data into pieces at random places (inside UTF-8 characters too)."""
    pieces, start = [], 0
    while start < len(data):
        size = rng.randint(1, most)
        pieces.append(data[start:start + size])
        start += size
    return pieces


def send_in_pieces(sock, data, rng, most=64):
    """Send data in pieces cut at random places, each in its own TCP segment."""
    for piece in random_cuts(data, rng, most):
        sock.sendall(piece)


def read_line_unbuffered(fd):
    """Read one line from a pipe, taking no byte beyond it (a buffered readline() may take the
    next lines, which communicate() then never sees)."""
    line = b''
    while not line.endswith(b'\n'):
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return line


class Tool:
    """A tool running as a process, relaying to a scripted server socket of the test's own.

    Use as a context manager: the process is killed at the end if still running.
    """

    def __init__(self, name, *args, env=None, server=True, port=None, host='127.0.0.1', stdout=subprocess.PIPE):
        self.name = name
        self.listener = None
        if server:
            self.listener = socket.socket()
            self.listener.bind(('127.0.0.1', 0))
            self.listener.listen(64)
            port = self.listener.getsockname()[1]
        command = [sys.executable, tool_path(name), host, '--listen-addr', '127.0.0.1', '--listen-port', '0']
        if port is not None:
            command += ['--port', str(port)]
        command += list(args)
        full_env = dict(os.environ)
        full_env.pop('NO_COLOR', None)
        full_env.update(env or {})
        self.process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, env=full_env)
        self.start_line = read_line_unbuffered(self.process.stderr.fileno()).decode('utf-8', 'replace')
        match = re.search(r'listening on port (\d+)', self.start_line)
        self.port = int(match.group(1)) if match else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        if self.listener is not None:
            self.listener.close()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def connect(self):
        """Connect a client through the tool; return (client socket, server-side socket)."""
        assert self.port, 'the tool did not say where it listens: %r' % self.start_line
        client = socket.create_connection(('127.0.0.1', self.port), timeout=TIMEOUT)
        self.listener.settimeout(TIMEOUT)
        server, _ = self.listener.accept()
        server.settimeout(TIMEOUT)
        return client, server

    def connect_client_only(self):
        assert self.port, 'the tool did not say where it listens: %r' % self.start_line
        return socket.create_connection(('127.0.0.1', self.port), timeout=TIMEOUT)

    def finish(self, timeout=TIMEOUT):
        """Wait for the tool to exit; return (exit code, stdout bytes, stderr text)."""
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, self.start_line + err.decode('utf-8', 'replace')

    def stop(self, sig=signal.SIGINT, timeout=TIMEOUT):
        """Send a signal and wait for the exit; return what finish() does."""
        self.process.send_signal(sig)
        return self.finish(timeout)

    def read_stdout_until(self, needle, timeout=TIMEOUT):
        """Read the tool's stdout (unbuffered, by select) until needle appears; return what was read."""
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        got = b''
        while needle not in got:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError('%r not seen in the output: %r' % (needle, got[-500:]))
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                data = os.read(fd, 1 << 16)
                if not data:
                    raise AssertionError('output ended before %r: %r' % (needle, got[-500:]))
                got += data
        return got


def seeded_rng(test):
    """A random generator seeded per test, with the seed in failure messages via the test id."""
    seed = int(os.environ.get('CTI_TEST_SEED', '0')) or zlib.crc32(test.id().encode())
    return random.Random(seed)


HEADER = re.compile(r'^(?:\[#(\d+)\]|   ) (\d\d:\d\d:\d\d\.\d{6}) (Client > Server|Server > Client)$')


def parse_spy_output(text):
    """Split ctispy's default output into [(session tag or None, direction, [body lines])]."""
    entries = []
    for line in text.split('\n'):
        match = HEADER.match(line)
        if match:
            entries.append((match.group(1), match.group(3), []))
        elif entries:
            entries[-1][2].append(line)
    for entry in entries:
        while entry[2] and entry[2][-1] == '':
            entry[2].pop()
    return entries


# -- helpers for the relay, spy and command-line tests --

def closed_port():
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def reset(sock):
    """Close a socket with a TCP reset (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    sock.close()


def recv_until_eof_or_reset(sock, timeout=TIMEOUT):
    """Receive until the peer ends its sending or resets the connection; return what came."""
    sock.settimeout(timeout)
    parts = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except ConnectionResetError:
            return b''.join(parts)
        if not data:
            return b''.join(parts)
        parts.append(data)


def exchange(client, server, to_server, to_client, rng, most=64):
    """Send both ways at once, in random pieces, while receiving; return (server got, client got)."""
    pieces = {'client': random_cuts(to_server, rng, most), 'server': random_cuts(to_client, rng, most)}

    def send(sock, side):
        for piece in pieces[side]:
            sock.sendall(piece)

    _, _, got_server, got_client = in_parallel(
        lambda: send(client, 'client'), lambda: send(server, 'server'),
        lambda: recv_exactly(server, len(to_server)), lambda: recv_exactly(client, len(to_client)),
        what='the exchange')
    return got_server, got_client


def read_fd_until_all(fd, needles, timeout=TIMEOUT, already=b''):
    """Read a file descriptor (by select) until every needle has appeared in already + what was read;
    return already + what was read."""
    deadline = time.monotonic() + timeout
    got = already
    while not all(needle in got for needle in needles):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError('%r not all seen in the output: %r' % (needles, got[-500:]))
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                data = os.read(fd, 1 << 16)
            except OSError:         # a pty whose other end is closed
                data = b''
            if not data:
                raise AssertionError('output ended before %r: %r' % (needles, got[-500:]))
            got += data
    return got


RAW_HEADER = re.compile(br'^(?:\[#\d+\]|   ) \d\d:\d\d:\d\d\.\d{6} (Client > Server|Server > Client)\n', re.M)


def parse_raw_output(data):
    """Split ctispy --raw output (bytes) into [(direction, chunk)]: each chunk is followed by b'\\n'."""
    headers = list(RAW_HEADER.finditer(data))
    first = headers[0].start() if headers else len(data)
    assert first == 0, 'output before the first header: %r' % data[:200]
    chunks = []
    for number, header in enumerate(headers):
        end = headers[number + 1].start() if number + 1 < len(headers) else len(data)
        body = data[header.end():end]
        assert body.endswith(b'\n'), body[-200:]
        chunks.append((header.group(1).decode(), body[:-1]))
    return chunks


def notes(err):
    """The tool's stderr lines after its start line."""
    return [line for line in err.splitlines()[1:] if line]


# -- helpers shared by several test files --

def close_session(test, client, server):
    """End a session the ordinary way: the client ends its sending, then the server; both see the end."""
    client.shutdown(socket.SHUT_WR)
    test.assertEqual(recv_until_eof(server), b'')
    server.close()
    test.assertEqual(recv_until_eof(client), b'')
    client.close()


def in_parallel(*actions, what='a step run in parallel'):
    """Run each action on its own thread; return their results, or raise the first error (bounded wait)."""
    results, errors = [None] * len(actions), []

    def run(number, action):
        try:
            results[number] = action()
        except BaseException as error:      # re-raised on the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(number, action), daemon=True)
               for number, action in enumerate(actions)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise AssertionError('%s did not end in time' % what)
    if errors:
        raise errors[0]
    return results


def exchange_all(sessions, traffic, rngs, most=64):
    """exchange() on every session at once, each on its own thread: sessions[i] is (client, server), traffic[i]
    (bytes to the server, bytes to the client); return [(server got, client got)] in the same order."""
    return in_parallel(*[lambda index=index: exchange(sessions[index][0], sessions[index][1], traffic[index][0],
                                                      traffic[index][1], rngs[index], most)
                         for index in range(len(sessions))], what='a session\'s exchange')


def oracle_message(line):
    """The JSON object a line holds, or None (the README's rule, written without the tools' code)."""
    try:
        message = json.loads(line.decode('utf-8'))
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def run_tool(name, *args, timeout=TIMEOUT):
    """Run a tool to its end with exactly these arguments; return (exit code, stdout bytes, stderr text)."""
    env = dict(os.environ)
    env.pop('NO_COLOR', None)
    done = subprocess.run([sys.executable, tool_path(name)] + list(args), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=timeout)
    return done.returncode, done.stdout, done.stderr.decode('utf-8', 'replace')


_saved_handlers = []         # (signal, its handler before a *_not_ignored())


def sigint_not_ignored():
    """A tool started while SIGINT is ignored would ignore it too: make sure it is not (a setUpModule)."""
    _not_ignored(signal.SIGINT, signal.default_int_handler)


def stop_signals_not_ignored():
    """sigint_not_ignored(), and SIGHUP too (the suite run under nohup): a setUpModule for the tests that send it."""
    sigint_not_ignored()
    _not_ignored(signal.SIGHUP, signal.SIG_DFL)


def _not_ignored(number, handler):
    if signal.getsignal(number) == signal.SIG_IGN:
        _saved_handlers.append((number, signal.signal(number, handler)))


def sigint_restored():
    """Undo sigint_not_ignored() or stop_signals_not_ignored() (a tearDownModule)."""
    while _saved_handlers:
        signal.signal(*_saved_handlers.pop())


def assert_demo_ran(test, status, out, err):
    """`ctisim demo` ran its whole session through ctispy: status, stdout and stderr of its process."""
    test.assertEqual(status, 0, err)
    test.assertNotIn('Traceback', err)
    test.assertRegex(err, r'ctispy: listening on port \d+ of 127\.0\.0\.1')
    test.assertIn('ctisim: demo done', err)
    test.assertIn('"class": "login_id"', out)


# -- ctispy's headers and notices since issue 13 (answers marked, notices at sessions' ends) --

# A header may go on after the direction: '  reply to login_id, 1.4 ms', '  SLOW', '  ERROR: ...' (group 4).
# The names HEADER and parse_spy_output are rebound here, so that every test that imports them reads today's output.
HEADER = re.compile(r'^(?:\[#(\d+)\]|   ) (\d\d:\d\d:\d\d\.\d{6}) (Client > Server|Server > Client)(?:  (.*))?$')
SPY_NOTICE = re.compile(r'^(?:\[#(\d+)\]|   ) ((?:\d{4}-\d\d-\d\d )?\S+) -- (.*)$')   # a time in any --time form


def spy_notices(text):
    """The notice lines of ctispy's default output: [(session tag or None, text)]."""
    return [(match.group(1), match.group(3)) for match in map(SPY_NOTICE.match, text.split('\n')) if match]


def parse_spy_output(text):       # noqa: F811 (rebound: see HEADER above)
    """Split ctispy's default output into [(session tag or None, direction, [body lines])]; notice lines
    (a session's start and end, requests never answered, STARTTLS) are left out."""
    entries = []
    for line in text.split('\n'):
        match = HEADER.match(line)
        if match:
            entries.append((match.group(1), match.group(3), []))
        elif entries and not SPY_NOTICE.match(line):
            entries[-1][2].append(line)
    for entry in entries:
        while entry[2] and entry[2][-1] == '':
            entry[2].pop()
    return entries


def spy_marks(text):
    """What ctispy's default output says after each header's direction, in order ('' for nothing)."""
    return [match.group(4) or '' for match in map(HEADER.match, text.split('\n')) if match]


def spy_on_a_terminal(test, args, session, needles, env=None):
    """Run ctispy with a pseudo-terminal as stdout; session(tool) plays one session up to where the output
    should hold every needle, and returns (client, server) for close_session; return what the terminal
    showed (CRLF read as LF)."""
    import pty
    master, slave = pty.openpty()
    try:
        with Tool('ctispy', *args, env=env, stdout=slave) as tool:
            os.close(slave)
            slave = None
            client, server = session(tool)
            got = read_fd_until_all(master, needles)
            close_session(test, client, server)
            status, _, err = tool.finish()
        test.assertEqual(status, 0, err)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    return got.decode('utf-8').replace('\r\n', '\n')


def capture_test_end_process(process):
    """Kill a test's process if still running, reap it, and close its pipes (a cleanup)."""
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None and not stream.closed:
            stream.close()


# -- the web view (ctispy --web): helpers for tests/test_web*.py --

WEB_URL = re.compile(r'web view on (http://(\S+?)/\?token=(\S+))')


class WebSpyProcess(Tool):
    """ctispy --web 127.0.0.1:0 as a process: live between a scripted server socket and the test's clients
    (read=None), or reading a recording or capture (read=path).  `url` is the printed URL, `host` its
    'addr:port', `token` its token; `port` the relay's listening port (live); start_line, what stderr said
    so far.  Tool's connect(), stop() and finish() apply."""

    def __init__(self, *args, read=None, web='127.0.0.1:0'):
        self.name = 'ctispy'
        self.listener = None
        if read is None:
            self.listener = socket.socket()
            self.listener.bind(('127.0.0.1', 0))
            self.listener.listen(64)
            command = ['127.0.0.1', '--port', str(self.listener.getsockname()[1]), '--listen-addr', '127.0.0.1',
                       '--listen-port', '0']
        else:
            command = ['--read', read]
        command = [sys.executable, tool_path('ctispy')] + command + ['--web', web] + list(args)
        env = dict(os.environ)
        env.pop('NO_COLOR', None)
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, env=env)
        self.start_line = ''
        line = self.web_read_stderr_until('web view on ')
        match = WEB_URL.search(line)
        assert match, 'no web view URL: %r' % self.start_line
        self.url, self.host, self.token = match.groups()
        self.web_port = int(self.host.rsplit(':', 1)[1])
        self.port = None
        if read is None:
            self.port = int(re.search(r'listening on port (\d+)',
                                      self.web_read_stderr_until('listening on port')).group(1))

    def web_read_stderr_until(self, needle):
        """Read stderr a line at a time until a line holds needle; return that line."""
        while True:
            line = read_line_unbuffered(self.process.stderr.fileno()).decode('utf-8', 'replace')
            self.start_line += line
            if needle in line:
                return line
            assert line, 'stderr ended before %r: %r' % (needle, self.start_line)

    def web_request(self, path, token=True, headers=None, method='GET'):
        """(status, headers as a dict with lower-case names, body) of one request to the web view."""
        import http.client
        if token:
            path += ('&' if '?' in path else '?') + 'token=' + self.token
        connection = http.client.HTTPConnection('127.0.0.1', self.web_port, timeout=TIMEOUT)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, {name.lower(): value for name, value in response.getheaders()}, response.read()
        finally:
            connection.close()

    def web_json(self, path):
        """The JSON of a 200 answer."""
        status, headers, body = self.web_request(path)
        assert status == 200 and headers['content-type'] == 'application/json', (status, body[:300])
        return json.loads(body.decode('utf-8'))

    def web_events(self):
        """An open event stream (web_EventStream)."""
        return web_EventStream(self.web_port, self.token)


class web_EventStream:
    """A client of the web view's /api/events: next_event() returns (event name, data) in order."""

    def __init__(self, port, token):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
        self.sock.sendall(('GET /api/events?token=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n'
                           % (token, port)).encode())
        self.file = self.sock.makefile('rb')
        self.status = int(self.file.readline().split()[1])
        self.headers = {}
        while True:
            line = self.file.readline().decode('latin-1').rstrip('\r\n')
            if not line:
                break
            name, _, value = line.partition(':')
            self.headers[name.strip().lower()] = value.strip()

    def next_event(self):
        """The next event (name, parsed data); (None, None) at the end of the stream."""
        name, data = None, []
        while True:
            line = self.file.readline()
            if not line:
                return None, None
            line = line.decode('utf-8').rstrip('\n')
            if not line:
                if name is not None:
                    return name, json.loads('\n'.join(data))
                continue
            field, _, value = line.partition(':')
            if field == 'event':
                name = value.strip()
            elif field == 'data':
                data.append(value[1:] if value.startswith(' ') else value)

    def wait_for_rows(self, session, total):
        """Read events until one says session has at least total rows; return the events read."""
        seen = []
        while True:
            event = self.next_event()
            assert event[0] is not None, 'the stream ended before %d rows of session %d: %r' % (total, session, seen)
            seen.append(event)
            if event[0] == 'rows' and event[1]['session'] == session and event[1]['total'] >= total:
                return seen

    def close(self):
        self.file.close()
        self.sock.close()


class FolderTestCase(unittest.TestCase):
    """A test case with a temporary folder of its own (self.folder), removed after each test."""

    folder_prefix = 'cti-test-'

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix=self.folder_prefix)
        self.addCleanup(shutil.rmtree, self.folder)

    def write(self, name, data):
        """Write data (bytes, or text with surrogate escapes) to a file of the folder; return its path."""
        path = os.path.join(self.folder, name)
        with open(path, 'wb') as file:
            file.write(data if isinstance(data, bytes) else data.encode('utf-8', 'surrogateescape'))
        return path
