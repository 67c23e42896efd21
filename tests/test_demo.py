"""`make demo`: ctisim's simulated server and client with the real ctispy in between."""

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

from ctiproxy.sim.demo import cut_line
from tests.harness import ROOT, TIMEOUT, parse_spy_output, tool_path

ONELINE = re.compile(r'^(\d\d:\d\d:\d\d\.\d{6}) (C>S|S>C) (.*)$')


def run(command):
    """Run command in the repository to its end (bounded); return (exit code, stdout, stderr)."""
    process = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=TIMEOUT, env=dict(os.environ, NO_COLOR='1'))
    return process.returncode, process.stdout.decode('utf-8'), process.stderr.decode('utf-8')


def messages(out):
    """ctispy --pretty-print's output as [(direction, message or the text of a line that is not JSON)]."""
    shown = []
    for _, direction, body in parse_spy_output(out):
        text = '\n'.join(body)
        try:
            shown.append((direction, json.loads(text)))
        except ValueError:
            shown.append((direction, text))
    return shown


def oneline_messages(out):
    """ctispy --oneline's output as [(time, direction, message or text, note after '  # ' or None)]."""
    shown = []
    for line in out.splitlines():
        match = ONELINE.match(line)
        if not match:
            continue
        stamp, direction, rest = match.groups()
        try:
            message, end = json.JSONDecoder().raw_decode(rest)
        except ValueError:
            shown.append((stamp, direction, rest, None))
            continue
        note = rest[end:]
        shown.append((stamp, direction, message, note[len('  # '):] if note.startswith('  # ') else None))
    return shown


class ShortDemoTest(unittest.TestCase):
    """`make demo` by default: one screen, each answer paired, the error answer and the slow answer marked."""

    def check_short(self, status, out, err):
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        self.assertLessEqual(len((out + err).splitlines()), 40)       # one screenful
        shown = oneline_messages(out)
        self.assertEqual(shown[0][1:3], ('S>C', 'XiVO CTI Server Version 1.2.3 (simulated)'))
        notes = {message.get('replyid'): note for _, direction, message, note in shown[1:] if direction == 'S>C'}
        requests = {message['commandid']: message for _, direction, message, _ in shown if direction == 'C>S'}
        self.assertEqual(set(notes), set(requests))                    # every request shown has its answer shown
        for replyid, note in notes.items():
            self.assertTrue(note.startswith('reply to ' + requests[replyid]['class']), note)
        errors = [note for note in notes.values() if 'ERROR' in note]
        self.assertEqual(errors, ['reply to getlist/listid, %s ms, ERROR: unknown listname'
                                  % re.search(r'listid, ([\d.]+) ms, ERROR', errors[0]).group(1)])
        slow = [(requests[replyid]['class'], note) for replyid, note in notes.items() if note.endswith(', SLOW')]
        self.assertEqual([class_ for class_, _ in slow], ['directory'])
        self.assertGreaterEqual(float(re.search(r', ([\d.]+) ms', slow[0][1]).group(1)), 100)
        self.assertIn('make demo ARGS=--pretty-print', err)

    def test_demo(self):
        self.check_short(*run([sys.executable, tool_path('ctisim'), 'demo']))

    @unittest.skipIf(shutil.which('make') is None, 'make is not installed')
    def test_make_demo(self):
        self.check_short(*run(['make', '-s', '--no-print-directory', 'demo', 'PYTHON=' + sys.executable]))

    def test_ctispy_options_instead(self):
        """Options ctisim does not know go to ctispy, in place of the short display; a bad one is ctispy's usage
        error (exit 2)."""
        status, out, err = run([sys.executable, tool_path('ctisim'), 'demo', '--oneline', '--include',
                                'class=directory', '--time', 'delta'])
        self.assertEqual(status, 0, err)
        self.assertEqual([line.split()[1] for line in out.splitlines()], ['C>S', 'S>C'])
        self.assertRegex(out, r'^00:00:00\.\d{6} C>S {"class": "directory"')
        status, _, err = run([sys.executable, tool_path('ctisim'), 'demo', '--no-such-option'])
        self.assertEqual(status, 2)
        self.assertIn('ctispy: error: unrecognized arguments: --no-such-option', err)
        self.assertNotIn('Traceback', err)

    def test_cut_line(self):
        """On a terminal the short demo cuts each line to its width, keeping an answer's note in sight."""
        note = '  # reply to getlist/listid, 0.1 ms, ERROR: unknown listname'
        line = '17:30:24.481539 S>C {"class": "getlist", "error_string": "unknown listname", "replyid": 24}' + note
        self.assertEqual(cut_line(line, len(line)), line)
        self.assertEqual(cut_line(line, 100), line[:100 - len(note) - 1] + '\u2026' + note)
        self.assertEqual(len(cut_line(line, 100)), 100)
        self.assertEqual(cut_line(line, 40), line[:39] + '\u2026')          # no room for the message: cut at the end
        self.assertEqual(cut_line('x' * 50, 20), 'x' * 19 + '\u2026')


