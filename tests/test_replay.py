"""ctisim's replays: `ctisim server --replay` (a recorded XiVO) and `ctisim client --replay` (a recorded client),
the real script over loopback, and the I/O-free parts (the recorded session, the matching) on their own."""

import datetime
import difflib
import json
import os
import pty
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from tests.harness import TIMEOUT, Tool, closed_port, read_fd_until_all, run_tool, tool_path
from tests.test_capture_read import login_session
from tests.test_simulator import SimServer, Talk, ctisim
from ctiproxy.recording import Record
from ctiproxy.sim.recorded import RecordingProblem, load_session, request_key
from ctiproxy.sim.replay_client import hashed_password
from ctiproxy.sim.replay_server import ReplayCursor

START = datetime.datetime(2026, 11, 27, 13, 1, 2)


def record(offset, direction, body, session=1):
    """One recording line: body a dict (a message) or a str (a line that is not JSON), offset seconds in."""
    entry = {'time': (START + datetime.timedelta(seconds=offset)).isoformat(timespec='microseconds'),
             'session': session, 'direction': direction}
    entry['message' if isinstance(body, dict) else 'text'] = body
    return json.dumps(entry) + '\n'


def ask(commandid, class_, **fields):
    message = {'class': class_, 'commandid': commandid}
    message.update(fields)
    return message


def reply(replyid, class_, **fields):
    message = {'class': class_, 'replyid': replyid, 'timenow': 1795000000.0 + replyid}
    message.update(fields)
    return message


def status_event(tid, state):
    return {'class': 'getlist', 'function': 'updatestatus', 'listname': 'users', 'tid': tid,
            'status': {'availstate': state}, 'timenow': 1795000000.5}


# A recorded session: login, two listid requests (users asked twice, answered differently), a keepalive followed
# by two status events (0.2 s apart), a directory search.
BANNER_TEXT = 'XiVO CTI Server Version 1.2.3 (simulated)'
SESSION = [
    (0.0, 'server', BANNER_TEXT),
    (0.1, 'client', ask(1, 'login_id', userlogin='alice', company='default')),
    (0.11, 'server', reply(1, 'login_id', sessionid='abcdefghij', xivoversion='1.2')),
    (0.2, 'client', ask(2, 'login_pass', hashedpassword='aa' * 20)),
    (0.21, 'server', reply(2, 'login_pass', capalist=[1])),
    (0.3, 'client', ask(3, 'login_capas', capaid=1, state='available')),
    (0.31, 'server', reply(3, 'login_capas', userid='1', presence='available')),
    (0.32, 'server', status_event('1', 'available')),
    (0.4, 'client', ask(4, 'getlist', function='listid', listname='users', tipbxid='xivo')),
    (0.41, 'server', reply(4, 'getlist', function='listid', listname='users', list=['1', '2'])),
    (0.5, 'client', ask(5, 'getlist', function='listid', listname='phones', tipbxid='xivo')),
    (0.51, 'server', reply(5, 'getlist', function='listid', listname='phones', list=['7'])),
    (0.6, 'client', ask(6, 'getlist', function='listid', listname='users', tipbxid='xivo')),
    (0.61, 'server', reply(6, 'getlist', function='listid', listname='users', list=['1', '2', '3'])),
    (0.7, 'client', ask(7, 'keepalive')),
    (0.71, 'server', reply(7, 'keepalive')),
    (0.72, 'server', status_event('2', 'away')),
    (0.92, 'server', status_event('3', 'donotdisturb')),
    (1.0, 'client', ask(8, 'directory', pattern='e')),
    (1.2, 'server', reply(8, 'directory', resultlist=['H\u00e9l\u00e8ne Dupr\u00e9;1002'], status='ok')),
]


def write_recording(test, sessions):
    """A recording file in a temporary folder holding sessions ({number: [(offset, direction, body)]}),
    records of the sessions interleaved by time as a recorder writes them; return its path."""
    folder = tempfile.TemporaryDirectory()
    test.addCleanup(folder.cleanup)
    path = os.path.join(folder.name, 'session.jsonl')
    lines = sorted((offset, index, number, direction, body) for number, entries in sessions.items()
                   for index, (offset, direction, body) in enumerate(entries))
    with open(path, 'w') as stream:
        for offset, _, number, direction, body in lines:
            stream.write(record(offset, direction, body, number))
    return path


