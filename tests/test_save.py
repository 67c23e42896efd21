"""End-to-end tests of ctisave: the real script between a scripted client and server, writing real files."""

import copy
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

from tests.harness import TIMEOUT, Tool, close_session, recv_exactly, seeded_rng, send_in_pieces, tool_path

# Each item: (what goes on the wire, what the file must hold for it: the message, or the line as ctispy shows it:
# bytes that are not UTF-8 and control characters escaped, without the CR of a CRLF).
SERVER_ITEMS = [
    (b'XiVO CTI Server Version 1.2.3\n', b'XiVO CTI Server Version 1.2.3'),
    (b'{"timenow": 1732712345.5, "class": "login_id", "replyid": 1, "sessionid": "4c9a"}\n',
     {'class': 'login_id', 'replyid': 1, 'sessionid': '4c9a', 'timenow': 1732712345.5}),
    (b'{"class": "getlist", "function": "updatestatus", "tid": 17, "timenow": 1.0, '
     b'"status": {"name": "H\\u00e9l\\u00e8ne \xf0\x9f\x98\x80", "availstate": "away"}}\n',
     {'class': 'getlist', 'function': 'updatestatus', 'tid': 17, 'timenow': 1.0,
      'status': {'name': 'H\u00e9l\u00e8ne \U0001f600', 'availstate': 'away'}}),
    (b'{"class": "broken", \n', b'{"class": "broken", '),
    (b'\xff\xfe not UTF-8 \x1b[0m\r\n', b'\\xff\\xfe not UTF-8 \\x1b[0m'),
    (b'{"z": [1, 2.5, null, true, false, {}, [], {"k": "v"}], "class": "keepalive", '
     b'"a": {"y": -1e-07, "b": "say \\"hi\\"\\n"}, "replyid": 3, "timenow": 2.25}\r\n',
     {'z': [1, 2.5, None, True, False, {}, [], {'k': 'v'}], 'class': 'keepalive',
      'a': {'y': -1e-07, 'b': 'say "hi"\n'}, 'replyid': 3, 'timenow': 2.25}),
    (b'{"class": "getlist", "function": "updateconfig", "tid": "18", "replyid": 2}\n',
     {'class': 'getlist', 'function': 'updateconfig', 'tid': '18', 'replyid': 2}),
    (b'{"class": "unfinished', b'{"class": "unfinished'),          # no newline: the end of the direction
]
CLIENT_ITEMS = [
    (b'{"class": "login_id", "commandid": 1, "userlogin": "alice", "company": "default"}\n',
     {'class': 'login_id', 'commandid': 1, 'userlogin': 'alice', 'company': 'default'}),
    (b'{"class": "getlist", "commandid": 2, "function": "listid", "tid": "17"}\r\n',
     {'class': 'getlist', 'commandid': 2, 'function': 'listid', 'tid': '17'}),
    (b'plain text from the client\n', b'plain text from the client'),
    (b'{"class": "chitchat", "commandid": 4, "text": "H\xc3\xa9l\xc3\xa8ne \xe2\x82\xac \xf0\x9f\x98\x80"}\n',
     {'class': 'chitchat', 'commandid': 4, 'text': 'H\u00e9l\u00e8ne \u20ac \U0001f600'}),
    (b'{"class": "keepalive", "commandid": 3}\n', {'class': 'keepalive', 'commandid': 3}),
    (b'trailing words', b'trailing words'),
]


class SaveTool(Tool):
    """ctisave started as its usage line shows it: HOST CLIENTFILE SERVERFILE, then the options.

    Otherwise the same as harness.Tool (which puts its relay options between HOST and the tool's arguments).
    """

    def __init__(self, client_path, server_path, *options):
        self.name = 'ctisave'
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(64)
        command = [sys.executable, tool_path('ctisave'), '127.0.0.1', client_path, server_path,
                   '--listen-addr', '127.0.0.1', '--listen-port', '0',
                   '--port', str(self.listener.getsockname()[1])] + list(options)
        env = dict(os.environ)
        env.pop('NO_COLOR', None)
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, env=env)
        self.start_line = self.process.stderr.readline().decode('utf-8', 'replace')
        match = re.search(r'listening on port (\d+)', self.start_line)
        self.port = int(match.group(1)) if match else None


def wire(items):
    return b''.join(data for data, _ in items)


