"""The web view (issue 16) in a real browser: headless Chromium loads the page of a running ctispy, live between a
scripted client and server and on a --read of a recording, and the rendered DOM is checked.

Skipped, and said so, where Chromium is not installed.  The browser runs with its profile and HOME in the test's
temporary folder, driven through its DevTools pipe (tests/chromium.py).
"""

import html.parser
import json
import os
import tempfile
import unittest

from tests.chromium import Chromium, chromium_path
from tests.harness import WebSpyProcess, close_session, recv_exactly

HOSTILE = ['<script>alert(1)</script>', '<img src=x onerror=alert(1)>', '</textarea>', 'javascript:alert(1)']


def with_fragment(url, fragment):
    return url + '#' + fragment


class DomCensus(html.parser.HTMLParser):
    """The elements of a serialised document (tag and attributes), and its text outside <script> and <style>."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.elements, self.parts, self.inside = [], [], None
        self.feed(text)
        self.close()
        self.text = ''.join(self.parts)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag in ('script', 'style'):
            self.inside = tag

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == self.inside:
            self.inside = None

    def handle_data(self, data):
        if self.inside is None:
            self.parts.append(data)

    def tags(self, name):
        return [attrs for tag, attrs in self.elements if tag == name]


def assert_traffic_is_text(test, browser):
    """No element came from the traffic: the page's one script, no img, no textarea, no handler attribute,
    links only to fragments built from numbers or to a download; and the hostile strings are there as text."""
    test.assertEqual(browser.evaluate('window.cspRefused'), [])
    census = DomCensus(browser.dom())
    test.assertEqual(len(census.tags('script')), 1, 'a script element beside the page\'s own')
    test.assertEqual(census.tags('img'), [])
    test.assertEqual(census.tags('textarea'), [])
    for tag, attrs in census.elements:
        handlers = [name for name in attrs if name.startswith('on')]
        test.assertEqual(handlers, [], 'an event handler attribute on <%s>' % tag)
    for attrs in census.tags('a'):
        href = attrs.get('href')
        if href is not None:
            test.assertRegex(href, r'^(#session=\d+(&row=\d+)?|/api/sessions/\d+/download\?token=[\w-]+)$')
    for text in HOSTILE:
        test.assertIn(text, census.text)
    return census


@unittest.skipUnless(chromium_path(), 'chromium is not installed (Debian: apt-get install chromium): '
                                      'the web view is not tested in a browser')
class BrowserTest(unittest.TestCase):
    """One Chromium for the whole class: each test opens its pages in it."""

    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory(prefix='web-browser-')
        cls.browser = Chromium(cls.folder.name)
        # what the Content-Security-Policy refused in the page (nothing: all it runs is its own nonced script)
        cls.browser.before_each_page("window.cspRefused = []; document.addEventListener('securitypolicyviolation', "
                                     "function (e) { window.cspRefused.push(e.violatedDirective + ' ' + "
                                     "e.blockedURI); });")

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.folder.cleanup()

    def setUp(self):
        self.temp = tempfile.TemporaryDirectory(prefix='web-test-')
        self.addCleanup(self.temp.cleanup)

    def visible_rows(self):
        """The table's shown rows: [{i, cells, classes}] in order (only what is rendered: the virtual window)."""
        return self.browser.evaluate('''Array.from(document.querySelectorAll('#rows .row'))
            .filter(function (r) { return !r.hidden; })
            .sort(function (a, b) { return parseFloat(a.style.top) - parseFloat(b.style.top); })
            .map(function (r) {
              var cells = Array.from(r.children).map(function (c) { return c.textContent; });
              return {i: +r.dataset.i, classes: r.className, cells: cells};
            })''')

    def href_of(self, selector):
        return self.browser.evaluate('document.querySelector(%s).getAttribute("href")' % json.dumps(selector))

    def text_of(self, selector):
        return self.browser.evaluate('(function (e) { return e ? e.textContent : null; })'
                                     '(document.querySelector(%s))' % json.dumps(selector))


