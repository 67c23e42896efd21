"""The terminal belongs to the user: whatever the traffic holds, what the tools show, save or say is escaped.

End-to-end: a server (and a client) send control sequences (a title-setting ESC ] 0 ; ... BEL, colours), C1
controls, bidirectional overrides and invisible format characters, in a message's class and in lines that are
not JSON; no such character reaches stdout, stderr or a saved file raw, and what is recorded gives back every
byte.  Unit tests for the escaping itself, the pretty-print depth cap, and what a huge piece costs to show.
"""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import unicodedata
import unittest

from tests.harness import (TIMEOUT, Tool, close_session, parse_raw_output, parse_spy_output, recv_exactly,
                           recv_until_eof, run_tool, seeded_rng, send_in_pieces)
from ctiproxy.escaping import SLICE, escape_text, json_bytes
from ctiproxy.framing import Fragment
from ctiproxy.outputs import MAX_INDENT_DEPTH, JsonLinesOutput, pretty_json, shown_text
from ctiproxy.recording import read_records
from ctiproxy.relay import Log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A class that sets the terminal's title, colours, and turns the text around.
HOSTILE = ('\x1b]0;pwned\x07\x1b[31mred\x7f\u009b31m\u0085\u202eevil\u202c\u2066iso\u2069\u200f\u200b'
           '\u2028\u2029\ufeff\U000e0041\x00')
HOSTILE_LINE = b'\x1b]0;title\x07 \x1b[2J \xc2\x9b \xe2\x80\xae \xe2\x81\xa6 \xff\xfe \\udc81 \x7f\r'
SERVER_TRAFFIC = (HOSTILE_LINE + b'\n'
                  + json.dumps({'class': HOSTILE, 'replyid': 1, 'text': HOSTILE}, ensure_ascii=False).encode() + b'\n'
                  + json.dumps({'class': HOSTILE, 'replyid': 1}).encode() + b'\n'   # the same, as \u escapes
                  + b'{"class": "fine", "name": "H\xc3\xa9l\xc3\xa8ne \xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb"}\n')
CLIENT_TRAFFIC = (json.dumps({'class': HOSTILE, 'commandid': 1}, ensure_ascii=False).encode() + b'\n'
                  + json.dumps({'class': HOSTILE, 'commandid': 1}, ensure_ascii=False).encode() + b'\n')


def escaped(char):
    """Whether a character must be shown as an escape (the README's rule, written from Unicode's categories)."""
    return unicodedata.category(char) in ('Cc', 'Cf', 'Zl', 'Zp') and char not in '\t\n\u200c\u200d'


def raw_controls(data):
    """The characters in data (UTF-8 bytes) that a terminal would obey or hide; bytes that are not UTF-8 fail."""
    text = data.decode('utf-8') if isinstance(data, bytes) else data
    return sorted({char for char in text if escaped(char)})


def relay(test, *args, server_traffic=SERVER_TRAFFIC, client_traffic=CLIENT_TRAFFIC, tool='ctispy'):
    """One session through a tool, traffic cut at random places; return (stdout bytes, stderr text)."""
    rng = seeded_rng(test)
    with Tool(tool, *args) as running:
        client, server = running.connect()
        send_in_pieces(client, client_traffic, rng, 16)
        test.assertEqual(recv_exactly(server, len(client_traffic)), client_traffic)
        send_in_pieces(server, server_traffic, rng, 16)
        test.assertEqual(recv_exactly(client, len(server_traffic)), server_traffic)
        close_session(test, client, server)
        status, out, err = running.finish()
    test.assertEqual(status, 0, err)
    return out, err