def expected_entries(items, shows=lambda message: True, strip=(), text=True):
    """What a file must hold for items: [message dict or raw line bytes], after the filters a test asked for."""
    entries = []
    for _, entry in items:
        if isinstance(entry, bytes):
            if text:
                entries.append(entry)
        elif shows(entry):
            entry = copy.deepcopy(entry)
            for field in strip:
                *parents, last = field.split('.')
                parent = entry
                for key in parents:
                    parent = parent.get(key) if isinstance(parent, dict) else None
                if isinstance(parent, dict):
                    parent.pop(last, None)
            entries.append(entry)
    return entries


def rendered(entries):
    """The exact bytes the spec asks for: each message pretty-printed with sorted keys, each other line as shown."""
    return b''.join((json.dumps(entry, indent=4, sort_keys=True, ensure_ascii=False).encode('utf-8')
                     if isinstance(entry, dict) else entry) + b'\n' for entry in entries)


def parse_saved(data):
    """Read a saved file back: [message dict for each pretty-printed block, raw bytes for each other line]."""
    if not data:
        return []
    if not data.endswith(b'\n'):
        raise AssertionError('the file does not end with a newline: %r' % data[-80:])
    lines = data[:-1].split(b'\n')
    entries, index = [], 0
    while index < len(lines):
        line = lines[index]
        if line == b'{':
            end = lines.index(b'}', index)
            entries.append(json.loads(b'\n'.join(lines[index:end + 1]).decode('utf-8')))
            index = end + 1
        else:
            entries.append(json.loads(line.decode('utf-8')) if line == b'{}' else line)
            index += 1
    return entries


def read(path):
    with open(path, 'rb') as file:
        return file.read()


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def wait_for_content(path, expected, timeout=TIMEOUT):
    """Poll a file until it holds exactly expected (there is no event to wait on); fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        data = read(path)
        if data == expected:
            return data
        if time.monotonic() > deadline:
            raise AssertionError('%s never held what was expected; it holds %r' % (path, data[-300:]))
        time.sleep(0.01)


def exchange(test, client, server, rng, client_traffic, server_traffic):
    """Send each side's traffic, cut at random places, and check it arrives unchanged on the other side."""
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)      # each piece goes out at once
    send_in_pieces(server, server_traffic, rng)
    test.assertEqual(recv_exactly(client, len(server_traffic)), server_traffic)
    send_in_pieces(client, client_traffic, rng)
    test.assertEqual(recv_exactly(server, len(client_traffic)), client_traffic)