class DemoTest(unittest.TestCase):
    """`make demo ARGS=--pretty-print`: the whole session, each message indented."""

    def check_session(self, status, out, err):
        self.assertEqual(status, 0, err)
        self.assertNotIn('Traceback', err)
        self.assertRegex(err, r'ctispy: listening on port \d+ of 127\.0\.0\.1; relaying each client to 127\.0\.0\.1:')
        shown = messages(out)
        self.assertEqual({direction for direction, _ in shown}, {'Client > Server', 'Server > Client'})
        self.assertEqual(shown[0], ('Server > Client', 'XiVO CTI Server Version 1.2.3 (simulated)'))
        requests = [message for direction, message in shown if direction == 'Client > Server']
        answers = [message for direction, message in shown[1:] if direction == 'Server > Client']
        self.assertTrue(all(isinstance(message, dict) for message in requests + answers))
        self.assertEqual([message['class'] for message in requests[:3]], ['login_id', 'login_pass', 'login_capas'])
        self.assertIn('getlist', {message['class'] for message in requests})
        self.assertEqual([message['commandid'] for message in requests], list(range(1, len(requests) + 1)))
        self.assertEqual(sorted(message['replyid'] for message in answers if 'replyid' in message),
                         [message['commandid'] for message in requests])
        self.assertIn('H\u00e9l\u00e8ne Dupr\u00e9', out)          # shown as characters by ctispy
        return shown

    def test_demo(self):
        shown = self.check_session(*run([sys.executable, tool_path('ctisim'), 'demo', '--pretty-print']))
        classes = [message['class'] for direction, message in shown if direction == 'Client > Server']
        for class_ in ('ipbxcommand', 'history', 'directory', 'keepalive'):
            self.assertIn(class_, classes)

    def test_an_error_answer_and_a_slow_answer(self):
        """The session shows what can go wrong: a request refused with an error_string (a list the server does not
        have) and a directory search answered 150 ms or more after it was asked (the simulated lookup's delay)."""
        status, out, err = run([sys.executable, tool_path('ctisim'), 'demo', '--pretty-print'])
        shown = self.check_session(status, out, err)
        refused = [message for direction, message in shown if direction == 'Server > Client'
                   and 'error_string' in message]
        self.assertEqual([(message['class'], message['error_string']) for message in refused],
                         [('getlist', 'unknown listname')])
        times = [datetime.datetime.strptime(stamp, '%H:%M:%S.%f')
                 for stamp in re.findall(r'^    (\d\d:\d\d:\d\d\.\d{6}) ', out, re.M)]
        index = [message.get('class') if isinstance(message, dict) else None
                 for _, message in shown].index('directory')
        self.assertEqual(shown[index + 1][1]['class'], 'directory')      # its answer, next
        self.assertGreaterEqual((times[index + 1] - times[index]).total_seconds(), 0.15)

    @unittest.skipIf(shutil.which('make') is None, 'make is not installed')
    def test_make_demo(self):
        # --no-print-directory: under `make -C DIR test` the inner make would add its "Entering directory"
        # lines to the output.
        self.check_session(*run(['make', '-s', '--no-print-directory', 'demo', 'PYTHON=' + sys.executable,
                                 'ARGS=--pretty-print']))


if __name__ == '__main__':
    unittest.main()