def records_of(entries, session=1):
    """Records as recording.read_records yields them, for the I/O-free tests."""
    for number, (offset, direction, body) in enumerate(entries, 1):
        line = (json.dumps(body) if isinstance(body, dict) else body).encode('utf-8')
        yield Record(session, direction, START.timestamp() + offset, line, None, number)


class RecordedSessionTest(unittest.TestCase):
    """The recorded session, built from records without a file."""

    def load(self, entries, number=None):
        return load_session('s.jsonl', number, records=lambda path: records_of(entries))

    def test_opening_exchanges_and_followers(self):
        session = self.load(SESSION)
        self.assertEqual([line for line, _, _ in session.opening], [BANNER_TEXT.encode()])
        self.assertEqual([exchange.request['commandid'] for exchange in session.exchanges], list(range(1, 9)))
        keepalive = session.exchanges[6]
        self.assertEqual([message['tid'] for message, _ in keepalive.followers], ['2', '3'])
        self.assertAlmostEqual(keepalive.reply_time(), 0.01, places=3)
        self.assertEqual([message['tid'] for message, _ in session.exchanges[2].followers], ['1'])

    def test_what_each_request_awaited_and_its_gap(self):
        """Request 5 (index 4) was sent 0.09 s after the answer to request 4; a request sent before the answer
        to the one before it (pipelined) awaits only the answers that had come."""
        session = self.load(SESSION)
        self.assertEqual(session.awaited_by(4), [0, 1, 2, 3])
        self.assertAlmostEqual(session.gap_before(4), 0.09, places=3)
        pipelined = SESSION[:9] + [(0.405, 'client', ask(5, 'keepalive')), (0.41, 'server', reply(4, 'getlist')),
                                   (0.42, 'server', reply(5, 'keepalive'))]
        session = self.load(pipelined)
        self.assertEqual(session.awaited_by(4), [0, 1, 2])
        self.assertAlmostEqual(session.gap_before(4), 0.005, places=3)

    def test_request_key(self):
        listid = ask(1, 'getlist', function='listid', listname='users', tipbxid='xivo')
        self.assertEqual(request_key(listid), request_key(dict(listid, commandid=9, unrelated='x')))
        self.assertNotEqual(request_key(listid), request_key(dict(listid, listname='phones')))
        self.assertNotEqual(request_key(ask(1, 'history', size=8)), request_key(ask(1, 'history', size='8')))
        self.assertEqual(request_key(ask(1, 'login_id', userlogin='alice')), request_key(ask(2, 'login_id')))

    def test_oldest_unused_first_then_the_latest(self):
        cursor = ReplayCursor(self.load(SESSION).answers_by_request())
        users = ask(40, 'getlist', function='listid', listname='users', tipbxid='xivo')
        answered = [cursor.next_for(users).request['commandid'] for _ in range(4)]
        self.assertEqual(answered, [4, 6, 6, 6])
        self.assertIsNone(cursor.next_for(ask(41, 'getlist', function='listid', listname='queues', tipbxid='xivo')))

    def test_nothing_to_replay(self):
        server_only = [entry for entry in SESSION if entry[1] == 'server']
        unanswered = [entry for entry in SESSION if entry[1] == 'client']
        for entries, reason in ((server_only, 'no message from the client'), (unanswered, 'no answer from the server')):
            with self.subTest(reason=reason):
                with self.assertRaises(RecordingProblem) as caught:
                    self.load(entries)
                self.assertIn(reason, str(caught.exception))
        with self.assertRaises(RecordingProblem) as caught:
            self.load(SESSION, number=3)
        self.assertEqual(str(caught.exception), 's.jsonl: no session 3 in it (it holds session 1)')


