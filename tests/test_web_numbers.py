"""Numbers a page's script cannot hold: a session numbered beyond 2^53 (a recording may number its sessions with any
integer) keeps its exact number in the API and in the page's links; a message holding NaN or Infinity (which JSON
lacks) still opens as a tree."""

import json
import os
import tempfile
import unittest

from tests.harness import WebSpyProcess
from tests.test_web_browser import BrowserTest, with_fragment

BIG = 10 ** 30 + 1      # a float would read it as 1e+30


def big_recording(path):
    def record(when, direction, message):
        return json.dumps({'time': '2026-11-28T10:00:%09.6f+00:00' % when, 'session': BIG, 'direction': direction,
                           'message': message}) + '\n'
    with open(path, 'w') as out:
        out.write(json.dumps({'time': '2026-11-28T10:00:00.000000+00:00', 'session': BIG, 'event': 'start',
                              'client': '127.0.0.1:4000', 'server': 'xivo:5003'}) + '\n')
        out.write(record(0.1, 'client', {'class': 'getlist', 'commandid': 1, 'function': 'listid'}))
        out.write(record(0.2, 'server', {'class': 'getlist', 'replyid': 1, 'level': float('nan'),
                                         'limits': [float('inf'), -float('inf')]}))


class ServerTest(unittest.TestCase):

    def setUp(self):
        folder = tempfile.TemporaryDirectory(prefix='web-numbers-')
        self.addCleanup(folder.cleanup)
        self.path = os.path.join(folder.name, 'big.jsonl')
        big_recording(self.path)
        self.spy = WebSpyProcess(read=self.path)
        self.addCleanup(self.spy.__exit__)
        self.spy.web_read_stderr_until('read to the end')

    def test_a_big_session_number_is_exact(self):
        self.assertEqual([session['number'] for session in self.spy.web_json('/api/sessions')['sessions']],
                         [str(BIG)])
        rows = self.spy.web_json('/api/sessions/%d/rows' % BIG)
        self.assertEqual((rows['session'], rows['rows'][1]['answer']), (str(BIG), 2))

    def test_nan_and_infinity_open_as_a_tree(self):
        detail = self.spy.web_json('/api/sessions/%d/rows/2' % BIG)
        self.assertEqual(detail['message'], {'class': 'getlist', 'replyid': 1, 'level': 'NaN',
                                             'limits': ['Infinity', '-Infinity']})
        self.assertIn('NaN', detail['line'])


class PageTest(BrowserTest):

    def test_links_keep_a_big_session_number(self):
        path = os.path.join(self.temp.name, 'big.jsonl')
        big_recording(path)
        with WebSpyProcess(read=path) as spy:
            spy.web_read_stderr_until('read to the end')
            self.browser.open(with_fragment(spy.url, 'session=%d&row=1' % BIG))
            self.assertIn('#%d' % BIG, self.text_of('#sessions'))
            self.assertEqual(self.href_of('a.download'), '/api/sessions/%d/download?token=%s' % (BIG, spy.token))
            self.assertEqual(self.href_of('#detail a.reply-link'), '#session=%d&row=2' % BIG)
            self.browser.open(with_fragment(spy.url, 'session=%d&row=2' % BIG))
            self.assertIn('NaN', self.text_of('#tree'))


if __name__ == '__main__':
    unittest.main()
