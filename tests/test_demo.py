"""`make demo`: ctisim's simulated server and client with the real ctispy in between."""

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

from tests.harness import ROOT, TIMEOUT, parse_spy_output, tool_path


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


class DemoTest(unittest.TestCase):

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
        shown = self.check_session(*run([sys.executable, tool_path('ctisim'), 'demo']))
        classes = [message['class'] for direction, message in shown if direction == 'Client > Server']
        for class_ in ('ipbxcommand', 'history', 'directory', 'keepalive'):
            self.assertIn(class_, classes)

    def test_an_error_answer_and_a_slow_answer(self):
        """The session shows what can go wrong: a request refused with an error_string (a list the server does not
        have) and a directory search answered 150 ms or more after it was asked (the simulated lookup's delay)."""
        status, out, err = run([sys.executable, tool_path('ctisim'), 'demo'])
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
        self.check_session(*run(['make', '-s', '--no-print-directory', 'demo', 'PYTHON=' + sys.executable]))


if __name__ == '__main__':
    unittest.main()
