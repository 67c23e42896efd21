"""Faults, bad input and secrets: whatever the peers send or do, the tools relay every byte, stay up, show
what they can, keep their memory bounded, and end cleanly.

Each test runs the real scripts between a scripted client and server on loopback.  What a tool shows is
checked against an oracle written from the README (the stream split on newlines; a line is a message when
it is UTF-8 JSON holding an object; any other line, and what follows the last newline, is text).
"""

import collections
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import stat
import string
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import unittest

from tests.harness import (HEADER, SPY_NOTICE, TIMEOUT, Tool, close_session, closed_port, exchange, exchange_all,
                           oracle_message, parse_spy_output, recv_exactly, recv_until_eof, recv_until_eof_or_reset,
                           reset, run_tool, seeded_rng, send_in_pieces, sigint_not_ignored, sigint_restored, tool_path)
from ctiproxy.cli import save_parser, spy_parser, stat_parser

CLIENT, SERVER = 'client', 'server'
ARROWS = {'Client > Server': CLIENT, 'Server > Client': SERVER}
STOP_BOUND = 5.0          # seconds a signalled tool may take to end: a bound on waiting, not a speed
MiB = 1 << 20

setUpModule, tearDownModule = sigint_not_ignored, sigint_restored


# -- the oracle: what a tool must show for what a side sent --

def expected_lines(stream):
    """[(line bytes, message or None)] for a side's whole stream; what follows the last newline is text."""
    lines = stream.split(b'\n')
    tail = lines.pop()
    entries = [(line, oracle_message(line)) for line in lines]
    if tail:
        entries.append((tail, None))
    return entries


def escaped(char):
    """Whether the README says char is shown as an escape: a control or invisible format character
    (Unicode Cc, Cf, Zl, Zp), except tab, newline and the joiners U+200C, U+200D."""
    return unicodedata.category(char) in ('Cc', 'Cf', 'Zl', 'Zp') and char not in '\t\n\u200c\u200d'


def shown_text(line):
    """A line that is not a message, as the README says it is shown: UTF-8 where it can be, \\xff for other
    bytes, \\x1b, \\u0085, \\u202e for control and format characters (tab kept), without the CR of a CRLF."""
    if line.endswith(b'\r'):
        line = line[:-1]
    return ''.join(('\\x%02x' % ord(char) if char < '\x80' else '\\u%04x' % ord(char) if char <= '\uffff'
                    else '\\U%08x' % ord(char)) if escaped(char) else char
                   for char in line.decode('utf-8', 'backslashreplace'))


def json_escape(char):
    """'\\u202e'; '\\udb40\\udc41' beyond U+FFFF."""
    units = char.encode('utf-16-be', 'surrogatepass').hex()
    return ''.join('\\u' + units[start:start + 4] for start in range(0, len(units), 4))


def shown_json(text):
    """JSON text as the tools show and save it: each escaped character (see escaped) as a \\u escape."""
    return ''.join(json_escape(char) if escaped(char) else char for char in text)


def spy_body(line, message, pretty=False):
    """The lines ctispy shows under a header for one line of traffic."""
    if message is not None:
        if pretty:
            return shown_json(json.dumps(message, indent=4, sort_keys=True, ensure_ascii=False)).split('\n')
        return [shown_json(json.dumps(message, ensure_ascii=False))]
    text = shown_text(line)
    return [text] if text else []


def saved_file(stream):
    """What ctisave writes for a side's stream: each message pretty-printed with sorted keys, each other line
    as ctispy shows it."""
    return b''.join((shown_json(json.dumps(message, indent=4, sort_keys=True, ensure_ascii=False))
                     if message is not None else shown_text(line)).encode('utf-8') + b'\n'
                    for line, message in expected_lines(stream))


def stat_counts(stream):
    """The counts ctistat reports for a side's stream."""
    entries = expected_lines(stream)
    classes = collections.Counter()
    for _, message in entries:
        if message is not None:
            kind = message.get('class')
            classes[kind if isinstance(kind, str) else json.dumps(kind)] += 1
    return {'bytes': len(stream), 'messages': sum(1 for _, message in entries if message is not None),
            'invalid': sum(1 for _, message in entries if message is None), 'classes': dict(classes)}


def shorten(value):
    text = repr(value)
    return text if len(text) < 300 else '%s...(%d characters)' % (text[:240], len(text))


def first_difference(got, expected):
    for index, (one, other) in enumerate(zip(got, expected)):
        if one != other:
            return 'item %d: shown %s, expected %s' % (index, shorten(one), shorten(other))
    if len(got) != len(expected):
        extra = got[len(expected):] or expected[len(got):]
        return '%d items shown, %d expected; the first odd one: %s' % (len(got), len(expected), shorten(extra[0]))
    return None


# -- running a tool --

class OutputReader(threading.Thread):
    """Reads a tool's stdout to its end on a thread of its own, so that the tool never waits on the pipe."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.fd = stream.fileno()
        self.parts = []
        self.arrived = threading.Condition()
        self.start()

    def run(self):
        while True:
            try:
                data = os.read(self.fd, MiB)
            except OSError:
                data = b''
            with self.arrived:
                if data:
                    self.parts.append(data)
                self.arrived.notify_all()
            if not data:
                return

    def wait_for(self, pattern, count, timeout=TIMEOUT):
        """Wait until the output so far holds `count` matches of `pattern` (a compiled bytes regex, matching less
        than 256 bytes), each part read searched once."""
        deadline = time.monotonic() + timeout
        found, searched, tail = 0, 0, b''
        with self.arrived:
            while True:
                text = tail + b''.join(self.parts[searched:])
                searched = len(self.parts)
                found += sum(1 for match in pattern.finditer(text) if match.end() > len(tail))
                tail = text[-256:]
                remaining = deadline - time.monotonic()
                if found >= count:
                    return
                if remaining <= 0 or not self.is_alive():
                    raise AssertionError('the output showed %d of %d matches of %r' % (found, count, pattern.pattern))
                self.arrived.wait(remaining)

    def result(self, timeout=TIMEOUT):
        self.join(timeout)
        if self.is_alive():
            raise AssertionError('the tool\'s output did not end')
        return b''.join(self.parts)


def wait_exit(process, bound, what):
    try:
        return process.wait(bound)
    except subprocess.TimeoutExpired:
        raise AssertionError('%s: the tool did not end within %.0f s' % (what, bound))


def output_lines(out):
    """The lines of a tool's output (split on newlines only: U+2028 may be inside a JSON string)."""
    lines = out.decode('utf-8').split('\n')
    assert lines.pop() == '', 'the output does not end with a newline: %r' % lines[-1][-200:]
    return lines