class ToolsEscapeTest(unittest.TestCase):
    """No control or format character from the traffic reaches the user's terminal or files raw."""

    def assertClean(self, data, what):
        self.assertEqual(raw_controls(data), [], '%s holds raw control or format characters' % what)

    def test_ctistat_report(self):
        out, err = relay(self, tool='ctistat')
        self.assertClean(out, 'the report')
        self.assertClean(err, 'stderr')
        text = out.decode('utf-8')
        self.assertIn(escape_text(HOSTILE), text)
        self.assertIn('\\x1b]0;pwned\\x07\\x1b[31m', text)
        self.assertIn('\\u202eevil', text)
        self.assertNotIn('\x1b', text)

    def test_ctistat_json_is_escaped_json_with_the_same_classes(self):
        out, err = relay(self, '--json', tool='ctistat')
        self.assertClean(out, 'the JSON report')
        report = json.loads(out)
        self.assertEqual(report['server']['classes'], {HOSTILE: 2, 'fine': 1})
        self.assertEqual(report['client']['classes'], {HOSTILE: 2})
        self.assertEqual(list(report['replies']), [HOSTILE])
        self.assertEqual(report['replies'][HOSTILE]['count'], 2)

    def test_ctispy_default(self):
        out, err = relay(self)
        self.assertClean(out, 'ctispy\'s output')
        self.assertClean(err, 'stderr')
        bodies = [body for _, direction, body in parse_spy_output(out.decode('utf-8'))
                  if direction == 'Server > Client']
        self.assertEqual(bodies[0], ['\\x1b]0;title\\x07 \\x1b[2J \\u009b \\u202e \\u2066 \\xff\\xfe \\udc81 \\x7f'])
        self.assertEqual(json.loads(bodies[1][0]), {'class': HOSTILE, 'replyid': 1, 'text': HOSTILE})
        self.assertEqual(bodies[3], ['{"class": "fine", "name": "H\u00e9l\u00e8ne \U0001f469\u200d\U0001f4bb"}'])

    def test_ctispy_pretty_print(self):
        out, err = relay(self, '--pretty-print')
        self.assertClean(out, 'ctispy --pretty-print\'s output')
        bodies = [body for _, direction, body in parse_spy_output(out.decode('utf-8'))
                  if direction == 'Client > Server']
        self.assertEqual(json.loads('\n'.join(bodies[0])), {'class': HOSTILE, 'commandid': 1})

    def test_ctispy_raw_escapes_control_bytes_and_keeps_newlines(self):
        out, err = relay(self, '--raw')
        self.assertClean(out, 'ctispy --raw\'s output')
        chunks = parse_raw_output(out)
        shown = b''.join(data for direction, data in chunks if direction == 'Server > Client')
        self.assertEqual(shown.count(b'\n'), SERVER_TRAFFIC.count(b'\n'))
        self.assertIn(b'\\x1b]0;title\\x07', shown)

    def test_ctispy_json_lines_are_safe_and_give_back_every_byte(self):
        out, err = relay(self, '--json-lines')
        self.assertClean(out, 'the JSON lines')
        records = [record for record in read_records(out.decode('utf-8').splitlines(), 'output')]
        server_lines = [record.line for record in records if record.direction == 'server']
        self.assertEqual(server_lines[0], HOSTILE_LINE)
        self.assertEqual(json.loads(server_lines[1]), {'class': HOSTILE, 'replyid': 1, 'text': HOSTILE})

    def test_ctisave_files(self):
        with tempfile.TemporaryDirectory() as folder:
            paths = [os.path.join(folder, name) for name in ('client', 'server')]
            relay(self, *paths, tool='ctisave')
            for path in paths:
                with open(path, 'rb') as file:
                    saved = file.read()
                self.assertClean(saved, path)
            with open(paths[1], 'rb') as file:
                lines = file.read().split(b'\n')
        self.assertEqual(lines[0], b'\\x1b]0;title\\x07 \\x1b[2J \\u009b \\u202e \\u2066 \\xff\\xfe \\udc81 \\x7f')
        block = lines[1:lines.index(b'}') + 1]
        self.assertEqual(json.loads(b'\n'.join(block)), {'class': HOSTILE, 'replyid': 1, 'text': HOSTILE})

    def test_a_recorded_notice_is_escaped(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, 'session.jsonl')
            with open(path, 'w', encoding='utf-8') as file:
                file.write(json.dumps({'time': '2026-11-27T13:01:02.123456', 'session': 1, 'notice': HOSTILE}) + '\n')
            status, out, err = run_tool('ctispy', '--read', path)
        self.assertEqual(status, 0, err)
        self.assertClean(out, 'the notice')
        self.assertIn(escape_text(HOSTILE), out.decode('utf-8'))

    def test_a_server_error_quoted_on_stderr_is_escaped(self):
        """ctisim client quotes the server's error_string on stderr."""
        listener = socket.socket()
        listener.bind(('127.0.0.1', 0))
        listener.listen(1)
        listener.settimeout(TIMEOUT)

        def serve():
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(TIMEOUT)
                connection.sendall(b'XiVO CTI Server Version 1.2.3\n')
                request = b''
                while not request.endswith(b'\n'):
                    request += connection.recv(4096)
                answer = {'class': 'login_id', 'replyid': json.loads(request)['commandid'], 'error_string': HOSTILE}
                connection.sendall(json.dumps(answer).encode() + b'\n')
                recv_until_eof(connection)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        try:
            status, out, err = run_tool('ctisim', 'client', '127.0.0.1', '--port', str(listener.getsockname()[1]))
        finally:
            server.join(TIMEOUT)
            listener.close()
        self.assertEqual(status, 1, err)
        self.assertIn('\\x1b]0;pwned\\x07', err)
        self.assertClean(err, 'stderr')