class ServerReplayTest(unittest.TestCase):
    """`ctisim server --replay FILE`: the recorded server, to a scripted client."""

    def start(self, *args, sessions=None):
        path = write_recording(self, sessions or {1: SESSION})
        server = SimServer('--replay', path, *args)
        self.addCleanup(server.__exit__)
        return server, path

    def test_recorded_answers_in_any_order_replyid_rewritten(self):
        server, _ = self.start('--speed', '0')
        talk = server.connect()
        answer, _ = talk.ask('login_id', userlogin='somebody-else', company='x')
        self.assertEqual((answer['sessionid'], answer['replyid']), ('abcdefghij', 1))
        self.assertNotEqual(answer['timenow'], 1795000001.0)          # now, not as recorded
        answer, _ = talk.ask('login_pass', hashedpassword='0' * 40)
        self.assertEqual(answer['capalist'], [1])
        talk.commandid = 100
        answer, _ = talk.ask('getlist', function='listid', listname='phones', tipbxid='xivo')
        self.assertEqual((answer['list'], answer['replyid']), (['7'], 101))
        lists = [talk.ask('getlist', function='listid', listname='users', tipbxid='xivo')[0]['list']
                 for _ in range(3)]
        self.assertEqual(lists, [['1', '2'], ['1', '2', '3'], ['1', '2', '3']])
        answer, _ = talk.ask('directory', pattern='e')
        self.assertEqual(answer['resultlist'], ['H\u00e9l\u00e8ne Dupr\u00e9;1002'])
        talk.quit()
        status, err = server.stop()
        self.assertEqual(status, 0, err)
        self.assertNotIn('not in the recording', err)

    def test_from_a_capture(self):
        """A tcpdump capture replays as its recording would: the banner first, the recorded answers after."""
        folder = tempfile.mkdtemp(prefix='cti-replay-')
        self.addCleanup(shutil.rmtree, folder, True)
        path = os.path.join(folder, 'cti.pcap')
        with open(path, 'wb') as file:
            file.write(login_session().pcap())
        server = SimServer('--replay', path, '--speed', '0', '--no-starttls')
        self.addCleanup(server.__exit__)
        self.assertIsNotNone(server.port, server.start_line)
        talk = Talk(socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT))
        self.assertEqual(talk.read_line(), b'XiVO CTI Server Version 1.2.3\n')
        answer, _ = talk.ask('login_id', userlogin='bob')
        self.assertEqual((answer['sessionid'], answer['replyid']), ('abc', 1))
        talk.commandid = 40
        answer, _ = talk.ask('getlist', function='listid')
        self.assertEqual((answer['list'], answer['replyid']), (['1', '2'], 41))
        talk.quit()
        status, err = server.stop()
        self.assertEqual(status, 0, err)

    def test_unasked_messages_after_their_request(self):
        server, _ = self.start('--speed', '0')
        talk = server.connect()
        talk.ask('login_id', userlogin='alice')
        talk.send(ask(2, 'keepalive'))
        talk.send(ask(3, 'login_capas', capaid=1))
        received = [talk.read_message() for _ in range(5)]
        self.assertEqual([(message['class'], message.get('replyid'), message.get('tid')) for message in received],
                         [('keepalive', 2, None), ('getlist', None, '2'), ('getlist', None, '3'),
                          ('login_capas', 3, None), ('getlist', None, '1')])
        self.assertEqual(received[1]['status'], {'availstate': 'away'})

    def test_recorded_gaps_scaled(self):
        """--speed 1: the second status event comes 0.2 s after the first, as recorded (a lower bound: the
        replay waits at least that long)."""
        server, _ = self.start()
        talk = server.connect()
        talk.ask('keepalive')
        talk.read_message()
        first = time.monotonic()
        talk.read_message()
        self.assertGreaterEqual(time.monotonic() - first, 0.19)

    def test_unknown_request_gets_an_error_and_is_listed(self):
        server, _ = self.start('--speed', '0')
        talk = server.connect()
        answer, _ = talk.ask('getlist', function='listid', listname='voice\x1bmails', tipbxid='xivo')
        self.assertEqual((answer['class'], answer['error_string'], answer['replyid']),
                         ('getlist', 'unknown request', 1))
        answer, _ = talk.ask('keepalive')          # and it goes on
        self.assertEqual(answer['replyid'], 2)
        talk.quit()
        _, err = server.stop()
        self.assertIn('ctisim: not in the recording: class=getlist, function=listid, listname=voice\\x1bmails, '
                      'tipbxid=xivo\n', err)

    def test_session_chosen(self):
        other = [(0.0, 'server', 'Another banner'), (0.1, 'client', ask(1, 'keepalive')),
                 (0.2, 'server', reply(1, 'keepalive', note='session 2'))]
        server, path = self.start('--speed', '0', '--session', '2', sessions={1: SESSION, 2: other})
        self.assertIn('session 2 of %s, 1 requests' % path, server.start_line)
        talk = Talk(socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT))
        self.assertEqual(talk.read_line(), b'Another banner\n')
        answer, _ = talk.ask('keepalive')
        self.assertEqual(answer['note'], 'session 2')

    def test_starttls_offered_as_recorded_unless_no_starttls(self):
        offered = SESSION[:1] + [(0.01, 'server', {'class': 'starttls'})] + SESSION[1:]
        path = write_recording(self, {1: offered})
        with SimServer('--replay', path, '--no-starttls') as server:
            self.assertNotIn('STARTTLS', server.start_line)
            talk = server.connect()
            talk.send(ask(1, 'keepalive'))
            self.assertEqual(talk.read_message()['replyid'], 1)      # the first message after the banner
        if shutil.which('openssl') is None:
            self.skipTest('no openssl command to make a certificate with')
        with SimServer('--replay', path) as server:
            self.assertIn('STARTTLS offered', server.start_line)
            talk = server.connect()
            offer = talk.read_message()
            self.assertEqual(offer, {'class': 'starttls', 'timenow': offer['timenow']})

    def test_bad_recordings(self):
        unanswered = [entry for entry in SESSION if entry[1] == 'client']
        cases = [({1: SESSION}, ['--session', '4'], 'no session 4 in it (it holds session 1)'),
                 ({1: SESSION[:1]}, [], 'session 1: no message from the client in it, nothing to replay'),
                 ({1: unanswered}, [], 'session 1: no answer from the server in it')]
        for sessions, args, reason in cases:
            with self.subTest(reason=reason):
                path = write_recording(self, sessions)
                status, out, err = ctisim('server', '--port', '0', '--replay', path, *args)
                self.assertEqual((status, out, len(err.splitlines())), (1, '', 1), err)
                self.assertTrue(err.startswith('ctisim: %s' % path), err)
                self.assertIn(reason, err)
        status, _, err = ctisim('server', '--port', '0', '--replay', '/nonexistent/x.jsonl')
        self.assertEqual((status, err), (1, 'ctisim: cannot read /nonexistent/x.jsonl: No such file or directory\n'))
        path = write_recording(self, {1: SESSION})
        with open(path, 'a') as stream:
            stream.write('{"not": "a record"}\n')
        status, _, err = ctisim('server', '--port', '0', '--replay', path)
        self.assertEqual((status, len(err.splitlines())), (1, 1), err)
        self.assertIn('line 21', err)

    def test_usage_errors(self):
        for args, reason in ((['--speed', '0'], '--speed needs --replay'),
                             (['--replay', 'x', '--speed', '-1'], 'not a factor from 0 to 1000'),
                             (['--replay', 'x', '--starttls', '--no-starttls'], 'give one')):
            with self.subTest(args=args):
                status, _, err = ctisim('server', *args)
                self.assertEqual(status, 2, err)
                self.assertIn(reason, err)