class LiveTest(BrowserTest):
    """ctispy --web relaying a session: the page shows it while it runs, and its end."""

    def test_live_session_messages_reply_link_error_and_unanswered_marks(self):
        with WebSpyProcess('--loop') as tool:
            url = tool.url
            client, server = tool.connect()
            first = b'{"class": "login_id", "commandid": 1, "userlogin": "alice"}\n'
            answer = b'{"class": "login_id", "replyid": 1, "sessionid": "s1"}\n'
            client.sendall(first)
            recv_exactly(server, len(first))
            server.sendall(answer)
            recv_exactly(client, len(answer))

            self.browser.open(with_fragment(url, 'session=1'))
            self.browser.wait_for("document.querySelectorAll('#rows .row:not(.loading):not([hidden])').length >= 3")
            rows = self.visible_rows()
            self.assertTrue(rows[0]['cells'][8].startswith('session #1 started'), rows[0])
            self.assertEqual([r['cells'][3] for r in rows[1:3]], ['login_id', 'login_id'])
            self.assertEqual([r['cells'][2] for r in rows[1:3]], ['C→S', 'S→C'])
            self.assertIn('#1', self.text_of('#sessions'))
            self.assertIn('open', self.text_of('#sessions'))
            links = self.browser.evaluate('''Array.from(document.querySelectorAll('#rows a.reply-link'))
                .map(function (a) { return a.getAttribute('href'); })''')
            self.assertEqual(sorted(links), ['#session=1&row=1', '#session=1&row=2'])

            # more traffic while the page is open: an error answer, a request never answered, the end
            more = (b'{"class": "history", "commandid": 2, "xuid": "x"}\n'
                    b'{"class": "ipbxcommand", "commandid": 3, "command": "dial"}\n')
            error = b'{"class": "history", "replyid": 2, "error_string": "no such user"}\n'
            client.sendall(more)
            recv_exactly(server, len(more))
            server.sendall(error)
            recv_exactly(client, len(error))
            close_session(self, client, server)
            self.browser.wait_for("document.querySelector('#rows .row.unanswered') && "
                                  "document.querySelector('#rows .row.error') && "
                                  "/closed/.test(document.querySelector('#sessions').textContent)")
            rows = {r['i']: r for r in self.visible_rows()}
            self.assertIn('error', rows[5]['classes'].split())
            self.assertEqual(rows[5]['cells'][3], 'history')
            self.assertEqual(rows[5]['cells'][6].split()[-1], '↑3')
            self.assertIn('error', rows[5]['cells'][7])
            self.assertIn('unanswered', rows[4]['classes'].split())
            self.assertEqual(rows[4]['cells'][3], 'ipbxcommand')
            self.assertIn('unanswered', rows[4]['cells'][7])
            self.assertIn('1 err', self.text_of('#sessions'))
            self.assertIn('1 unanswered', self.text_of('#sessions'))
            status, _, err = tool.stop()
        self.assertEqual(status, 0, err)

    def test_pause_holds_the_table_and_follow_keeps_the_newest_row_in_sight(self):
        with WebSpyProcess('--loop') as tool:
            url = tool.url
            client, server = tool.connect()
            first = b'{"class": "keepalive", "commandid": 1}\n'
            client.sendall(first)
            recv_exactly(server, len(first))
            self.browser.open(with_fragment(url, 'session=1'))
            self.assertTrue(self.browser.evaluate("document.querySelector('#follow').checked"))   # an open session
            self.assertEqual(self.text_of('#count'), '2 rows')

            self.browser.evaluate("document.querySelector('#pause').click()")
            events = b''.join(b'{"class": "getlist", "function": "updatestatus", "n": %d}\n' % n for n in range(300))
            server.sendall(events)
            recv_exactly(client, len(events))
            self.browser.wait_for("/300 new/.test(document.querySelector('#pause').textContent)")
            self.assertEqual(self.text_of('#count'), '2 rows (300 new)')
            self.assertEqual([r['i'] for r in self.visible_rows()], [0, 1])

            self.browser.evaluate("document.querySelector('#pause').click()")    # resume: the rows come, followed
            self.browser.wait_for("document.querySelector('#count').textContent === '302 rows' && "
                                  "document.querySelector('#rows .row[data-i=\\'301\\']:not(.loading)')")
            self.assertEqual(self.visible_rows()[-1]['i'], 301)
            self.assertEqual(self.visible_rows()[-1]['cells'][8],
                             '{"class": "getlist", "function": "updatestatus", "n": 299}')
            close_session(self, client, server)
            status, _, err = tool.stop()
        self.assertEqual(status, 0, err)


def recording_line(when, direction, message=None, text=None):
    record = {'time': '2026-11-28T10:00:%09.6f+00:00' % when, 'session': 1, 'direction': direction}
    if message is not None:
        record['message'] = message
    else:
        record['text'] = text
    return json.dumps(record) + '\n'