class Run:
    """One of ctispy (with options), ctisave or ctistat (--json, or its text report with json_report=False)
    between a scripted client and server.

    check() compares what the tool showed, saved or counted with what each side sent, session by session."""

    def __init__(self, test, name, *options, json_report=True):
        self.test = test
        self.name = name
        self.options = options
        self.json_report = json_report
        args = list(options)
        if name == 'ctisave':
            folder = tempfile.mkdtemp(prefix='cti-faults-')
            test.addCleanup(shutil.rmtree, folder, True)
            self.paths = {CLIENT: os.path.join(folder, 'client'), SERVER: os.path.join(folder, 'server')}
            args = [self.paths[CLIENT], self.paths[SERVER]] + args
        if name == 'ctistat' and json_report:
            args.append('--json')
        self.tool = Tool(name, *args)
        test.addCleanup(self.tool.__exit__, None, None, None)
        test.assertIsNotNone(self.tool.port, self.tool.start_line)
        self.reader = OutputReader(self.tool.process.stdout)
        self.out = None

    def __str__(self):
        return ' '.join((self.name,) + self.options)

    def connect(self):
        return self.tool.connect()

    def finish(self, bound=TIMEOUT):
        """Wait for the tool's end; check it ended well; return its stderr."""
        status = wait_exit(self.tool.process, bound, str(self))
        self.out = self.reader.result()
        err = self.tool.start_line + self.tool.process.stderr.read().decode('utf-8', 'replace')
        self.test.assertEqual(status, 0, err)
        self.test.assertNotIn('Traceback', err)
        self.test.assertNotIn('internal error', err)
        self.test.assertNotIn('the output is incomplete', err)
        return err

    def stop(self, sig):
        """Signal the tool; it must end within STOP_BOUND seconds."""
        self.tool.process.send_signal(sig)
        return self.finish(STOP_BOUND)

    def check(self, *sessions):
        """sessions: for each session, in the order they were accepted, {CLIENT: bytes sent, SERVER: bytes sent}."""
        if self.name == 'ctisave':
            self.check_saved(sessions)
        elif self.name == 'ctistat' and self.json_report:
            self.check_stats(sessions)
        elif self.name == 'ctistat':
            self.check_text_report(sessions)
        elif '--json-lines' in self.options:
            self.check_records(sessions)
        else:
            self.check_shown(sessions)

    def assertSame(self, got, expected, what):
        difference = first_difference(got, expected)
        if difference:
            self.test.fail('%s, %s: %s' % (self, what, difference))

    def check_shown(self, sessions):
        pretty = '--pretty-print' in self.options
        entries = parse_spy_output(self.out.decode('utf-8'))
        for side in (CLIENT, SERVER):
            got = [body for _, direction, body in entries if ARROWS[direction] == side]
            expected = [spy_body(line, message, pretty) for sent in sessions
                        for line, message in expected_lines(sent[side])]
            if len(sessions) > 1:       # the order between sessions is the order of arrival
                got, expected = sorted(got), sorted(expected)
            self.assertSame(got, expected, '%s lines shown' % side)

    def check_records(self, sessions):
        records = [record for record in map(json.loads, output_lines(self.out))
                   if 'event' not in record]     # sessions' starts and ends, requests never answered
        for number, sent in enumerate(sessions, 1):
            for side in (CLIENT, SERVER):
                got = [('message', record['message']) if 'message' in record else ('text', record['text'])
                       for record in records if record['session'] == number and record.get('direction') == side]
                expected = [('message', message) if message is not None
                            else ('text', line.decode('utf-8', 'surrogateescape'))
                            for line, message in expected_lines(sent[side])]
                self.assertSame(got, expected, 'session %d, %s records' % (number, side))
        self.test.assertEqual(len(records), sum(len(expected_lines(sent[side])) for sent in sessions
                                                for side in (CLIENT, SERVER)))

    def check_saved(self, sessions):
        for number, sent in enumerate(sessions, 1):
            for side in (CLIENT, SERVER):
                path = self.paths[side] + ('' if number == 1 else '.%d' % number)
                with open(path, 'rb') as file:
                    data = file.read()
                self.test.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600, path)
                self.assertSame(data.split(b'\n'), saved_file(sent[side]).split(b'\n'),
                                'session %d, lines of the %s file' % (number, side))

    def check_stats(self, sessions):
        reports = {}
        for line in output_lines(self.out):
            report = json.loads(line)
            reports[report['session']] = report
        self.test.assertEqual(sorted(reports), list(range(1, len(sessions) + 1)), self.out[:500])
        for number, sent in enumerate(sessions, 1):
            for side in (CLIENT, SERVER):
                got = {key: reports[number][side][key] for key in ('bytes', 'messages', 'invalid', 'classes')}
                self.test.assertEqual(got, stat_counts(sent[side]), 'session %d, %s' % (number, side))

    def check_text_report(self, sessions):
        text = self.out.decode('utf-8')
        self.test.assertEqual(len(sessions), 1)
        self.test.assertEqual(len(re.findall(r'^Session #', text, re.M)), 1, text[:500])
        counts = {CLIENT: stat_counts(sessions[0][CLIENT]), SERVER: stat_counts(sessions[0][SERVER])}
        for key in ('bytes', 'messages', 'invalid'):
            self.test.assertRegex(text, r'(?m)^%s +%d +%d$' % (key, counts[CLIENT][key], counts[SERVER][key]))