# A session through which a scripted server sees what the replayed client sends: login_pass with a plain
# password, a listid refused with an error.
PLAIN_SESSION = [entry for entry in SESSION if entry[2] != ask(2, 'login_pass', hashedpassword='aa' * 20)]
PLAIN_SESSION.insert(3, (0.2, 'client', ask(2, 'login_pass', password='recorded-secret')))
PLAIN_SESSION.extend([(1.3, 'client', ask(9, 'getlist', function='listid', listname='voicemails', tipbxid='xivo')),
                      (1.31, 'server', reply(9, 'getlist', error_string='unknown listname'))])


class ScriptedServer:
    """A CTI server of the test's own on a loopback port, for one client: the banner, then answer(message)
    for each line received ([] to answer nothing, None to close the connection)."""

    def __init__(self, test, answer):
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.received = []
        self.answer = answer
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        test.addCleanup(self.listener.close)

    def serve(self):
        self.listener.settimeout(TIMEOUT)
        connection, _ = self.listener.accept()
        with connection:
            connection.sendall(BANNER_TEXT.encode() + b'\n')
            talk = Talk(connection)
            while True:
                try:
                    message = talk.read_message()
                except AssertionError:          # the client's end
                    return
                self.received.append(message)
                answers = self.answer(message)
                if answers is None:
                    return
                for answer in answers:
                    connection.sendall((json.dumps(answer) + '\n').encode())

    def join(self):
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), 'the scripted server did not end'