def hostile_recording(path):
    """A session whose messages carry markup, a text line of markup, an error answer, an unanswered request."""
    lines = [recording_line(0, 'server', text='XiVO CTI Server Version 1.2.3 <script>alert(1)</script>'),
             recording_line(0.1, 'client', {'class': 'login_id', 'commandid': 1, 'userlogin': HOSTILE[1]}),
             recording_line(0.2, 'server', {'class': 'login_id', 'replyid': 1, 'sessionid': HOSTILE[2]}),
             recording_line(0.3, 'client', {'class': HOSTILE[0], 'function': HOSTILE[1], 'commandid': 2,
                                            'link': HOSTILE[3], 'nested': {'a': [HOSTILE[2], {'b': HOSTILE[0]}]}}),
             recording_line(0.4, 'server', {'class': HOSTILE[0], 'replyid': 2, 'error_string': HOSTILE[1]}),
             recording_line(0.5, 'client', {'class': 'history', 'commandid': 3, 'note': HOSTILE[2]})]
    deep = {'leaf': HOSTILE[3]}
    for _ in range(300):
        deep = {'down': [deep]}
    lines.append(recording_line(0.6, 'server', {'class': 'getlist', 'function': 'deep', 'tree': deep}))
    for k in range(40):
        lines.append(recording_line(1 + k / 10, 'server', {'class': 'getlist', 'function': 'updatestatus', 'n': k}))
    with open(path, 'w') as out:
        out.writelines(lines)


