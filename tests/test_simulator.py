"""The simulated CTI server and client of ctisim: the real script, talked to over loopback sockets."""

import json
import re
import signal
import socket
import subprocess
import sys
import unittest

from tests.harness import TIMEOUT, read_line_unbuffered, tool_path

BANNER = b'XiVO CTI Server Version 1.2.3 (simulated)\n'
NAMES = ['H\u00e9l\u00e8ne Dupr\u00e9', 'J\u00fcrgen Gro\u00df', 'Zo\u00eb \U0001f600']


def ctisim(*args):
    """Run ctisim to its end; return (exit code, stdout, stderr)."""
    process = subprocess.run([sys.executable, tool_path('ctisim')] + list(args), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    return process.returncode, process.stdout.decode('utf-8'), process.stderr.decode('utf-8')


class SimServer:
    """`ctisim server` on a free loopback port, as a process; a context manager that kills it at the end."""

    def __init__(self, *args):
        command = [sys.executable, tool_path('ctisim'), 'server', '--port', '0', '--listen-addr', '127.0.0.1',
                   '--events', '0'] + list(args)
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.start_line = read_line_unbuffered(self.process.stderr.fileno()).decode('utf-8', 'replace')
        match = re.search(r'listening on port (\d+)', self.start_line)
        self.port = int(match.group(1)) if match else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()

    def connect(self):
        """A new client session; the banner is read and checked."""
        assert self.port, 'ctisim did not say where it listens: %r' % self.start_line
        talk = Talk(socket.create_connection(('127.0.0.1', self.port), timeout=TIMEOUT))
        assert talk.read_line() == BANNER
        return talk

    def stop(self, sig=signal.SIGINT):
        """Stop the server with sig; return (exit code, stderr text)."""
        self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=TIMEOUT)
        return self.process.returncode, self.start_line + err.decode('utf-8', 'replace')


def refuse_constant(name):
    raise AssertionError('not JSON: %s' % name)