class EscapingTest(unittest.TestCase):

    def test_every_control_and_format_character_is_escaped(self):
        for code in range(0x110000):
            char = chr(code)
            if escaped(char) or char == '\n':
                self.assertEqual(raw_controls(escape_text(char)), [], hex(code))
                self.assertNotEqual(escape_text(char), char, hex(code))
                shown = json_bytes(json.dumps(char, ensure_ascii=False))
                self.assertEqual(raw_controls(shown), [], hex(code))
                self.assertEqual(json.loads(shown), char, hex(code))

    def test_text_people_write_is_shown_as_is(self):
        text = ('H\u00e9l\u00e8ne Dupr\u00e9 \u2019\u20ac\u2014 \U0001f469\u200d\U0001f4bb '
                '\u0645\u0631\u062d\u0628\u0627 \u4e2d\t')
        self.assertEqual(escape_text(text), text)
        self.assertEqual(json_bytes(json.dumps(text, ensure_ascii=False)),
                         json.dumps(text, ensure_ascii=False).encode('utf-8'))
        self.assertEqual(b''.join(shown_text(text.encode('utf-8'))), text.encode('utf-8'))

    def test_escapes_keep_newlines_when_asked(self):
        self.assertEqual(escape_text('a\nb\x1b'), 'a\\x0ab\\x1b')
        self.assertEqual(escape_text('a\nb\x1b', keep_newlines=True), 'a\nb\\x1b')

    def test_shown_text_follows_the_rule_for_any_bytes_and_size(self):
        rng = seeded_rng(self)
        atoms = [b'a', b' ', b'\\', b'\\udc', b'\\x', b'\xff', b'\x80', b'\xc3', b'\xc3\xa9', b'\xc2\x85', b'\x1b',
                 b'\x00', b'\t', b'\r', b'\x7f', b'\xe2\x80\xae', b'\xe2\x80\x99', b'\xf0\x9f\x98\x80',
                 b'\xf3\xa0\x81\x81', b'\xef\xbb\xbf', b'\xed\xb3\xbf']
        other_bytes = [byte for byte in range(256) if byte != ord('\n')]      # a line holds no newline
        for size in [10] * 300 + [SLICE + 5000] * 3:
            pieces, length = [], 0
            while length < size:
                pieces.append(rng.choice(atoms) if rng.random() < 0.9 else bytes([rng.choice(other_bytes)]))
                length += len(pieces[-1])
            line = b''.join(pieces)
            expected = oracle_shown(line[:-1] if line.endswith(b'\r') else line)
            self.assertEqual(b''.join(shown_text(line)).decode('utf-8'), expected, line[:200])

    def test_log_lines_are_escaped(self):
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured):
            Log('ctispy').error('TLS handshake failed: %s\nctispy: forged line' % HOSTILE)
        self.assertEqual(captured.getvalue().count('\n'), 1)
        self.assertEqual(raw_controls(captured.getvalue().rstrip('\n')), [])


def oracle_shown(line):
    """The README's rule for a line shown as text, written without the tools' code."""
    return ''.join(('\\x%02x' % ord(char) if char < '\x80' else '\\u%04x' % ord(char) if char <= '\uffff'
                    else '\\U%08x' % ord(char)) if escaped(char) else char
                   for char in line.decode('utf-8', 'backslashreplace'))