class RecordingTest(BrowserTest):
    """ctispy --read RECORDING --web: one tool for the class, each test opens a state of the page."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.recording = os.path.join(cls.folder.name, 'hostile.jsonl')
        hostile_recording(cls.recording)
        cls.tool = WebSpyProcess(read=cls.recording)
        cls.url = cls.tool.url
        cls.tool.web_read_stderr_until('read to the end')

    @classmethod
    def tearDownClass(cls):
        status, _, err = cls.tool.stop()
        super().tearDownClass()
        assert status == 0, err

    def open(self, fragment):
        self.browser.open(with_fragment(self.url, fragment))

    def test_sessions_messages_and_marks(self):
        self.open('session=1')
        self.assertIn('#1', self.text_of('#sessions'))
        rows = self.visible_rows()
        self.assertEqual(rows[0]['i'], 0)
        self.assertIn('kind-notice', rows[0]['classes'])            # session #1 started
        self.assertIn('kind-text', rows[1]['classes'])
        self.assertEqual(rows[2]['cells'][3], 'login_id')
        self.assertEqual(rows[3]['cells'][6].split()[-1], '↑2')     # the answer links to its request
        self.assertEqual(rows[2]['cells'][6], '↓ answer 3')         # and the request to its answer
        self.assertIn('error', rows[5]['classes'].split())
        self.assertIn('unanswered', rows[6]['classes'].split())
        self.assertEqual(self.href_of('a.download'),
                         '/api/sessions/1/download?token=' + self.tool.token)
        self.assertTrue(self.browser.evaluate("!!document.querySelector('#timeline svg circle')"))
        assert_traffic_is_text(self, self.browser)

    def test_an_opened_row_shows_its_tree_raw_line_and_answer_link(self):
        self.open('session=1&row=4')
        self.assertFalse(self.browser.evaluate("document.querySelector('#detail').hidden"))
        tree = self.text_of('#tree')
        for text in ('"class": "<script>alert(1)</script>"', '"link": "javascript:alert(1)"', '"</textarea>"'):
            self.assertIn(text, tree)
        line = self.text_of('#detail-line')
        self.assertEqual(json.loads(line)['function'], HOSTILE[1])
        self.assertEqual(self.href_of('#detail a.reply-link'),
                         '#session=1&row=5')
        # following the link opens the answer, which links back
        self.browser.evaluate("document.body.dataset.ready = '0'; "
                              "document.querySelector('#detail a.reply-link').click()")
        self.browser.wait_for("location.hash === '#session=1&row=5' && document.body.dataset.ready === '1'")
        self.assertIn('error: <img src=x onerror=alert(1)>', self.text_of('#detail-error'))
        self.assertEqual(self.href_of('#detail a.reply-link'),
                         '#session=1&row=4')
        self.assertTrue(self.browser.evaluate("document.querySelector('#rows .row.selected').dataset.i === '5'"))
        assert_traffic_is_text(self, self.browser)

    def test_a_deep_message_opens_a_few_levels_and_more_on_demand(self):
        self.open('session=1&row=7')
        depth = 'document.querySelectorAll("#tree .node .kids:not([hidden])").length'
        opened = self.browser.evaluate(depth)
        self.assertLess(opened, 10)
        self.browser.evaluate('document.querySelector("#expand").click()')
        self.assertGreater(self.browser.evaluate(depth), 500)
        self.assertIn('"leaf": "javascript:alert(1)"', self.text_of('#tree'))

    def test_filtered_view_from_the_fragment(self):
        self.open('session=1&q=function%3Dupdatestatus%20-n%3D3')
        self.assertEqual(self.browser.evaluate("document.querySelector('#filter').value"), 'function=updatestatus -n=3')
        rows = self.visible_rows()
        self.assertTrue(rows)
        self.assertTrue(all(r['cells'][4] == 'updatestatus' for r in rows), rows)
        self.assertNotIn(11, [r['i'] for r in rows])     # n=3 is row 11
        self.assertIn('39 of 49 rows match', self.text_of('#count'))
        self.assertEqual(self.text_of('#filter-error'), '')

        self.open('session=1&q=onerror')     # free text, in the lines holding it
        self.assertEqual([r['i'] for r in self.visible_rows()], [2, 4, 5])
        # a reply link opens the answer in place, the filter kept
        self.browser.evaluate("document.body.dataset.ready = '0'; "
                              "document.querySelector('.row[data-i=\"2\"] a.reply-link').click()")
        self.browser.wait_for("location.hash === '#session=1&q=onerror&row=3' && document.body.dataset.ready === '1'")
        self.assertEqual(self.browser.evaluate("document.querySelector('#filter').value"), 'onerror')
        self.assertIn('row 3  (not in the filtered view)', self.text_of('#detail-title'))

    def test_keys_move_through_the_rows_and_the_copy_button_copies_the_line(self):
        self.open('session=1')
        self.browser.evaluate("document.querySelector('#rows').focus()")
        for key in ('ArrowDown', 'ArrowDown', 'ArrowDown', 'ArrowUp', 'ArrowDown', 'ArrowDown', 'ArrowDown'):
            self.browser.key(key)
        self.browser.wait_for("location.hash === '#session=1&row=4' && document.body.dataset.ready === '1'")
        self.assertIn('row 4 ', self.text_of('#detail-title'))
        self.assertTrue(self.browser.evaluate("document.querySelector('#rows .row.selected').dataset.i === '4'"))
        self.browser.grant_clipboard()
        self.browser.evaluate("document.querySelector('#copy').click()")
        self.browser.wait_for("document.querySelector('#copy-state').textContent !== ''")
        self.assertEqual(self.text_of('#copy-state'), 'copied')
        copied = self.browser.evaluate('navigator.clipboard.readText()')
        self.assertEqual(copied, self.text_of('#detail-line'))
        self.assertEqual(json.loads(copied)['class'], HOSTILE[0])
        self.browser.key('Escape')
        self.browser.wait_for("document.querySelector('#detail').hidden && location.hash === '#session=1'")

    def test_a_click_on_the_timeline_goes_to_that_moment(self):
        self.open('session=1')
        # the plot spans 10:00:00 to 10:00:05 (whole seconds); its middle, 2.5 s, is update n=15 (row 23)
        self.browser.evaluate('''(function () {
            var svg = document.querySelector('#timeline svg'), box = svg.getBoundingClientRect();
            var scale = box.width / svg.viewBox.baseVal.width, left = 58, right = 12;
            var x = box.left + (left + (svg.viewBox.baseVal.width - left - right) / 2) * scale;
            svg.dispatchEvent(new MouseEvent('click', {bubbles: true, clientX: x, clientY: box.top + 30}));
          })()''')
        self.browser.wait_for("/^#session=1&row=\\d+$/.test(location.hash) && document.body.dataset.ready === '1'")
        row = int(self.browser.evaluate('location.hash').rsplit('=', 1)[1])
        self.assertIn(row, range(22, 25))
        self.assertTrue(self.browser.evaluate("document.querySelector('#rows .row.selected').dataset.i === '%d'" % row))

    def test_an_invalid_filter_says_why(self):
        self.open('session=1&q=%3Dx')
        self.assertIn('=x', self.text_of('#filter-error'))
        self.assertTrue(self.browser.evaluate("document.querySelector('#filter').classList.contains('invalid')"))

    def test_typing_a_filter_applies_it_and_keeps_it_in_the_fragment(self):
        self.open('session=1')
        self.browser.evaluate('''(function () { var f = document.querySelector('#filter');
            f.value = 'class=history'; f.dispatchEvent(new Event('input')); })()''')
        self.browser.wait_for("location.hash === '#session=1&q=class%3Dhistory' && "
                              "document.querySelectorAll('#rows .row:not([hidden])').length === 1")
        self.assertEqual([r['cells'][3] for r in self.visible_rows()], ['history'])


if __name__ == '__main__':
    unittest.main()