class Talk:
    """One client connection: send requests with increasing commandids, read lines and messages."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b''
        self.commandid = 0
        self.lines = []                # every line received, as bytes

    def read_line(self):
        while b'\n' not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError('EOF, %r left' % self.buffer)
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b'\n')
        self.lines.append(line + b'\n')
        return line + b'\n'

    def read_message(self):
        """The next message, which must be JSON proper (NaN or Infinity in it fails the test)."""
        return json.loads(self.read_line().decode('ascii'), parse_constant=refuse_constant)

    def send(self, message):
        self.sock.sendall((json.dumps(message) + '\n').encode('utf-8'))

    def ask(self, class_, **fields):
        """Send a request; return (its answer, the messages that came before it)."""
        self.commandid += 1
        message = {'class': class_, 'commandid': self.commandid}
        message.update(fields)
        self.send(message)
        return self.answer_to(self.commandid)

    def answer_to(self, commandid):
        before = []
        while True:
            message = self.read_message()
            if message.get('replyid') == commandid:
                return message, before
            before.append(message)

    def read_until(self, wanted):
        """Read messages until wanted(message); return them all, the wanted one last."""
        messages = [self.read_message()]
        while not wanted(messages[-1]):
            messages.append(self.read_message())
        return messages

    def log_in(self, login='alice'):
        """The login sequence; return the login_capas answer and the two messages that follow it."""
        answer, _ = self.ask('login_id', userlogin=login, company='default', xivoversion='1.2')
        answer, _ = self.ask('login_pass', hashedpassword='0' * 40)
        capas, _ = self.ask('login_capas', capaid=answer['capalist'][0], state='available')
        return capas, [self.read_message(), self.read_message()]

    def quit(self):
        """Stop sending; return what the server sent until it closed (once; then b'')."""
        if self.sock.fileno() < 0:
            return b''
        self.sock.shutdown(socket.SHUT_WR)
        rest = self.buffer
        while True:
            data = self.sock.recv(65536)
            if not data:
                break
            rest += data
        self.sock.close()
        return rest


def is_status(listname, tid):
    return lambda message: (message.get('function') == 'updatestatus' and message.get('listname') == listname
                            and message.get('tid') == tid and 'replyid' not in message)


class SimulatorServerTest(unittest.TestCase):

    def setUp(self):
        self.server = SimServer('--users', '9')
        self.addCleanup(self.server.__exit__)
        self.talk = self.server.connect()

    def tearDown(self):
        self.talk.quit()
        status, err = self.server.stop()
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)

    def test_start_line_says_where(self):
        self.assertRegex(self.server.start_line,
                         r'^ctisim: simulated CTI server listening on port \d+ of 127\.0\.0\.1; 9 users\n$')

    def test_login_sequence(self):
        answer, before = self.talk.ask('login_id', userlogin='helene', company='default')
        self.assertEqual(before, [])
        self.assertEqual(answer['class'], 'login_id')
        self.assertEqual(answer['replyid'], 1)
        self.assertRegex(answer['sessionid'], r'^\w{10}$')
        self.assertEqual(answer['xivoversion'], '1.2')
        answer, _ = self.talk.ask('login_pass', hashedpassword='0' * 40)
        self.assertEqual((answer['class'], answer['capalist'], answer['replyid']), ('login_pass', [1], 2))
        answer, _ = self.talk.ask('login_capas', capaid=1, state='away')
        self.assertEqual((answer['class'], answer['replyid'], answer['userid']), ('login_capas', 3, '2'))
        self.assertEqual(answer['presence'], 'away')
        for capability in ('regcommands', 'userstatus', 'phonestatus', 'services'):
            self.assertIn(capability, answer['capas'])
        self.assertIn('away', answer['capas']['userstatus'])
        self.assertIn('8', answer['capas']['phonestatus'])
        config, status = self.talk.read_message(), self.talk.read_message()
        self.assertEqual((config['class'], config['function'], config['listname'], config['tid']),
                         ('getlist', 'updateconfig', 'users', '2'))
        self.assertEqual(config['config']['fullname'], NAMES[0])
        self.assertEqual((status['function'], status['tid'], status['status']['availstate']),
                         ('updatestatus', '2', 'away'))
        for message in (config, status):
            self.assertNotIn('replyid', message)

    def test_getlist_each_list(self):
        self.talk.log_in()
        sizes = {'users': 9, 'phones': 9, 'agents': 9, 'queues': 3}
        for listname, size in sizes.items():
            answer, _ = self.talk.ask('getlist', function='listid', listname=listname, tipbxid='xivo')
            self.assertEqual((answer['class'], answer['function'], answer['listname'], answer['tipbxid']),
                             ('getlist', 'listid', listname, 'xivo'))
            self.assertEqual(answer['list'], [str(number) for number in range(1, size + 1)])
            for tid in answer['list']:
                for function, key in (('updateconfig', 'config'), ('updatestatus', 'status')):
                    reply, _ = self.talk.ask('getlist', function=function, listname=listname, tipbxid='xivo', tid=tid)
                    self.assertEqual((reply['function'], reply['listname'], reply['tid']), (function, listname, tid))
                    self.assertIsInstance(reply[key], dict)
                    self.assertTrue(reply[key])

    def test_users_config(self):
        self.talk.log_in()
        names = [self.talk.ask('getlist', function='updateconfig', listname='users', tid=str(tid))[0]['config']
                 for tid in range(1, 10)]
        self.assertEqual([config['fullname'] for config in names[1:4]], NAMES)
        self.assertEqual(len({config['loginclient'] for config in names}), 9)

    def test_getlist_errors(self):
        self.talk.log_in()
        for fields, error in (({'function': 'listid', 'listname': 'voicemails'}, 'unknown listname'),
                              ({'function': 'updateconfig', 'listname': 'users', 'tid': '10'}, 'unknown id'),
                              ({'function': 'frobnicate', 'listname': 'users'}, 'unknown function')):
            answer, _ = self.talk.ask('getlist', **fields)
            self.assertEqual((answer['class'], answer['error_string'], answer['replyid']),
                             ('getlist', error, self.talk.commandid))

    def test_dial_and_hangup(self):
        self.talk.log_in()
        answer, _ = self.talk.ask('ipbxcommand', command='dial', destination='exten:xivo/1002')
        self.assertEqual((answer['class'], answer['command'], answer['replyid']), ('ipbxcommand', 'dial', 4))
        self.assertNotIn('error_string', answer)
        events = self.talk.read_until(is_status('phones', '2'))
        caller = [message for message in events if is_status('phones', '1')(message)][-1]
        self.assertEqual(caller['status']['hintstatus'], '1')
        self.assertEqual(len(caller['status']['channels']), 1)
        self.assertEqual(events[-1]['status']['hintstatus'], '8')
        channel = caller['status']['channels'][0]
        answer, _ = self.talk.ask('ipbxcommand', command='hangup', channelids='chan:xivo/' + channel)
        self.assertEqual((answer['command'], answer['replyid']), ('hangup', 5))
        events = self.talk.read_until(is_status('phones', '2'))
        self.assertEqual([(message['tid'], message['status']['hintstatus']) for message in events],
                         [('1', '0'), ('2', '0')])
        status, _ = self.talk.ask('getlist', function='updatestatus', listname='phones', tid='1')
        self.assertEqual(status['status']['hintstatus'], '0')

    def test_unknown_ipbxcommand(self):
        answer, _ = self.talk.ask('ipbxcommand', command='transfer')
        self.assertEqual((answer['error_string'], answer['replyid']), ('unknown command', 1))

    def test_history(self):
        self.talk.log_in()
        answer, _ = self.talk.ask('history', mode='1', size='3', xuserid='xivo/1')
        self.assertEqual((answer['class'], answer['mode'], answer['replyid']), ('history', 1, 4))
        self.assertEqual(len(answer['history']), 3)
        for entry in answer['history']:
            self.assertLessEqual({'calldate', 'duration', 'fullname', 'extension'}, set(entry))

    def test_directory_non_ascii_names(self):
        self.talk.log_in()
        answer, _ = self.talk.ask('directory', pattern='')
        self.assertEqual((answer['class'], answer['status'], answer['replyid']), ('directory', 'ok', 4))
        self.assertEqual(answer['headers'][0], 'Name')
        names = [line.split(';')[0] for line in answer['resultlist']]
        for name in NAMES:
            self.assertIn(name, names)
        raw = self.talk.lines[-1]
        self.assertIn(b'H\\u00e9l\\u00e8ne Dupr\\u00e9', raw)          # ensure_ascii, as a Python server writes
        self.assertIn(b'\\ud83d\\ude00', raw)

    def test_directory_search_ignores_case_and_accents(self):
        for pattern, expected in (('zoe', [NAMES[2]]), ('GROSS', [NAMES[1]]), ('h\u00e9l\u00e8ne', [NAMES[0]]),
                                  ('nobody', [])):
            answer, _ = self.talk.ask('directory', pattern=pattern)
            self.assertEqual([line.split(';')[0] for line in answer['resultlist']], expected, pattern)

    def test_keepalive_then_presence_changes(self):
        self.talk.log_in()
        answer, before = self.talk.ask('keepalive')
        self.assertEqual(answer, {'class': 'keepalive', 'replyid': 4, 'timenow': answer['timenow']})
        self.assertEqual(before, [])
        first = self.talk.read_message()
        self.assertTrue(is_status('users', '2')(first), first)
        self.assertEqual(first['status']['availstate'], 'away')
        self.talk.ask('keepalive')
        second = self.talk.read_message()
        self.assertTrue(is_status('users', '3')(second), second)
        self.assertEqual(second['status']['availstate'], 'donotdisturb')
        status, _ = self.talk.ask('getlist', function='updatestatus', listname='users', tid='2')
        self.assertEqual(status['status']['availstate'], 'away')

    def test_unknown_class(self):
        answer, _ = self.talk.ask('frobnicate', x=1)
        self.assertEqual(answer, {'class': 'frobnicate', 'error_string': 'unknown class', 'replyid': 1,
                                  'timenow': answer['timenow']})

    def test_not_json_then_goes_on(self):
        self.talk.sock.sendall(b'hello\n')
        self.assertEqual(self.talk.read_message()['error_string'], 'not a JSON object')
        answer, _ = self.talk.ask('keepalive')
        self.assertEqual(answer['replyid'], 1)

    def test_odd_class_or_deep_nesting_then_goes_on(self):
        """A class that is not a string, or JSON nested too deep to read, is answered, not a crash."""
        self.talk.send({'class': ['getlist']})
        self.assertEqual(self.talk.read_message()['error_string'], 'unknown class')
        self.talk.sock.sendall(b'[' * 100000 + b']' * 100000 + b'\n')
        self.assertEqual(self.talk.read_message()['error_string'], 'not a JSON object')
        answer, _ = self.talk.ask('keepalive')
        self.assertEqual(answer['class'], 'keepalive')

    def test_class_or_commandid_not_finite_then_goes_on(self):
        """Before: answered with "replyid": Infinity (or "class": NaN), which is not JSON."""
        for request in (b'{"class": "x", "commandid": 1e400}', b'{"class": "keepalive", "commandid": -1e400}',
                        b'{"class": "keepalive", "commandid": [1, NaN]}', b'{"class": 1e400, "commandid": 1}',
                        b'{"class": {"a": Infinity}}'):
            with self.subTest(request=request):
                self.talk.sock.sendall(request + b'\n')
                answer = self.talk.read_message()
                self.assertEqual((answer['class'], answer['error_string']),
                                 ('error', 'class or commandid is not finite'))
                self.assertNotIn('replyid', answer)
        answer, _ = self.talk.ask('keepalive')
        self.assertEqual(answer['class'], 'keepalive')

    def test_history_size_or_mode_not_a_number(self):
        """Before: "size": true was taken as 1."""
        for fields in ({'size': True}, {'size': False}, {'mode': True}, {'size': 'many'}, {'size': None}):
            with self.subTest(fields=fields):
                answer, _ = self.talk.ask('history', **fields)
                self.assertEqual(answer['error_string'], 'bad mode or size')

    def test_no_commandid_no_replyid(self):
        self.talk.send({'class': 'keepalive'})
        answer = self.talk.read_message()
        self.assertEqual(answer['class'], 'keepalive')
        self.assertNotIn('replyid', answer)

    def test_wire_format(self):
        self.talk.log_in()
        self.talk.ask('directory', pattern='')
        self.talk.ask('ipbxcommand', command='dial', destination='exten:xivo/1003')
        self.talk.ask('keepalive')
        self.talk.quit()
        for line in self.talk.lines[1:]:
            message = json.loads(line.decode('ascii'))
            self.assertEqual(line, (json.dumps(message) + '\n').encode('ascii'))
            self.assertIsInstance(message['timenow'], float)

    def test_several_clients_at_once(self):
        others = [self.server.connect() for _ in range(3)]
        talks = [self.talk] + others
        sessionids = set()
        for talk in talks:
            talk.commandid = 10
            sessionids.add(talk.ask('login_id', userlogin='bob')[0]['sessionid'])
        for talk in reversed(talks):
            answer, _ = talk.ask('keepalive')
            self.assertEqual(answer['replyid'], 12)
        self.assertEqual(len(sessionids), 4)
        for talk in others:
            talk.quit()

    def test_quit_ends_the_session(self):
        self.talk.log_in()
        self.assertEqual(self.talk.quit(), b'')


class SimulatorEventsTest(unittest.TestCase):

    def test_presence_changes_on_a_timer(self):
        with SimServer('--events', '0.05') as server:
            talk = server.connect()
            talk.log_in()
            event = talk.read_until(is_status('users', '2'))[-1]
            self.assertEqual(event['status']['availstate'], 'away')
            talk.quit()
            status, err = server.stop(signal.SIGTERM)
        self.assertEqual(status, 0, err)


class SimulatorCommandLineTest(unittest.TestCase):

    def test_client_against_the_server(self):
        with SimServer() as server:
            status, out, err = ctisim('client', '127.0.0.1', '--port', str(server.port))
            self.assertEqual(server.stop()[0], 0)
        self.assertEqual(status, 0, err)
        self.assertRegex(err, r'^ctisim: session done: \d+ requests answered, \d+ messages from the server unasked\n$')

    def test_client_connection_refused(self):
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        status, _, err = ctisim('client', '127.0.0.1', '--port', str(port))
        self.assertEqual(status, 1)
        self.assertEqual(err, 'ctisim: connection to 127.0.0.1:%d failed: Connection refused\n' % port)

    def test_server_port_busy(self):
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            sock.listen(1)
            port = sock.getsockname()[1]
            status, _, err = ctisim('server', '--port', str(port), '--listen-addr', '127.0.0.1')
        self.assertEqual(status, 1)
        self.assertRegex(err, r'^ctisim: cannot listen on port %d of 127\.0\.0\.1: .+\n$' % port)

    def test_usage_errors(self):
        for args in ([], ['serve'], ['server', '--users', '0'], ['server', '--port', '70000'],
                     ['server', '--events', '-1'], ['client'], ['client', 'h', '--port', '0'], ['demo', 'x']):
            status, _, err = ctisim(*args)
            self.assertEqual(status, 2, args)
            self.assertIn('usage: ctisim', err)
            self.assertNotIn('Traceback', err)

    def test_help_with_examples(self):
        for args in (['--help'], ['server', '--help'], ['client', '--help'], ['demo', '--help']):
            status, out, _ = ctisim(*args)
            self.assertEqual(status, 0, args)
            self.assertIn('examples:\n  ctisim ', out)


if __name__ == '__main__':
    unittest.main()