class SaveTestCase(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='ctisave-test-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.client_path = os.path.join(self.dir, 'cti-client')
        self.server_path = os.path.join(self.dir, 'cti-server')

    def save_session(self, *options, rng=None, client_items=CLIENT_ITEMS, server_items=SERVER_ITEMS,
                     client_path=None, server_path=None):
        """One whole session through ctisave; return (client file bytes, server file bytes)."""
        client_path = client_path or self.client_path
        server_path = server_path or self.server_path
        rng = rng or seeded_rng(self)
        with SaveTool(client_path, server_path, *options) as tool:
            client, server = tool.connect()
            exchange(self, client, server, rng, wire(client_items), wire(server_items))
            close_session(self, client, server)
            status, out, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        self.assertEqual(out, b'')
        return read(client_path), read(server_path)

    def assertSaved(self, data, entries):
        """The file holds entries, block by block, and byte for byte as the spec renders them."""
        self.assertEqual(parse_saved(data), entries)
        self.assertEqual(data, rendered(entries))


class SaveContentTest(SaveTestCase):

    def test_each_message_in_its_file_in_order(self):
        client_data, server_data = self.save_session()
        self.assertSaved(client_data, expected_entries(CLIENT_ITEMS))
        self.assertSaved(server_data, expected_entries(SERVER_ITEMS))

    def test_non_ascii_written_as_characters(self):
        client_data, server_data = self.save_session()
        self.assertIn('"name": "H\u00e9l\u00e8ne \U0001f600"'.encode('utf-8'), server_data)
        self.assertIn('"text": "H\u00e9l\u00e8ne \u20ac \U0001f600"'.encode('utf-8'), client_data)
        self.assertNotIn(b'\\u00e9', server_data)

    def test_lone_surrogate_kept_readable(self):
        items = [(b'{"class": "odd", "name": "\\ud83d alone"}\n', {'class': 'odd', 'name': '\ud83d alone'})]
        client_data, server_data = self.save_session(client_items=items, server_items=items)
        for data in (client_data, server_data):
            data.decode('utf-8')               # the file stays UTF-8
            self.assertEqual(parse_saved(data), [{'class': 'odd', 'name': '\ud83d alone'}])

    def test_two_saves_of_the_same_traffic_are_identical(self):
        rng = seeded_rng(self)               # one generator: the two sessions are cut differently
        first = self.save_session(rng=rng)
        second = self.save_session(rng=rng, client_path=self.client_path + '-again',
                                   server_path=self.server_path + '-again')
        self.assertEqual(first, second)

    def test_options_between_host_and_files(self):
        """ctisave HOST [options] CLIENTFILE SERVERFILE, as argparse allows and as harness.Tool starts it."""
        rng = seeded_rng(self)
        with Tool('ctisave', self.client_path, self.server_path, '--strip', 'timenow') as tool:
            if tool.port is None:
                self.fail('ctisave did not start: %s' % tool.finish()[2])
            client, server = tool.connect()
            exchange(self, client, server, rng, wire(CLIENT_ITEMS), wire(SERVER_ITEMS))
            close_session(self, client, server)
            status, _, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertSaved(read(self.server_path), expected_entries(SERVER_ITEMS, strip=['timenow']))

    def test_empty_session_leaves_empty_files(self):
        with SaveTool(self.client_path, self.server_path) as tool:
            client, server = tool.connect()
            close_session(self, client, server)
            status, _, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertEqual((read(self.client_path), read(self.server_path)), (b'', b''))


class SaveFilterTest(SaveTestCase):

    def check(self, options, shows=lambda message: True, strip=(), text=True):
        client_data, server_data = self.save_session(*options)
        self.assertSaved(client_data, expected_entries(CLIENT_ITEMS, shows, strip, text))
        self.assertSaved(server_data, expected_entries(SERVER_ITEMS, shows, strip, text))
        return client_data, server_data

    def test_strip(self):
        fields = ('timenow', 'commandid', 'replyid', 'status.name')
        options = [word for field in fields for word in ('--strip', field)]
        client_data, server_data = self.check(options, strip=fields)
        for field in (b'"timenow"', b'"commandid"', b'"replyid"', b'"name"'):
            self.assertNotIn(field, client_data + server_data)
        self.assertIn(b'"availstate": "away"', server_data)

    def test_include_class(self):
        self.check(['--include', 'class=getlist'], shows=lambda m: m.get('class') == 'getlist', text=False)

    def test_include_matches_string_or_json(self):
        self.check(['--include', 'tid=17'], shows=lambda m: m.get('tid') in ('17', 17), text=False)

    def test_include_several_values_and_keys(self):
        options = ['--include', 'class=getlist', '--include', 'class=login_id', '--include', 'tid=17']
        self.check(options, shows=lambda m: m.get('class') in ('getlist', 'login_id') and m.get('tid') in ('17', 17),
                   text=False)

    def test_exclude(self):
        options = ['--exclude', 'class=keepalive', '--exclude', 'class=getlist']
        self.check(options, shows=lambda m: m.get('class') not in ('keepalive', 'getlist'))

    def test_include_exclude_and_strip_together(self):
        options = ['--include', 'class=getlist', '--include', 'class=login_id', '--exclude', 'function=listid',
                   '--strip', 'timenow']
        self.check(options, shows=lambda m: m.get('class') in ('getlist', 'login_id') and m.get('function') != 'listid',
                   strip=['timenow'], text=False)


class SaveSafetyTest(SaveTestCase):

    def test_files_are_private_and_an_earlier_save_replaced(self):
        """A new file is created 0600; an earlier save (0600 too) is emptied once the tool can start.
        (An existing file keeps its mode: test_save_files.)"""
        with open(self.client_path, 'wb') as file:
            file.write(b'old content, much longer than anything the session will write ' * 100)
        os.chmod(self.client_path, 0o600)
        with SaveTool(self.client_path, self.server_path) as tool:
            self.assertIsNotNone(tool.port, tool.start_line)
            # Opened before saying it listens: both files exist, private and empty, before any session.
            self.assertEqual((mode_of(self.client_path), mode_of(self.server_path)), (0o600, 0o600))
            self.assertEqual(read(self.client_path), b'')
            client, server = tool.connect()
            exchange(self, client, server, seeded_rng(self), wire(CLIENT_ITEMS), wire(SERVER_ITEMS))
            close_session(self, client, server)
            status, _, err = tool.finish()
        self.assertEqual(status, 0, err)
        self.assertEqual((mode_of(self.client_path), mode_of(self.server_path)), (0o600, 0o600))
        self.assertSaved(read(self.client_path), expected_entries(CLIENT_ITEMS))

    def test_ctrl_c_mid_session_keeps_every_message(self):
        with SaveTool(self.client_path, self.server_path) as tool:
            client, server = tool.connect()
            # The session stays open: the fragments at the ends are not finished by any newline.
            exchange(self, client, server, seeded_rng(self), wire(CLIENT_ITEMS), wire(SERVER_ITEMS))
            status, _, err = tool.stop(signal.SIGINT)
            client.close()
            server.close()
        self.assertNotIn('Traceback', err)
        self.assertSaved(read(self.client_path), expected_entries(CLIENT_ITEMS))
        self.assertSaved(read(self.server_path), expected_entries(SERVER_ITEMS))
        self.assertEqual((mode_of(self.client_path), mode_of(self.server_path)), (0o600, 0o600))

    def test_each_message_is_in_the_file_at_once(self):
        """Flushed as handled: the file shows the messages while the session is open, and SIGKILL keeps them."""
        client_items, server_items = CLIENT_ITEMS[:-1], SERVER_ITEMS[:-1]     # whole lines only
        client_expected = rendered(expected_entries(client_items))
        server_expected = rendered(expected_entries(server_items))
        with SaveTool(self.client_path, self.server_path) as tool:
            client, server = tool.connect()
            exchange(self, client, server, seeded_rng(self), wire(client_items), wire(server_items))
            wait_for_content(self.client_path, client_expected)
            wait_for_content(self.server_path, server_expected)
            tool.process.kill()
            tool.process.wait(TIMEOUT)
            client.close()
            server.close()
        self.assertEqual(read(self.client_path), client_expected)
        self.assertEqual(read(self.server_path), server_expected)

    def test_loop_numbers_the_files_of_later_sessions(self):
        rng = seeded_rng(self)

        def traffic(number):
            return ([(b'{"class": "hello", "session": %d}\n' % number, {'class': 'hello', 'session': number})],
                    [(b'XiVO CTI Server Version %d\n' % number, b'XiVO CTI Server Version %d' % number),
                     (b'{"session": %d, "class": "welcome"}\n' % number, {'class': 'welcome', 'session': number})])

        with SaveTool(self.client_path, self.server_path, '--loop') as tool:
            first = tool.connect()
            exchange(self, first[0], first[1], rng, wire(traffic(1)[0]), wire(traffic(1)[1]))
            second = tool.connect()           # while the first session is still open
            exchange(self, second[0], second[1], rng, wire(traffic(2)[0]), wire(traffic(2)[1]))
            close_session(self, *first)
            close_session(self, *second)
            third = tool.connect()
            exchange(self, third[0], third[1], rng, wire(traffic(3)[0]), wire(traffic(3)[1]))
            close_session(self, *third)
            status, _, err = tool.stop(signal.SIGINT)
        self.assertNotIn('Traceback', err)
        for number, suffix in ((1, ''), (2, '.2'), (3, '.3')):
            client_items, server_items = traffic(number)
            with self.subTest(session=number):
                self.assertSaved(read(self.client_path + suffix), expected_entries(client_items))
                self.assertSaved(read(self.server_path + suffix), expected_entries(server_items))
                self.assertEqual((mode_of(self.client_path + suffix), mode_of(self.server_path + suffix)),
                                 (0o600, 0o600))
        self.assertEqual(sorted(os.listdir(self.dir)),
                         ['cti-client', 'cti-client.2', 'cti-client.3', 'cti-server', 'cti-server.2', 'cti-server.3'])


class SaveBadPathTest(SaveTestCase):

    def assertRefused(self, client_path, server_path, bad_path):
        with SaveTool(client_path, server_path) as tool:
            status, out, err = tool.finish()
            self.assertIsNone(tool.port)
        self.assertEqual(status, 1, err)
        self.assertEqual(out, b'')
        lines = err.strip('\n').split('\n')
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith('ctisave: '), err)
        self.assertIn(bad_path, lines[0])
        self.assertNotIn('listening', err)

    def test_missing_folder(self):
        bad = os.path.join(self.dir, 'no-such-folder', 'cti-client')
        self.assertRefused(bad, self.server_path, bad)

    def test_a_directory(self):
        self.assertRefused(self.client_path, self.dir, self.dir)

    def test_below_a_file(self):
        with open(self.client_path, 'wb'):
            pass
        bad = os.path.join(self.client_path, 'cti-server')
        self.assertRefused(self.client_path, bad, bad)

    @unittest.skipIf(os.geteuid() == 0, 'root may write anywhere')
    def test_no_permission(self):
        locked = os.path.join(self.dir, 'locked')
        os.mkdir(locked, 0o500)
        self.addCleanup(os.chmod, locked, 0o700)
        bad = os.path.join(locked, 'cti-server')
        self.assertRefused(self.client_path, bad, bad)


if __name__ == '__main__':
    unittest.main()
