"""A hostile review of issues 13 and 14 (debug faster, replay): what it found, each a test that failed before."""

import json
import os
import socket
import tempfile
import threading
import unittest

from tests.harness import run_tool
from tests.test_simulator import SimServer

TIME = '2026-11-27T13:01:02.%06d+01:00'


def entry(tenth, session=1, **fields):
    fields.update(time=TIME % (tenth * 100000), session=session)
    return json.dumps(fields) + '\n'


class ReplayOfANewRecordingTest(unittest.TestCase):
    """ctispy --json-lines writes "event" records ("start", "end" with --loop; "unanswered" at the end of any
    session with a request never answered): replay skips them, as --read does, instead of a traceback."""

    def test_server_replay_of_a_recording_with_event_records(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        path = os.path.join(folder.name, 'old.jsonl')
        with open(path, 'w') as stream:
            stream.write(entry(0, event='start', client='127.0.0.1:40000', server='127.0.0.1:5003'))
            stream.write(entry(1, direction='server', text='XiVO CTI Server Version 1.2.3 (simulated)'))
            stream.write(entry(2, direction='client', message={'class': 'login_id', 'commandid': 1}))
            stream.write(entry(3, direction='server', message={'class': 'login_id', 'replyid': 1, 'sessionid': 'abc'}))
            stream.write(entry(4, direction='client', message={'class': 'keepalive', 'commandid': 2}))
            stream.write(entry(5, event='unanswered', request={'class': 'keepalive', 'commandid': 2},
                               sent=TIME % 400000))
            stream.write(entry(5, event='end', closed_by='client', error=None))
        server = SimServer('--replay', path, '--speed', '0', '--no-starttls')
        self.addCleanup(server.__exit__)
        self.assertIsNotNone(server.port, server.start_line)
        talk = server.connect()
        answer, _ = talk.ask('login_id', userlogin='bob')
        self.assertEqual((answer['sessionid'], answer['replyid']), ('abc', 1))
        talk.quit()
        status, err = server.stop()
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)


class TagsOfARecordingsSessionsTest(unittest.TestCase):
    """ctispy --read of a recording whose sessions overlap: once messages of two sessions have been shown
    tagged, a session's later messages keep their tag after the other session ends; untagged, they read as
    the session of the tagged line just above them."""

    def test_the_tag_stays_once_sessions_overlapped(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        path = os.path.join(folder.name, 'two.jsonl')
        with open(path, 'w') as stream:
            stream.write(entry(1, 1, direction='client', message={'class': 'a', 'commandid': 1}))
            stream.write(entry(2, 2, direction='client', message={'class': 'b', 'commandid': 1}))
            stream.write(entry(3, 1, direction='server', message={'class': 'a', 'replyid': 1}))
            stream.write(entry(4, 2, direction='server', message={'class': 'b', 'replyid': 1}))
        status, out, err = run_tool('ctispy', '--read', path, '--oneline')
        self.assertEqual(status, 0, err)
        lines = out.decode().splitlines()
        self.assertEqual(len(lines), 4, lines)
        self.assertRegex(lines[2], r' \[#1\] S>C \{"class": "a"')
        self.assertRegex(lines[3], r' \[#2\] S>C \{"class": "b"')


def client_replay_to(test, serve, path, *args):
    """Run `ctisim client --replay path` against serve(listener), a scripted server on a thread; return
    (exit code, stdout bytes, stderr text)."""
    listener = socket.socket()
    test.addCleanup(listener.close)
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    thread = threading.Thread(target=serve, args=(listener,), daemon=True)
    thread.start()
    done = run_tool('ctisim', 'client', '127.0.0.1', '--port', str(listener.getsockname()[1]), '--replay', path, *args)
    thread.join()
    return done


def serve_login(listener, then=None):
    """A scripted server for one client: the banner, the answer to its login_id; then, if given, `then` after
    its next request, and read until it ends its sending; then close."""
    connection, _ = listener.accept()
    with connection, connection.makefile('rb') as reader:
        connection.sendall(b'XiVO CTI Server Version 1.2.3\n')
        reader.readline()
        connection.sendall(b'{"class": "login_id", "replyid": 1, "sessionid": "s"}\n')
        if then is not None:
            reader.readline()
            connection.sendall(then)
            reader.read()


class ClientReplayOfADeepLineTest(unittest.TestCase):
    """ctisim client --replay: a server line nested deeper than json reads is a line that is not JSON (an
    unasked message), not a traceback; the answer after it still pairs."""

    def test_a_deeply_nested_line_from_the_server(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        path = os.path.join(folder.name, 'old.jsonl')
        with open(path, 'w') as stream:
            stream.write(entry(1, direction='client', message={'class': 'login_id', 'commandid': 1}))
            stream.write(entry(2, direction='server', message={'class': 'login_id', 'replyid': 1, 'sessionid': 's'}))
            stream.write(entry(3, direction='client', message={'class': 'keepalive', 'commandid': 2}))
            stream.write(entry(4, direction='server', message={'class': 'keepalive', 'replyid': 2}))
        status, out, err = client_replay_to(self, self.serve, path, '--speed', '0', '--timeout', '5')
        self.assertNotIn('Traceback', err)
        self.assertEqual(status, 0, err)
        self.assertIn(': 2 of 2 requests sent, 2 answered, 0 not answered', out.decode())

    def serve(self, listener):
        serve_login(listener, b'[' * 100000 + b'\n{"class": "keepalive", "replyid": 2}\n')


def far_gap_recording(test):
    """A recording whose last messages come in the year 9999: a gap longer than any wait can take at once."""
    folder = tempfile.TemporaryDirectory()
    test.addCleanup(folder.cleanup)
    path = os.path.join(folder.name, 'far.jsonl')
    far = '9999-12-30T01:59:59.000000+00:00'
    with open(path, 'w') as stream:
        stream.write(entry(0, direction='server', text='XiVO CTI Server Version 1.2.3 (simulated)'))
        stream.write(entry(1, direction='client', message={'class': 'login_id', 'commandid': 1}))
        stream.write(entry(2, direction='server', message={'class': 'login_id', 'replyid': 1, 'sessionid': 's'}))
        stream.write(json.dumps({'time': far, 'session': 1, 'direction': 'server', 'message': {'class': 'late'}})
                     + '\n')
        stream.write(json.dumps({'time': far, 'session': 1, 'direction': 'client',
                                 'message': {'class': 'keepalive', 'commandid': 2}}) + '\n')
    return path


class ReplayOfAFarGapTest(unittest.TestCase):
    """A recorded gap of thousands of years (a hand-edited recording): the replay waits, as long as it is
    asked, instead of a traceback (OverflowError: timestamp out of range)."""

    def test_server_replay_waits_and_stops(self):
        server = SimServer('--replay', far_gap_recording(self), '--speed', '1', '--no-starttls')
        self.addCleanup(server.__exit__)
        talk = server.connect()
        answer, _ = talk.ask('login_id', userlogin='bob')
        self.assertEqual(answer['sessionid'], 's')
        status, err = server.stop()
        self.assertNotIn('Traceback', err)
        self.assertEqual(status, 0, err)

    def test_client_replay_waits_until_the_server_closes(self):
        status, out, err = client_replay_to(self, self.serve, far_gap_recording(self), '--speed', '1')
        self.assertNotIn('Traceback', err)
        self.assertEqual(status, 1, err)
        self.assertIn(': 1 of 2 requests sent, 1 answered', out.decode())

    def serve(self, listener):
        serve_login(listener)


if __name__ == '__main__':
    unittest.main()
