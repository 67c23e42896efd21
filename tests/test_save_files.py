"""How ctisave treats the files it is told to save into: nothing touched before the tool can start,
never one file for both directions, no link followed, nothing but a regular file written, and only
the files that changed flushed."""

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import unittest

from tests.test_capture_read import login_session
from tests.harness import TIMEOUT, Tool, close_session, read_line_unbuffered, recv_exactly, tool_path
from ctiproxy.filters import CLIENT, SERVER
from ctiproxy.outputs import SaveOutput

OLD = b'{\n    "class": "an earlier save"\n}\n'


def snapshot(folder):
    """Everything about a folder's entries that a tool could change: kind, content, mode, times, inode."""
    state = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            content = os.readlink(path)
        elif stat.S_ISREG(info.st_mode):
            with open(path, 'rb') as file:
                content = file.read()
        else:
            content = None
        state[name] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_ino, info.st_mtime_ns,
                       content)
    return state


def run_ctisave(*args, cwd=None):
    """Run ctisave to its end; return (exit status, stdout bytes, stderr text)."""
    done = subprocess.run([sys.executable, tool_path('ctisave')] + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
    return done.returncode, done.stdout, done.stderr.decode('utf-8', 'replace')


def write(path, data, mode=0o600):
    with open(path, 'wb') as file:
        file.write(data)
    os.chmod(path, mode)


def read(path):
    with open(path, 'rb') as file:
        return file.read()


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


class FolderTestCase(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='ctisave-files-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.client_path = os.path.join(self.dir, 'old-client')
        self.server_path = os.path.join(self.dir, 'old-server')

    def earlier_save(self):
        write(self.client_path, OLD)
        write(self.server_path, OLD)

    def assertOneLine(self, err, status, expected_status, *needles):
        self.assertEqual(status, expected_status, err)
        self.assertNotIn('Traceback', err)
        lines = [line for line in err.splitlines() if not line.startswith(('usage:', ' '))]
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith('ctisave: '), err)
        for needle in needles:
            self.assertIn(needle, lines[0])


class FailedStartTest(FolderTestCase):
    """Files are opened only once the host resolves and the port is bound (--read: the recording opened)."""

    def assertUntouched(self, *args, needle):
        self.earlier_save()
        before = snapshot(self.dir)
        status, out, err = run_ctisave(*args, cwd=self.dir)
        self.assertOneLine(err, status, 1, needle)
        self.assertEqual(out, b'')
        self.assertEqual(snapshot(self.dir), before)

    def test_arguments_in_the_wrong_order(self):
        """ctisave /tmp/old-client /tmp/old-server xivo-new: neither emptied, no ./xivo-new."""
        self.assertUntouched(self.client_path, self.server_path, 'xivo-new', '--listen-port', '0',
                             needle=self.client_path)

    def test_unknown_host(self):
        self.assertUntouched('nonexistent.invalid', self.client_path, self.server_path, '--listen-port', '0',
                             needle='nonexistent.invalid')

    def test_bad_listen_address(self):
        self.assertUntouched('127.0.0.1', self.client_path, self.server_path, '--listen-port', '0',
                             '--listen-addr', 'nonexistent.invalid', needle='nonexistent.invalid')

    def test_busy_port(self):
        with socket.socket() as busy:
            busy.bind(('127.0.0.1', 0))
            busy.listen(1)
            port = str(busy.getsockname()[1])
            self.assertUntouched('127.0.0.1', self.client_path, self.server_path, '--listen-addr', '127.0.0.1',
                                 '--listen-port', port, needle=port)

    def test_missing_recording(self):
        missing = os.path.join(self.dir, 'no-such.jsonl')
        self.assertUntouched('--read', missing, self.client_path, self.server_path, needle=missing)

    def test_capture_without_traffic_on_the_port(self):
        """A capture is known to hold no session only once read: the files were checked, not emptied."""
        capture = os.path.join(self.dir, 'cti.pcap')
        write(capture, login_session().pcap())
        self.assertUntouched('--read', capture, '--port', '6000', self.client_path, self.server_path,
                             needle='no TCP traffic on port 6000')

    def test_recording_with_a_bad_first_line(self):
        recording = os.path.join(self.dir, 'session.jsonl')
        write(recording, b'{"class": "login_id"}\n')
        self.assertUntouched('--read', recording, self.client_path, self.server_path, needle='line 1')

    def test_one_unfit_file_leaves_the_other_alone(self):
        """No truncating before both files passed the checks; a file created for nothing is removed."""
        for client_path in (self.client_path, os.path.join(self.dir, 'new-client')):
            for server_path in (os.path.join(self.dir, 'no-folder', 'server'), self.dir):
                with self.subTest(client=client_path, server=server_path):
                    self.assertUntouched('127.0.0.1', client_path, server_path, '--listen-port', '0',
                                         '--listen-addr', '127.0.0.1', needle=server_path)


class SameFileTest(FolderTestCase):
    """CLIENTFILE and SERVERFILE naming one file (also through a link or a hard link): a usage error."""

    def assertRefused(self, client_path, server_path, *before_host):
        before = snapshot(self.dir)
        for source in (['127.0.0.1', '--listen-port', '0'], ['--read', os.path.join(self.dir, 'session.jsonl')]):
            with self.subTest(client=client_path, server=server_path, source=source[0]):
                status, out, err = run_ctisave(*(source + [client_path, server_path]), cwd=self.dir)
                self.assertOneLine(err, status, 2, 'the same file')
                self.assertEqual(snapshot(self.dir), before)

    def setUp(self):
        super().setUp()
        write(os.path.join(self.dir, 'session.jsonl'),
              b'{"time": "2026-11-27T13:00:00.000000", "session": 1, "direction": "client", "text": "x"}\n')

    def test_same_path(self):
        self.assertRefused(self.client_path, self.client_path)

    def test_same_path_spelled_differently(self):
        self.assertRefused('old-client', os.path.join(self.dir, '.', 'old-client'))

    def test_existing_file_through_a_symbolic_link(self):
        self.earlier_save()
        os.symlink('old-server', os.path.join(self.dir, 'link'))
        self.assertRefused('link', self.server_path)

    def test_new_file_through_a_symbolic_link(self):
        os.symlink('old-server', os.path.join(self.dir, 'link'))
        self.assertRefused(self.server_path, os.path.join(self.dir, 'link'))

    def test_hard_link(self):
        self.earlier_save()
        os.link(self.server_path, os.path.join(self.dir, 'hard'))
        self.assertRefused(os.path.join(self.dir, 'hard'), self.server_path)


class SaveSession:
    """ctisave as harness.Tool starts it, reading past the warnings it may print before its start line."""

    def __init__(self, *args):
        self.tool = Tool('ctisave', *args)
        self.warnings = []
        while self.tool.port is None and self.tool.start_line.startswith('ctisave: warning: '):
            self.warnings.append(self.tool.start_line)
            self.tool.start_line = read_line_unbuffered(self.tool.process.stderr.fileno()).decode('utf-8')
            match = re.search(r'listening on port (\d+)', self.tool.start_line)
            self.tool.port = int(match.group(1)) if match else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.tool.__exit__(*exc)

    def one_session(self, test, client_says, server_says):
        client, server = self.tool.connect()
        client.sendall(client_says)
        test.assertEqual(recv_exactly(server, len(client_says)), client_says)
        server.sendall(server_says)
        test.assertEqual(recv_exactly(client, len(server_says)), server_says)
        close_session(test, client, server)


class SaferFilesTest(FolderTestCase):
    """The rule: a symbolic link at the path is never followed; only a regular file is written; an existing
    file keeps its mode (said when others may read it); a file is emptied only once the tool can start."""

    def check_refused(self, bad, needle, *args):
        before = snapshot(self.dir)
        outside_before = snapshot(self.outside)
        status, out, err = run_ctisave('127.0.0.1', *args, '--listen-port', '0', '--listen-addr', '127.0.0.1')
        self.assertOneLine(err, status, 1, bad, needle)
        self.assertEqual(snapshot(self.dir), before)
        self.assertEqual(snapshot(self.outside), outside_before)

    def setUp(self):
        super().setUp()
        self.outside = tempfile.mkdtemp(prefix='ctisave-elsewhere-')
        self.addCleanup(shutil.rmtree, self.outside, True)
        self.victim = os.path.join(self.outside, 'victim')
        write(self.victim, b'precious\n', 0o644)

    def test_planted_symbolic_link_not_followed(self):
        os.symlink(self.victim, self.client_path)
        self.check_refused(self.client_path, 'symbolic link', self.client_path, self.server_path)

    def test_dangling_symbolic_link_not_followed(self):
        os.symlink(os.path.join(self.outside, 'created-there'), self.server_path)
        self.check_refused(self.server_path, 'symbolic link', self.client_path, self.server_path)

    def test_fifo_refused_without_waiting_for_a_reader(self):
        os.mkfifo(self.client_path)
        self.check_refused(self.client_path, 'FIFO', self.client_path, self.server_path)

    def test_fifo_with_a_reader_refused(self):
        os.mkfifo(self.server_path)
        reader = os.open(self.server_path, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, reader)
        self.check_refused(self.server_path, 'FIFO', self.client_path, self.server_path)
        self.assertEqual(os.read(reader, 100), b'')

    def test_socket_refused(self):
        with socket.socket(socket.AF_UNIX) as listening:
            listening.bind(self.client_path)
            self.check_refused(self.client_path, 'socket', self.client_path, self.server_path)

    def test_device_refused(self):
        """A device node of the test's own (a copy of /dev/null's numbers, in its folder), where root may make one."""
        device = os.path.join(self.dir, 'device')
        try:
            os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except (OSError, AttributeError) as error:
            self.skipTest('cannot make a device node here: %s' % error)
        os.chmod(device, 0o666)
        self.check_refused(device, 'device', self.client_path, device)
        self.assertEqual(mode_of(device), 0o666)

    def test_rerun_over_an_earlier_save(self):
        """The vimdiff workflow: saving again over our own earlier save replaces it, silently."""
        self.earlier_save()
        with SaveSession(self.client_path, self.server_path) as save:
            self.assertEqual(save.warnings, [])
            save.one_session(self, b'{"class": "again"}\n', b'{"class": "welcome"}\n')
            status, _, err = save.tool.finish()
        self.assertEqual(status, 0, err)
        self.assertEqual(read(self.client_path), b'{\n    "class": "again"\n}\n')
        self.assertEqual(read(self.server_path), b'{\n    "class": "welcome"\n}\n')
        self.assertEqual((mode_of(self.client_path), mode_of(self.server_path)), (0o600, 0o600))

    def test_existing_file_keeps_its_mode_and_others_reading_it_is_said(self):
        write(self.client_path, OLD, 0o644)
        with SaveSession(self.client_path, self.server_path) as save:
            self.assertEqual(len(save.warnings), 1, save.warnings)
            self.assertIn(self.client_path, save.warnings[0])
            self.assertIn('0644', save.warnings[0])
            save.one_session(self, b'{"class": "again"}\n', b'{"class": "welcome"}\n')
            status, _, err = save.tool.finish()
        self.assertEqual(status, 0, err)
        self.assertEqual(read(self.client_path), b'{\n    "class": "again"\n}\n')
        self.assertEqual((mode_of(self.client_path), mode_of(self.server_path)), (0o644, 0o600))

    def loop_until_refused(self, client_path, server_path):
        """Session 1 is saved; session 2's files are refused, which ends the tool: return stderr."""
        with SaveSession(client_path, server_path, '--loop') as save:
            save.one_session(self, b'{"class": "first"}\n', b'{"class": "welcome"}\n')
            client, server = save.tool.connect()
            status = save.tool.process.wait(TIMEOUT)
            client.close()
            server.close()
            err = save.tool.start_line + save.tool.process.stderr.read().decode('utf-8', 'replace')
        self.assertEqual(status, 1, err)
        self.assertNotIn('Traceback', err)
        return [line for line in err.splitlines() if 'listening' not in line]

    def test_loop_numbered_file_follows_the_same_rule(self):
        os.symlink(self.victim, self.client_path + '.2')
        before = snapshot(self.outside)
        lines = self.loop_until_refused(self.client_path, self.server_path)
        self.assertEqual(lines, ['ctisave: cannot write %s.2: it is a symbolic link, which ctisave does not '
                                 'follow: name the file itself' % self.client_path])
        self.assertEqual(snapshot(self.outside), before)
        self.assertEqual(read(self.client_path), b'{\n    "class": "first"\n}\n')
        self.assertFalse(os.path.lexists(self.server_path + '.2'))

    def test_loop_never_overwrites_a_file_it_saved(self):
        """The check at run time, behind the one at start: CLIENTFILE.2 made a hard link to SERVERFILE once
        the tool runs; the second session may not empty the first one's server file."""
        with SaveSession(self.client_path, self.server_path, '--loop') as save:
            save.one_session(self, b'{"class": "first"}\n', b'{"class": "welcome"}\n')
            os.link(self.server_path, self.client_path + '.2')
            client, server = save.tool.connect()
            status = save.tool.process.wait(TIMEOUT)
            client.close()
            server.close()
            err = save.tool.process.stderr.read().decode('utf-8', 'replace')
        self.assertEqual(status, 1, err)
        self.assertEqual(err.splitlines(), ['ctisave: cannot write %s.2: this run already saved into it'
                                            % self.client_path])
        self.assertEqual(read(self.server_path), b'{\n    "class": "welcome"\n}\n')


class NumberedClashTest(FolderTestCase):
    """--loop with one file being the other's numbered file (SERVERFILE being CLIENTFILE.2, in any spelling):
    a usage error at start, every file left as it was."""

    def assertRefused(self, client_path, server_path, needle):
        before = snapshot(self.dir)
        status, out, err = run_ctisave('127.0.0.1', client_path, server_path, '--loop', '--listen-port', '0',
                                       '--listen-addr', '127.0.0.1', cwd=self.dir)
        self.assertOneLine(err, status, 2, needle, 'which --loop writes for session')
        self.assertEqual(snapshot(self.dir), before)

    def test_server_file_is_client_file_2(self):
        self.assertRefused('c', 'c.2', 'SERVERFILE (c.2) is CLIENTFILE.2')

    def test_spelled_differently(self):
        self.assertRefused('c', './c.3', 'SERVERFILE (./c.3) is CLIENTFILE.3')
        self.assertRefused(os.path.join(self.dir, 'c'), 'c.12', 'is CLIENTFILE.12')

    def test_client_file_is_server_file_n(self):
        self.assertRefused('s.4', 's', 'CLIENTFILE (s.4) is SERVERFILE.4')

    def test_through_a_linked_folder(self):
        os.symlink('.', os.path.join(self.dir, 'here'))
        self.assertRefused('c', os.path.join('here', 'c.2'), 'is CLIENTFILE.2')

    def test_hard_link_to_a_numbered_file(self):
        write(os.path.join(self.dir, 'c.5'), OLD)
        os.link(os.path.join(self.dir, 'c.5'), os.path.join(self.dir, 'other'))
        self.assertRefused('c', 'other', 'SERVERFILE (other) is CLIENTFILE.5')

    def test_other_names_start(self):
        """c.1, c.02 and c.2x are not numbered files; without --loop, c.2 is only ever SERVERFILE."""
        for names in (['c', 'c.1', '--loop'], ['c', 'c.02', '--loop'], ['c', 'c.2x', '--loop'], ['c', 'c.2']):
            with self.subTest(names=names):
                with SaveSession(*[os.path.join(self.dir, name) if name[0] == 'c' else name for name in names]) as save:
                    self.assertIsNotNone(save.tool.port, save.tool.start_line)


class Session:
    def __init__(self, number):
        self.number = number


def noting_flushes(flush, flushed, key):
    """flush, which first appends key to flushed."""
    def noted():
        flushed.append(key)
        flush()
    return noted


class FlushTest(unittest.TestCase):
    """After each chunk, only the files that were written to are flushed, not every open session's."""

    def test_only_changed_files_flushed(self):
        with tempfile.TemporaryDirectory() as folder:
            output = SaveOutput(os.path.join(folder, 'client'), os.path.join(folder, 'server'))
            output.start()
            sessions = [Session(number) for number in range(1, 6)]
            for session in sessions:
                output.session_started(session)
            flushed = []
            for (session, side), file in output.files.items():
                file.flush = noting_flushes(file.flush, flushed, (session.number, side))
            busy = sessions[2]
            output.message(busy, SERVER, 0.0, {'class': 'x'}, b'{"class": "x"}')
            output.flush()
            self.assertEqual(flushed, [(3, SERVER)])
            self.assertEqual(read(os.path.join(folder, 'server.3')), b'{\n    "class": "x"\n}\n')
            del flushed[:]
            output.flush()
            self.assertEqual(flushed, [])
            output.message(busy, CLIENT, 0.0, None, b'text')
            output.session_ended(busy, 0.0)
            output.flush()
            self.assertEqual(sorted(flushed), [(3, CLIENT), (3, SERVER)])      # closed with its session, no other
            self.assertEqual(read(os.path.join(folder, 'client.3')), b'text\n')
            output.close()


if __name__ == '__main__':
    unittest.main()