ALL_KINDS = [('ctispy',), ('ctispy', '--pretty-print'), ('ctispy', '--json-lines'), ('ctisave',), ('ctistat',)]
THE_THREE = [('ctispy',), ('ctisave',), ('ctistat',)]


def json_line(message):
    return json.dumps(message, ensure_ascii=False).encode('utf-8') + b'\n'


def memory_of(pid):
    """(VmRSS, VmHWM) of a process, in bytes."""
    with open('/proc/%d/status' % pid) as status:
        fields = dict(line.split(':', 1) for line in status if ':' in line)
    return tuple(int(fields[name].split()[0]) * 1024 for name in ('VmRSS', 'VmHWM'))


# -- bad input --

def hostile_stream(side, rng, big_size=8 * MiB):
    """A side's stream of bad lines, each followed by a good message, ending in JSON cut in the middle."""
    marks = iter(range(1000))

    def good():
        return json_line({'class': 'marker', 'side': side, 'n': next(marks)})

    big = {'class': 'big', 'side': side, 'blob': 'H\u00e9l\u00e8ne \U0001f600 \\ "' * (big_size // 18)}
    bad = [
        bytes(rng.randrange(256) for _ in range(30000)),        # random bytes, with newlines of their own
        b'\xff\xfe\xfd not UTF-8 \xc3\x28 \xed\xa0\x80 \xf0\x28\x8c\x28 \xe2\x82',
        b'{"class": "bad utf-8 \xff"}',
        b'\x00', b'\x00\x00{"class": "nul"}\x00', b'{"class": "nul \x00 inside"}',
        b'', b'', b'\r', b' \t ',
        b'plain text with CRLF\r', b'{"class": "crlf message"}\r',
        b'[1,2]', b'42', b'"s"', b'null', b'[]',
        b'{"class": "cut", "list": [1, 2, ',
        b'[' * 200000 + b']' * 200000,
        b'{"a":' * 200000 + b'1' + b'}' * 200000,
        b'{"class": "two"}{"class": "objects"}', b'{"class": "trailing"} x',
        b'{"class": "digits", "n": 1' + b'0' * 5000 + b'}',     # beyond int_max_str_digits from Python 3.11
        b'{"class": "infinite", "x": 1e400, "y": -1e400}',
        b'\x1b[31mred\x07 and delete \x7f',
        b'{"class": "separators \xe2\x80\xa8 \xc2\x85 \x0b"}', b'text \xe2\x80\xa8 \xc2\x85 \x0c',
        b'\xef\xbb\xbf{"class": "after a BOM"}',
        json_line(big)[:-1],                                    # one message of 8 MB
    ]
    stream = good()
    for line in bad:
        stream += line + b'\n' + good()
    return stream + b'{"class": "unfinished", "x": [1, 2'


class BadInputTest(unittest.TestCase):
    """Whatever the bytes, each tool relays them exactly both ways, stays up, and shows each line."""

    @classmethod
    def setUpClass(cls):
        rng = seeded_rng(cls('test_hostile_streams'))
        cls.to_server = hostile_stream(CLIENT, rng)
        cls.to_client = hostile_stream(SERVER, rng)

    def test_hostile_streams(self):
        rng = seeded_rng(self)
        for kind in ALL_KINDS:
            with self.subTest(tool=' '.join(kind)):
                run = Run(self, *kind)
                client, server = run.connect()
                got_server, got_client = exchange(client, server, self.to_server, self.to_client, rng, 32768)
                self.assertTrue(got_client == self.to_client, 'the server\'s bytes were not relayed unchanged')
                self.assertTrue(got_server == self.to_server, 'the client\'s bytes were not relayed unchanged')
                close_session(self, client, server)
                run.finish()
                run.check({CLIENT: self.to_server, SERVER: self.to_client})

    def test_hostile_streams_in_ctistat_text_report(self):
        rng = seeded_rng(self)
        run = Run(self, 'ctistat', json_report=False)
        client, server = run.connect()
        exchange(client, server, self.to_server, self.to_client, rng, 32768)
        close_session(self, client, server)
        run.finish()
        run.check({CLIENT: self.to_server, SERVER: self.to_client})

    def test_oracle_sees_what_the_stream_holds(self):
        """The stream holds what the tests mean: markers shown as JSON after each bad line, an 8 MB message."""
        entries = expected_lines(self.to_client)
        markers = [message['n'] for _, message in entries if message and message.get('class') == 'marker']
        self.assertEqual(markers, list(range(len(markers))))
        self.assertGreater(len(markers), 25)
        self.assertEqual(sum(1 for line, message in entries if message and len(line) > 8 * MiB - 100), 1)
        self.assertIsNone(entries[-1][1])
        self.assertTrue(any(line.startswith(b'[[[') for line, message in entries if message is None))


class MaxMessageSizeTest(unittest.TestCase):
    """--max-message-size: 64M by default; a hostile line that never ends cannot exhaust memory."""

    def test_default_is_64M_and_documented(self):
        for name, parser in (('ctispy', spy_parser), ('ctisave', save_parser), ('ctistat', stat_parser)):
            with self.subTest(tool=name):
                args = parser().parse_args(['xivo'] + (['c', 's'] if name == 'ctisave' else []))
                self.assertEqual(args.max_message_size, 64 * MiB)
                done = subprocess.run([sys.executable, tool_path(name), '--help'], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, timeout=TIMEOUT)
                text = ' '.join(done.stdout.decode('utf-8').split())
                self.assertRegex(text, r'--max-message-size SIZE .*\(default: 64M\)')

    def test_sizes_accepted(self):
        parser = spy_parser()
        for text, size in (('1K', 1024), ('1024', 1024), ('1.5K', 1536), ('1M', MiB), ('2MiB', 2 * MiB),
                           ('64mb', 64 * MiB), ('1G', 1 << 30), ('1e3K', 1024000)):
            with self.subTest(size=text):
                self.assertEqual(parser.parse_args(['xivo', '--max-message-size', text]).max_message_size, size)

    def test_line_that_never_ends(self):
        """200 MiB without a newline, sent as fast as it goes, with --max-message-size 1M: every byte is
        relayed, the output shows it all in pieces of text, and the tool's memory stays bounded."""
        total, max_size = 200 * MiB, MiB
        alphabet = (string.ascii_letters + string.digits + ' ,;:{}[]"\\').encode()
        block = bytes(alphabet[(index * 7 + index // 97) % len(alphabet)] for index in range(MiB))
        sent_digest = hashlib.md5()
        for _ in range(total // len(block)):
            sent_digest.update(block)
        with Tool('ctispy', '--max-message-size', '1M') as tool:
            client, server = tool.connect()
            received = {'size': 0, 'digest': hashlib.md5()}
            errors = []

            def send():
                try:
                    for _ in range(total // len(block)):
                        server.sendall(block)
                    server.shutdown(socket.SHUT_WR)      # the line still has no end
                except Exception as error:
                    errors.append(error)

            def receive():
                try:
                    client.settimeout(TIMEOUT)
                    while True:
                        data = client.recv(MiB)
                        if not data:
                            return
                        received['size'] += len(data)
                        received['digest'].update(data)
                except Exception as error:
                    errors.append(error)
            threads = [threading.Thread(target=send, daemon=True), threading.Thread(target=receive, daemon=True)]
            for thread in threads:
                thread.start()
            shown, peak_rss = self.read_pieces(tool, total)
            for thread in threads:
                thread.join(TIMEOUT)
                self.assertFalse(thread.is_alive(), 'the relay did not end')
            self.assertEqual(errors, [])
            hwm = memory_of(tool.process.pid)[1]        # the session is still open: the tool is still there
            client.close()
            self.assertEqual(recv_until_eof(server), b'')
            server.close()
            status = wait_exit(tool.process, TIMEOUT, 'ctispy')
            err = tool.start_line + tool.process.stderr.read().decode('utf-8', 'replace')
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        # 64 MiB of analysis buffer, the interpreter, and room to spare; the whole line would be 200 MiB or more.
        self.assertLess(max(peak_rss, hwm), 160 * MiB, 'the tool took %d MiB for a line it should show in pieces'
                        % (max(peak_rss, hwm) // MiB))
        self.assertEqual(received['size'], total)
        self.assertEqual(received['digest'].hexdigest(), sent_digest.hexdigest(), 'the relayed bytes differ')
        pieces, shown_digest = shown
        self.assertEqual(sum(pieces), total)
        self.assertEqual(shown_digest.hexdigest(), sent_digest.hexdigest(), 'the pieces shown differ from the line')
        self.assertGreaterEqual(len(pieces), total // (2 * max_size))
        self.assertLessEqual(max(pieces), 2 * max_size, 'a piece much longer than --max-message-size')

    def read_pieces(self, tool, total):
        """Read ctispy's output, a header then a line of text for each piece, until total bytes were shown;
        return ((piece lengths, digest of the pieces), the largest VmRSS seen meanwhile)."""
        fd = tool.process.stdout.fileno()
        deadline = time.monotonic() + 3 * TIMEOUT
        pieces, digest, peak = [], hashlib.md5(), 0
        pending, expect_header = bytearray(), True
        while sum(pieces) < total:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError('only %d of %d bytes shown' % (sum(pieces), total))
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(fd, 4 * MiB)
            if not data:
                raise AssertionError('the output ended after %d of %d bytes' % (sum(pieces), total))
            pending += data
            while True:
                end = pending.find(b'\n')
                if end < 0:
                    break
                line = bytes(pending[:end])
                del pending[:end + 1]
                if expect_header:
                    self.assertRegex(line.decode('utf-8'), HEADER.pattern)
                    self.assertTrue(line.endswith(b'Server > Client'), line)
                else:
                    pieces.append(len(line))
                    digest.update(line)
                expect_header = not expect_header
            peak = max(peak, memory_of(tool.process.pid)[0])
        self.assertEqual(bytes(pending), b'')
        return (pieces, digest), peak


# -- peers that vanish --

TO_CLIENT = (b'XiVO CTI Server Version 1.2.3\r\n{"class": "login_id", "replyid": 1, "timenow": 1.5}\n'
             b'{"class": "getlist", "status": {"name": "H\xc3\xa9l\xc3\xa8ne"}}\n{"class": "cut", "list": [1, ')
TO_SERVER = b'{"class": "login_id", "commandid": 1, "userlogin": "alice"}\r\n{"class": "login_pass", "pass\xc3'


class VanishingPeerTest(unittest.TestCase):
    """A peer resets, closes or half-closes in the middle of a line: the session ends cleanly, the other
    side is closed (or keeps flowing to its end), and nothing already received is missing from the output."""

    def start(self, kind):
        run = Run(self, *kind)
        client, server = run.connect()
        rng = seeded_rng(self)
        send_in_pieces(server, TO_CLIENT, rng, 16)
        self.assertEqual(recv_exactly(client, len(TO_CLIENT)), TO_CLIENT)
        send_in_pieces(client, TO_SERVER, rng, 16)
        self.assertEqual(recv_exactly(server, len(TO_SERVER)), TO_SERVER)
        return run, client, server

    def check_vanish(self, leaving, how):
        for kind in THE_THREE:
            with self.subTest(tool=kind[0]):
                run, client, server = self.start(kind)
                gone, survivor = (server, client) if leaving == SERVER else (client, server)
                if how == 'reset':
                    reset(gone)
                    self.assertEqual(recv_until_eof_or_reset(survivor), b'')
                else:
                    gone.close()
                    self.assertEqual(recv_until_eof(survivor), b'')
                survivor.close()
                run.finish()
                run.check({CLIENT: TO_SERVER, SERVER: TO_CLIENT})

    def test_server_resets_mid_line(self):
        self.check_vanish(SERVER, 'reset')

    def test_server_closes_mid_line(self):
        self.check_vanish(SERVER, 'close')

    def test_client_resets_mid_line(self):
        self.check_vanish(CLIENT, 'reset')

    def test_client_closes_mid_line(self):
        self.check_vanish(CLIENT, 'close')

    def check_half_close(self, ending):
        rng = seeded_rng(self)
        more = b''.join(json_line({'class': 'more', 'n': number, 'pad': 'p' * (number % 300)})
                        for number in range(2000)) + b'{"class": "last", "cut'
        for kind in THE_THREE:
            with self.subTest(tool=kind[0]):
                run, client, server = self.start(kind)
                ender, other = (client, server) if ending == CLIENT else (server, client)
                ender.shutdown(socket.SHUT_WR)
                self.assertEqual(recv_until_eof(other), b'')
                send_in_pieces(other, more, rng, 4096)       # the other direction keeps flowing to its end
                self.assertTrue(recv_exactly(ender, len(more)) == more)
                other.shutdown(socket.SHUT_WR)
                self.assertEqual(recv_until_eof(ender), b'')
                client.close()
                server.close()
                run.finish()
                if ending == CLIENT:
                    run.check({CLIENT: TO_SERVER, SERVER: TO_CLIENT + more})
                else:
                    run.check({CLIENT: TO_SERVER + more, SERVER: TO_CLIENT})

    def test_client_half_closes_mid_line(self):
        self.check_half_close(CLIENT)

    def test_server_half_closes_mid_line(self):
        self.check_half_close(SERVER)


# -- slow peers --

def flood_block():
    """1 MiB of server messages, 1 KiB each; a flood repeats it."""
    lines = [json_line({'class': 'flood', 'n': number, 'pad': 'f' * 950})[:-1] for number in range(1024)]
    lines = [line + b' ' * (1023 - len(line)) + b'\n' for line in lines]
    block = b''.join(lines)
    assert len(block) == MiB
    return block


def flood_until_stalled(sock, block, limit, stall=1.0):
    """Send the block over and over until limit bytes or until sock stays unwritable stall seconds;
    return how many bytes went out.  (stall bounds the wait for a stop that has no event to wait on.)"""
    sock.setblocking(False)
    view = memoryview(block)
    sent = 0
    try:
        while sent < limit:
            _, writable, _ = select.select([], [sock], [], stall)
            if not writable:
                break
            try:
                sent += sock.send(view[sent % len(block):])
            except BlockingIOError:
                pass
    finally:
        sock.settimeout(TIMEOUT)
    return sent


def flood_bytes(block, size):
    return block * (size // len(block)) + block[:size % len(block)]


class SlowPeerTest(unittest.TestCase):
    """A client that does not read stops the server by TCP backpressure, not by the tool buffering without
    bound; and the other direction keeps flowing."""

    LIMIT = 256 * MiB           # what the server tries to push
    BOUND = 128 * MiB           # what may be in flight: 64 MiB of analysis buffer, socket buffers, room to spare

    def test_client_that_does_not_read(self):
        block = flood_block()
        requests = b''.join(json_line({'class': 'keepalive', 'commandid': number}) for number in range(500))
        with Tool('ctispy') as tool:
            reader = OutputReader(tool.process.stdout)
            client, server = tool.connect()
            pushed = flood_until_stalled(server, block, self.LIMIT)
            self.assertLess(pushed, self.BOUND, 'the server pushed %d MiB to a client that reads nothing'
                            % (pushed // MiB))
            # while the client reads nothing, its requests still reach the server
            send_in_pieces(client, requests, seeded_rng(self), 512)
            self.assertEqual(recv_exactly(server, len(requests)), requests)
            hwm = memory_of(tool.process.pid)[1]
            self.assertLess(hwm, self.BOUND, 'the tool took %d MiB' % (hwm // MiB))
            # the client reads at last: everything arrives, in order
            got = recv_exactly(client, pushed)
            self.assertTrue(got == flood_bytes(block, pushed), 'the flood arrived changed')
            server.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(client), b'')
            client.close()
            self.assertEqual(recv_until_eof(server), b'')
            server.close()
            status = wait_exit(tool.process, TIMEOUT, 'ctispy')
            out = reader.result()
            err = tool.start_line + tool.process.stderr.read().decode('utf-8', 'replace')
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        entries = parse_spy_output(out.decode('utf-8'))
        self.assertEqual(sum(1 for _, direction, _ in entries if direction == 'Client > Server'), 500)
        shown = [body for _, direction, body in entries if direction == 'Server > Client']
        expected = [spy_body(line, message) for line, message in expected_lines(flood_bytes(block, pushed))]
        self.assertTrue(shown == expected, first_difference(shown, expected))

    def test_signal_while_a_client_does_not_read(self):
        """The relay is stuck on a client that reads nothing: SIGTERM still ends the tool, and the output
        holds at least what the client got, and nothing the server did not send."""
        block = flood_block()
        with Tool('ctispy') as tool:
            reader = OutputReader(tool.process.stdout)
            client, server = tool.connect()
            pushed = flood_until_stalled(server, block, self.LIMIT)
            self.assertLess(pushed, self.BOUND)
            tool.process.send_signal(signal.SIGTERM)
            status = wait_exit(tool.process, STOP_BOUND, 'ctispy after SIGTERM')
            got = recv_until_eof_or_reset(client)
            self.assertTrue(got == flood_bytes(block, len(got)), 'the client got bytes the server did not send')
            client.close()
            server.close()
            out = reader.result()
            err = tool.start_line + tool.process.stderr.read().decode('utf-8', 'replace')
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        shown = [body for _, _, body in parse_spy_output(out.decode('utf-8'))]
        self.assertGreater(len(shown), 0)
        lines = expected_lines(flood_bytes(block, pushed))
        complete = [spy_body(line, message) for line, message in lines[:-1]]
        self.assertGreaterEqual(len(shown), got.count(b'\n'), 'a line the client got is not shown')
        self.assertTrue(shown[:-1] == complete[:len(shown) - 1], 'the lines shown are not the ones sent')
        last = flood_bytes(block, pushed).split(b'\n')[len(shown) - 1]      # whole, or its start as text
        self.assertTrue(shown[-1] == spy_body(last, oracle_message(last)) or shown_text(last).startswith(shown[-1][0]),
                        'the last line shown is not the one sent: %r' % shown[-1][0][:100])


# -- many sessions --

def random_rng(rng, index):
    return random.Random(rng.getrandbits(32) + index)


class ManySessionsTest(unittest.TestCase):

    def test_fifty_sessions_at_once(self):
        """50 sessions with --loop, all at once: each relayed intact, and ctispy shows each message whole,
        a header then exactly one JSON line, tagged with the session the message belongs to."""
        count = 50
        rng = seeded_rng(self)
        traffic = []
        for number in range(1, count + 1):
            sides = {}
            for side, key in ((CLIENT, 'commandid'), (SERVER, 'replyid')):
                lines = [json_line({'class': 'x', 'session': number, 'side': side, key: seq,
                                    'pad': 'p' * rng.choice([0, 10, 1000, 30000])}) for seq in range(20)]
                sides[side] = b''.join(line[:-1] + b'\r\n' if seq % 4 == 0 else line for seq, line in enumerate(lines))
            traffic.append(sides)
        with Tool('ctispy', '--loop') as tool:
            reader = OutputReader(tool.process.stdout)
            sessions = [tool.connect() for _ in range(count)]
            # once every client has its hello, every session is open: what follows carries session tags
            for number, (client, server) in enumerate(sessions, 1):
                hello = json_line({'class': 'hello', 'session': number})
                server.sendall(hello)
                self.assertEqual(recv_exactly(client, len(hello)), hello)
            rngs = [random_rng(rng, index) for index in range(count)]
            results = exchange_all(sessions, [(sides[CLIENT], sides[SERVER]) for sides in traffic], rngs, 2048)
            for index in range(count):
                self.assertTrue(results[index] == (traffic[index][CLIENT], traffic[index][SERVER]),
                                'session %d was not relayed intact' % (index + 1))
            for client, server in sessions:
                close_session(self, client, server)
            # the stop comes once everything is shown (how the tool stops while it is behind: test_stop.py)
            reader.wait_for(re.compile(rb'-- session #\d+ ended'), count)
            tool.process.send_signal(signal.SIGINT)
            status = wait_exit(tool.process, STOP_BOUND, 'ctispy --loop')
            out = reader.result()
            err = tool.start_line + tool.process.stderr.read().decode('utf-8', 'replace')
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        lines = out.decode('utf-8').split('\n')
        self.assertEqual(lines.pop(), '')
        lines = [line for line in lines if not SPY_NOTICE.match(line)]     # sessions' starts and ends
        self.assertEqual(len(lines), 2 * count * 41)
        seen = collections.defaultdict(list)
        for index in range(0, len(lines), 2):
            header = HEADER.match(lines[index])
            self.assertTrue(header, 'line %d is not a header: %r' % (index, lines[index][:200]))
            message = json.loads(lines[index + 1])
            tag = header.group(1)
            if message['class'] == 'hello':
                self.assertIn(tag, (None, str(message['session'])), lines[index])
                continue
            self.assertEqual(tag, str(message['session']), 'a message shown under another session\'s header')
            self.assertEqual(ARROWS[header.group(3)], message['side'])
            seen[message['session'], message['side']].append(message.get('commandid', message.get('replyid')))
        self.assertEqual(dict(seen), {(number, side): list(range(20)) for number in range(1, count + 1)
                                      for side in (CLIENT, SERVER)})


# -- signals and a closed output --

class SignalTest(unittest.TestCase):
    """SIGINT and SIGTERM, with sessions open in the middle of lines: each tool ends within a bound, closes
    the sessions, and its output, files and reports hold everything, the cut lines as text."""

    def check_signal(self, sig):
        rng = seeded_rng(self)
        for kind in ALL_KINDS:
            with self.subTest(tool=' '.join(kind)):
                run = Run(self, *(kind + ('--loop',)))
                sent = []
                client, server = run.connect()           # a first session, over before the signal
                first = {CLIENT: b'{"class": "one", "commandid": 1}\n', SERVER: b'XiVO CTI Server\n{"class": "w"}\n'}
                exchange(client, server, first[CLIENT], first[SERVER], rng)
                close_session(self, client, server)
                sent.append(first)
                pairs = []
                for number in range(2, 5):               # then three, left open with lines cut in the middle
                    client, server = run.connect()
                    traffic = {
                        CLIENT: b'{"class": "login_id", "commandid": %d}\r\n{"class": "cut %d' % (number, number),
                        SERVER: b'{"class": "welcome", "n": %d}\n\xff\xfe %d not JSON\n{"cut": ' % (number, number)}
                    exchange(client, server, traffic[CLIENT], traffic[SERVER], rng)
                    pairs.append((client, server))
                    sent.append(traffic)
                run.stop(sig)
                for client, server in pairs:
                    self.assertEqual(recv_until_eof_or_reset(client), b'')
                    self.assertEqual(recv_until_eof_or_reset(server), b'')
                    client.close()
                    server.close()
                run.check(*sent)

    def test_sigint(self):
        self.check_signal(signal.SIGINT)

    def test_sigterm(self):
        self.check_signal(signal.SIGTERM)


class ClosedOutputTest(unittest.TestCase):
    """stdout's reader goes away: the tool ends, quietly (test_cli checks ctispy's default output)."""

    def check_closed_output(self, name, *options):
        with Tool(name, *options) as tool:
            client, server = tool.connect()
            server.sendall(b'{"class": "first"}\n')
            self.assertEqual(recv_exactly(client, 19), b'{"class": "first"}\n')
            if name == 'ctispy':
                tool.read_stdout_until(b'"first"')
            tool.process.stdout.close()
            batch = b''.join(json_line({'class': 'getlist', 'tid': number, 'pad': 'x' * 100}) for number in range(500))
            try:
                for _ in range(20):
                    server.sendall(batch)
                    recv_exactly(client, len(batch))
                server.close()
                recv_until_eof_or_reset(client)
                client.close()
            except (OSError, AssertionError):     # the tool may end the session once it finds its output gone
                pass
            status = wait_exit(tool.process, TIMEOUT, ' '.join((name,) + options))
            err = tool.start_line + tool.process.stderr.read().decode('utf-8', 'replace')
            client.close()
            server.close()
        self.assertNotIn('Traceback', err)
        self.assertEqual(err.splitlines()[1:], [], 'the tool said more than its start line')
        self.assertEqual(status, 0, '%s ended with %d' % (' '.join((name,) + options), status))

    def test_ctispy_json_lines(self):
        self.check_closed_output('ctispy', '--json-lines')

    def test_ctispy_pretty_print_with_loop(self):
        self.check_closed_output('ctispy', '--pretty-print', '--loop')

    def test_ctistat_report_into_a_closed_output(self):
        self.check_closed_output('ctistat')

    def test_ctistat_json_with_loop(self):
        self.check_closed_output('ctistat', '--json', '--loop')


# -- start-up errors --

class StartErrorTest(unittest.TestCase):
    """A tool that cannot start says why on one line naming the thing at fault; exit 1 (usage errors, exit 2:
    test_cli.UsageErrorTest)."""

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix='cti-faults-')
        self.addCleanup(shutil.rmtree, self.folder, True)

    def files(self, name):
        if name != 'ctisave':
            return []
        return [os.path.join(self.folder, 'client'), os.path.join(self.folder, 'server')]

    def check_one_line(self, name, status, out, err, *needles):
        self.assertNotIn('Traceback', err)
        self.assertEqual(status, 1, err)
        self.assertEqual(out, b'')
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith(name + ': '), lines[0])
        for needle in needles:
            self.assertIn(needle, lines[0])

    def test_errors_before_listening(self):
        with socket.socket() as busy:
            busy.bind(('127.0.0.1', 0))
            busy.listen(1)
            port = str(busy.getsockname()[1])
            missing = os.path.join(self.folder, 'missing.pem')
            cases = [
                (['127.0.0.1', '--listen-addr', '127.0.0.1', '--listen-port', port], ['127.0.0.1', port]),
                (['nonexistent.invalid', '--listen-port', '0'], ['nonexistent.invalid']),
                (['127.0.0.1', '--listen-addr', 'nonexistent.invalid', '--listen-port', '0'], ['nonexistent.invalid']),
                (['127.0.0.1', '--listen-addr', '192.0.2.1', '--listen-port', '0'], ['192.0.2.1']),
                (['127.0.0.1', '--cert', missing, '--key', missing], [missing]),
                (['127.0.0.1', '--tls', '--tls-ca', missing], [missing]),
            ]
            for name in ('ctispy', 'ctisave', 'ctistat'):
                for args, needles in cases:
                    with self.subTest(tool=name, args=args[1:]):
                        status, out, err = run_tool(name, *(args[:1] + self.files(name) + args[1:]))
                        self.check_one_line(name, status, out, err, *needles)

    def test_unwritable_save_path(self):
        below_a_file = os.path.join(self.folder, 'file')
        open(below_a_file, 'w').close()
        for client_path in (os.path.join(self.folder, 'no', 'such'), os.path.join(below_a_file, 'x'), self.folder):
            with self.subTest(path=client_path):
                status, out, err = run_tool('ctisave', '127.0.0.1', client_path, os.path.join(self.folder, 's'),
                                            '--listen-port', '0', '--listen-addr', '127.0.0.1')
                self.check_one_line('ctisave', status, out, err, client_path)

    def test_unreachable_server(self):
        for name in ('ctispy', 'ctisave', 'ctistat'):
            with self.subTest(tool=name):
                port = closed_port()
                with Tool(name, *self.files(name), server=False, port=port) as tool:
                    client = tool.connect_client_only()
                    self.assertEqual(recv_until_eof_or_reset(client), b'')
                    client.close()
                    status, out, err = tool.finish()
                self.assertNotIn('Traceback', err)
                self.assertEqual(status, 1, err)
                self.assertEqual(out, b'')
                lines = err.splitlines()[1:]
                self.assertEqual(len(lines), 1, err)
                self.assertTrue(lines[0].startswith(name + ': '), lines[0])
                self.assertIn('127.0.0.1:%d' % port, lines[0])
                self.assertIn('refused', lines[0].lower())


# -- secrets --

class SecretsTest(unittest.TestCase):

    def test_saved_files_private_whatever_the_umask(self):
        """Under umask 000, every file ctisave writes, for each session of --loop, is 0600."""
        old = os.umask(0)
        try:
            run = Run(self, 'ctisave', '--loop')
        finally:
            os.umask(old)
        sent = []
        for number in range(1, 3):
            client, server = run.connect()
            traffic = {CLIENT: b'{"class": "login_pass", "password": "secret%d"}\n' % number,
                       SERVER: b'{"class": "login_pass", "sessionid": "s%d"}\n' % number}
            exchange(client, server, traffic[CLIENT], traffic[SERVER], seeded_rng(self))
            close_session(self, client, server)
            sent.append(traffic)
        run.stop(signal.SIGINT)
        run.check(*sent)         # which also checks each file's mode is 0600
        self.assertEqual(sorted(os.listdir(os.path.dirname(run.paths[CLIENT]))),
                         ['client', 'client.2', 'server', 'server.2'])

    def test_start_line_says_where_it_listens(self):
        folder = tempfile.mkdtemp(prefix='cti-faults-')
        self.addCleanup(shutil.rmtree, folder, True)
        files = {'ctisave': [os.path.join(folder, 'c'), os.path.join(folder, 's')]}
        for name in ('ctispy', 'ctisave', 'ctistat'):
            for given in (True, False):
                with self.subTest(tool=name, listen_addr=given):
                    args = [sys.executable, tool_path(name), '127.0.0.1'] + files.get(name, []) + [
                        '--listen-port', '0', '--port', str(closed_port())]
                    if given:
                        args += ['--listen-addr', '127.0.0.1']
                    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE)
                    try:
                        line = process.stderr.readline().decode('utf-8', 'replace')
                        where = r'127\.0\.0\.1' if given else r'all interfaces \((IPv4 and IPv6|IPv4)\)'
                        self.assertRegex(line, r'^%s: listening on port [1-9]\d* of %s; relaying each client to '
                                               r'127\.0\.0\.1:\d+\n$' % (name, where))
                        process.send_signal(signal.SIGINT)
                        self.assertEqual(wait_exit(process, STOP_BOUND, name), 0)
                    finally:
                        if process.poll() is None:
                            process.kill()
                        process.communicate(timeout=TIMEOUT)


class StuckOutputTest(unittest.TestCase):
    """Nobody reads stdout (ctispy xivo | less, left alone): SIGTERM still ends the tool at once,
    saying that the output is incomplete (it used to wait for ever on the blocked write)."""

    def test_sigterm_with_stdout_blocked(self):
        batch = b''.join(b'{"class": "getlist", "tid": %d, "pad": "%s"}\n' % (number, b'x' * 200)
                         for number in range(10000))          # 2.3 MB: far more than a pipe holds
        with Tool('ctispy') as tool:
            client, server = tool.connect()
            server.sendall(batch)
            self.assertEqual(recv_exactly(client, len(batch)), batch)   # the relay is not held up
            tool.process.send_signal(signal.SIGTERM)
            status = tool.process.wait(5)                      # a bound, well above the tool's own second
            err = tool.start_line + tool.process.stderr.read().decode('utf-8', 'replace')
            client.close()
            server.close()
        self.assertEqual(status, 0, err)
        self.assertIn('the output is incomplete', err)
        self.assertNotIn('Traceback', err)


class SaveFileFailureTest(unittest.TestCase):
    """A file that ctisave cannot open later (--loop) is one line naming it, exit 1, no traceback."""

    def test_second_session_file_cannot_be_opened(self):
        with tempfile.TemporaryDirectory() as folder:
            client_file, server_file = os.path.join(folder, 'client'), os.path.join(folder, 'server')
            os.mkdir(server_file + '.2')                      # where the second session would save
            with Tool('ctisave', client_file, server_file, '--loop') as tool:
                client, server = tool.connect()
                server.sendall(b'{"class": "hello", "n": 1}\n')
                recv_exactly(client, len(b'{"class": "hello", "n": 1}\n'))
                close_session(self, client, server)
                client, server = tool.connect()           # the second session: its files cannot be opened
                status = tool.process.wait(TIMEOUT)
                client.close()
                server.close()
                err = tool.start_line + tool.process.stderr.read().decode('utf-8', 'replace')
            with open(server_file, 'rb') as file:
                self.assertEqual(json.loads(file.read()), {'class': 'hello', 'n': 1})
            self.assertFalse(os.path.lexists(client_file + '.2'))   # created for a session that could not start
        self.assertEqual(status, 1, err)
        lines = [line for line in err.splitlines() if line.startswith('ctisave: ') and 'listening' not in line]
        self.assertEqual(lines, ['ctisave: cannot write %s.2: it is a directory' % server_file], err)
        self.assertNotIn('Traceback', err)


class MalformedHostTest(unittest.TestCase):
    """Names the IDNA codec rejects (an empty or 64-character label) are one line, exit 1."""

    def test_malformed_names(self):
        for args, needle in ((['a..b'], "cannot find server host 'a..b'"),
                             (['x' * 64 + '.example'], 'cannot find server host'),
                             (['127.0.0.1', '--listen-addr', 'a..b'], "cannot use listen address 'a..b'")):
            with self.subTest(args=args):
                status, out, err = run_tool('ctispy', *args)
                self.assertEqual(status, 1, err)
                self.assertEqual(err.count('\n'), 1, err)
                self.assertIn(needle, err)
                self.assertNotIn('Traceback', err)


if __name__ == '__main__':
    unittest.main()