def answer_everything(sessionid='abcdefghij'):
    """An answer to each request, login_id with this sessionid; the voicemails list refused."""
    def answer(message):
        fields = {'sessionid': sessionid} if message['class'] == 'login_id' else {}
        if message.get('listname') == 'voicemails':
            fields['error_string'] = 'unknown listname'
        return [reply(message['commandid'], message['class'], **fields)]
    return answer


def replay_client(path, port, *args):
    return ctisim('client', '127.0.0.1', '--port', str(port), '--replay', path, '--speed', '0', *args)


class ClientReplayTest(unittest.TestCase):
    """`ctisim client HOST --replay FILE`: the recorded client, to the simulator or a scripted server."""

    def test_hashed_password_test_vector(self):
        self.assertEqual(hashed_password('abcdefghij', 'secret'), '5cf9b42b39979d08f36da10ca17cada73f8c1ded')

    def test_hashedpassword_computed_with_the_new_session_id(self):
        path = write_recording(self, {1: SESSION})
        server = ScriptedServer(self, answer_everything('abcdefghij'))
        status, out, err = replay_client(path, server.port, '--password', 'secret')
        server.join()
        self.assertEqual(status, 0, err)
        self.assertEqual([message['commandid'] for message in server.received], list(range(1, 9)))
        self.assertEqual(server.received[1],
                         ask(2, 'login_pass', hashedpassword='5cf9b42b39979d08f36da10ca17cada73f8c1ded'))
        self.assertEqual(server.received[0], SESSION[1][2])              # as recorded
        self.assertIn('8 of 8 requests sent, 8 answered, 0 not answered, 0 answered with an error', out)

    def test_plain_password_reused_or_replaced(self):
        path = write_recording(self, {1: PLAIN_SESSION})
        for args, password in (([], 'recorded-secret'), (['--password', 'new'], 'new')):
            with self.subTest(args=args):
                server = ScriptedServer(self, answer_everything())
                status, out, err = replay_client(path, server.port, *args)
                server.join()
                self.assertEqual(status, 0, err)
                self.assertEqual(server.received[1], ask(2, 'login_pass', password=password))
                self.assertIn('9 of 9 requests sent, 9 answered, 0 not answered, 1 answered with an error', out)
                self.assertRegex(out, r'\n +\d+ ms +\d+ ms  #9 class=getlist, function=listid, '
                                      r'listname=voicemails, tipbxid=xivo  <- error: unknown listname\n')

    def test_a_hash_without_password_is_one_line(self):
        path = write_recording(self, {1: SESSION})
        status, out, err = replay_client(path, closed_port())
        self.assertEqual((status, out, err), (1, '', 'ctisim: the recording logs in with a hashedpassword: give the '
                                                     'password with --password\n'))

    def test_password_asked_on_the_terminal_unechoed(self):
        """On a terminal (a pty of the test's own, in a session of its own: no other terminal to open), a recorded
        hash and no --password: the password is asked for, not echoed, and hashed with the new session id."""
        path = write_recording(self, {1: SESSION})
        server = ScriptedServer(self, answer_everything('abcdefghij'))
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        process = subprocess.Popen([sys.executable, tool_path('ctisim'), 'client', '127.0.0.1', '--port',
                                    str(server.port), '--replay', path, '--speed', '0'], stdin=slave,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        os.close(slave)
        try:
            read_fd_until_all(process.stderr.fileno(), [b'password'])
            os.write(master, b'secret\n')
            out, err = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        server.join()
        self.assertEqual(process.returncode, 0, err)
        self.assertEqual(server.received[1]['hashedpassword'], '5cf9b42b39979d08f36da10ca17cada73f8c1ded')
        echoed = b''
        while select.select([master], [], [], 0)[0]:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            echoed += data
        self.assertNotIn(b'secret', echoed)

    def test_bad_recording_is_one_line_before_connecting(self):
        path = write_recording(self, {1: SESSION[:1]})
        status, out, err = replay_client(path, closed_port())
        self.assertEqual((status, out, err), (1, '', 'ctisim: %s, session 1: no message from the client in it, '
                                                     'nothing to replay\n' % path))

    def test_against_the_simulator(self):
        path = write_recording(self, {1: PLAIN_SESSION})
        with SimServer() as server:
            status, out, err = replay_client(path, server.port)
        self.assertEqual(status, 0, err)
        lines = out.splitlines()
        self.assertIn('9 of 9 requests sent, 9 answered, 0 not answered, 1 answered with an error', lines[0])
        self.assertEqual(len([line for line in lines if ' ms  #' in line]), 9)
        self.assertRegex(out, r'\n +200 ms +\d+ ms  #8 class=directory, pattern=e\n')     # 200 ms recorded

    def test_unanswered_requests_wait_for_the_timeout(self):
        path = write_recording(self, {1: PLAIN_SESSION})
        server = ScriptedServer(self, lambda message: [] if message['class'] == 'keepalive'
                                else answer_everything()(message))
        status, out, err = replay_client(path, server.port, '--timeout', '0.3')
        server.join()
        self.assertEqual(status, 0, err)
        self.assertIn('9 of 9 requests sent, 8 answered, 1 not answered, 1 answered with an error', out)
        self.assertIn('#7 class=keepalive  <- not answered', out)

    def test_server_closing_mid_replay(self):
        path = write_recording(self, {1: PLAIN_SESSION})
        server = ScriptedServer(self, lambda message: None if message['commandid'] == 4
                                else answer_everything()(message))
        status, out, err = replay_client(path, server.port)
        server.join()
        self.assertEqual(status, 1, err)
        self.assertIn('4 of 9 requests sent, 3 answered, 1 not answered, 0 answered with an error', out)
        self.assertEqual(err, 'ctisim: the server closed the connection in the middle of the replay\n')


def read_lines(path):
    with open(path, encoding='utf-8') as stream:
        return stream.read().splitlines()


class RegressionWorkflowTest(unittest.TestCase):
    """The README's regression check, end to end: record a session with the "old" server (ctispy --json-lines),
    replay its client against the "new" one through ctisave, save the recording with ctisave --read, and compare
    the saved files: the same client, and the new server's deliberate difference (a sixth user) in the diff."""

    def test_old_and_new_server(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        names = ('old.jsonl', 'new-client', 'new-server', 'old-client', 'old-server')
        files = {name: os.path.join(folder.name, name) for name in names}
        strip = ['--strip', 'timenow', '--strip', 'commandid', '--strip', 'replyid']
        with SimServer() as old, open(files['old.jsonl'], 'w') as recording:
            with Tool('ctispy', '--json-lines', server=False, port=old.port, stdout=recording) as spy:
                status, _, err = ctisim('client', '127.0.0.1', '--port', str(spy.port))
                self.assertEqual(status, 0, err)
                self.assertEqual(spy.finish()[0], 0)
        with SimServer('--users', '6') as new:
            with Tool('ctisave', files['new-client'], files['new-server'], *strip, server=False,
                      port=new.port) as save:
                status, out, err = ctisim('client', '127.0.0.1', '--port', str(save.port), '--replay',
                                          files['old.jsonl'], '--password', 'secret')
                self.assertEqual(status, 0, err)
                self.assertIn('29 of 29 requests sent, 29 answered, 0 not answered, 1 answered with an error', out)
                self.assertEqual(save.finish()[0], 0)
        status, _, err = run_tool('ctisave', '--read', files['old.jsonl'], files['old-client'], files['old-server'],
                                  *strip)
        self.assertEqual(status, 0, err)
        saved = {name: read_lines(path) for name, path in files.items()}
        self.assertEqual(saved['old-client'], saved['new-client'])
        diff = [line for line in difflib.unified_diff(saved['old-server'], saved['new-server'], lineterm='', n=0)
                if line[:1] in '+-' and line[:3] not in ('+++', '---')]
        self.assertIn('+        "6"', diff)                 # the sixth user in the list of users
        self.assertLess(len(diff), len(saved['old-server']) // 4, diff)


if __name__ == '__main__':
    unittest.main()