class JsonLinesTest(unittest.TestCase):

    class Sink:
        def __init__(self):
            self.data = []

        def write(self, data):
            self.data.append(bytes(data))

        def flush(self):
            pass

    class Session:
        number = 3

    def record(self, line):
        output = JsonLinesOutput(self.Sink())
        output.message(self.Session, 'server', 1732712345.5, None, line)
        output.flush()
        return b''.join(output.stream.stream.data)

    def test_a_long_text_record_is_the_record_a_short_one_would_be(self):
        rng = seeded_rng(self)
        line = bytes(rng.choice(b'ab\xff\x1b\xc2\x85\xe2\x80\xae"\\\xc3\xa9') for _ in range(3 * SLICE + 7))
        long_record = self.record(Fragment(line))
        short_records = b''.join(self.record(line[start:start + 100]) for start in range(0, 600, 100))
        self.assertEqual(raw_controls(long_record.rstrip(b'\n')), [])
        self.assertEqual(raw_controls(short_records.replace(b'\n', b'')), [])
        record, = read_records([long_record.decode('utf-8')], 'record')
        self.assertEqual(record.line, line)
        head = json.loads(long_record)
        self.assertEqual(sorted(head), ['direction', 'session', 'text', 'time'])
        self.assertEqual(list(head)[-1], 'text')


class DepthCapTest(unittest.TestCase):

    @staticmethod
    def nested(depth, leaf):
        value = leaf
        for _ in range(depth):
            value = {'a': value}
        return value

    def test_as_json_writes_it_up_to_the_cap(self):
        value = self.nested(MAX_INDENT_DEPTH - 1, [1, 'b'])     # the list is MAX_INDENT_DEPTH deep
        self.assertEqual(pretty_json(value), json.dumps(value, indent=4, sort_keys=True))

    def test_deeper_levels_on_one_line_with_sorted_keys(self):
        value = self.nested(MAX_INDENT_DEPTH, {'z': {'y': 1, 'x': [2, {'w': 3, 'v': 4}]}})
        shown = pretty_json(value)
        self.assertEqual(json.loads(shown), value)
        self.assertIn('"z": {"x": [2, {"v": 4, "w": 3}], "y": 1}', shown)
        self.assertLessEqual(max(len(line) - len(line.lstrip(' ')) for line in shown.split('\n')),
                             4 * MAX_INDENT_DEPTH)

    def test_a_deeply_nested_message_stays_within_a_small_factor(self):
        """The issue's case: a 968-byte message nested 480 deep pretty-printed to ~0.9 MB."""
        for value in (self.nested(480, 1), json.loads('[' * 900 + ']' * 900)):
            size = len(json.dumps(value, separators=(',', ':')))
            self.assertLessEqual(len(pretty_json(value)), 8 * size)

    def test_worst_case_is_bounded_by_the_indentation(self):
        """Tiny items at the deepest indented level: each costs at most 64 columns of indentation more."""
        value = json.loads('[' * MAX_INDENT_DEPTH + ','.join(['1'] * 10000) + ']' * MAX_INDENT_DEPTH)
        size = len(json.dumps(value, separators=(',', ':')))
        self.assertLessEqual(len(pretty_json(value)), (4 * MAX_INDENT_DEPTH + 3) * size / 2)


RENDER_HUGE = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from ctiproxy.framing import Fragment
    from ctiproxy.outputs import JsonLinesOutput, SaveOutput, SpyOutput

    class Sink:
        def __init__(self):
            self.size = 0
        def write(self, data):
            self.size += len(data)
        def flush(self):
            pass
        def close(self):
            pass

    class Session:
        number = 1

    def peak_kib():
        with open('/proc/self/status') as status:
            return int(next(line for line in status if line.startswith('VmHWM')).split()[1])

    piece = Fragment(b'\\xff' * (int(sys.argv[2]) << 20))
    before = peak_kib()
    for output in (SpyOutput(Sink()), JsonLinesOutput(Sink())):
        output.message(Session, 'server', time.time(), None, piece)
        output.flush()
        assert output.stream.stream.size > 4 * len(piece), output.stream.stream.size
    print(peak_kib() - before)
''')


@unittest.skipUnless(os.path.exists('/proc/self/status'), 'needs /proc/PID/status for peak RSS')
class HugePieceTest(unittest.TestCase):

    def test_showing_a_huge_piece_that_is_not_utf8_costs_bounded_memory(self):
        """A 32 MiB piece of \\xff (128 MiB shown): ctispy's display and --json-lines each add at most 16 MiB
        to the peak RSS (before: five to eight times the piece)."""
        done = subprocess.run([sys.executable, '-c', RENDER_HUGE, os.path.join(ROOT, 'cti-proxy'), '32'],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        self.assertEqual(done.returncode, 0, done.stderr.decode('utf-8', 'replace'))
        self.assertLessEqual(int(done.stdout), 16 * 1024)


if __name__ == '__main__':
    unittest.main()
