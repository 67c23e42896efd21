"""The web view's store (ctiproxy/web/store.py) and the fan-out output, fed by the real analysis: no I/O."""

import io
import threading
import unittest

from ctiproxy.analysis import Analysis
from ctiproxy.events import SessionInfo
from ctiproxy.filters import CLIENT, SERVER, MessageFilter
from ctiproxy.outputs import FanOut, JsonLinesOutput, Output, SpyOutput
from ctiproxy.framing import parse_message
from ctiproxy.web.store import MAX_ROWS, Query, QueryError, WebStore

START = 1790000000.0
TRAFFIC = [
    (SERVER, b'XiVO CTI Server Version 1.2.3\n'),
    (CLIENT, b'{"class": "login_id", "commandid": 1, "userlogin": "alice"}\n'),
    (SERVER, b'{"class": "login_id", "replyid": 1, "status": "failed"}\n'),
    (CLIENT, b'{"class": "getlist", "commandid": 2, "function": "listid"}\n'),
    (CLIENT, b'{"class": "getlist", "commandid": 2, "function": "updateconfig"}\n'),
    (SERVER, b'{"class": "getlist", "replyid": 2, "list": []}\n'),
    (CLIENT, b'{"class": ["odd", "class"], "commandid": "x"}\n'),
]


def run_session(output, traffic=TRAFFIC, message_filter=None, number=1, end=True):
    """Feed one session's traffic through the analysis into output, a line every 0.4 s; return the session."""
    analysis = Analysis(output, message_filter)
    session = SessionInfo(number, START, ('127.0.0.1', 40000), ('xivo', 5003))
    analysis.session_opened(session)
    for step, (side, line) in enumerate(traffic):
        analysis.received(session, side, START + 0.4 * (step + 1), line)
    if end:
        session.ended_first = CLIENT
        analysis.session_closed(session, START + 10)
    return session


class Recorder(Output):
    """Notes the events it gets."""

    def __init__(self, sees_all=False, wants_messages=True):
        self.sees_all = sees_all
        self.wants_messages = wants_messages
        self.events = []

    def __getattribute__(self, name):
        if name in ('seen', 'message', 'chunk', 'session_started', 'session_ended', 'flush', 'start'):
            events = object.__getattribute__(self, 'events')
            return lambda *args: events.append(name)
        return object.__getattribute__(self, name)


class StoreTest(unittest.TestCase):

    def setUp(self):
        self.store = WebStore()
        run_session(self.store)
        self.rows = self.store.rows(1, 0, 100)['rows']

    def test_rows(self):
        self.assertEqual([(row['kind'], row['dir'], row['class'], row['function']) for row in self.rows], [
            ('notice', None, None, None), ('text', SERVER, None, None), ('message', CLIENT, 'login_id', None),
            ('message', SERVER, 'login_id', None), ('message', CLIENT, 'getlist', 'listid'),
            ('message', CLIENT, 'getlist', 'updateconfig'), ('message', SERVER, 'getlist', None),
            ('message', CLIENT, '["odd", "class"]', None), ('notice', None, None, None)])
        self.assertEqual(self.rows[0]['preview'], 'session #1 started: client 127.0.0.1:40000, server xivo:5003')
        self.assertEqual(self.rows[-1]['preview'], 'session #1 ended: the client closed')
        self.assertEqual(self.rows[1]['size'], len(TRAFFIC[0][1]) - 1)
        self.assertEqual(self.rows[2]['t'], START + 0.8)

    def test_answers_link_to_their_requests(self):
        rows = self.rows
        self.assertEqual([row['answer'] for row in rows], [None, None, 3, None, 6, None, None, None, None])
        self.assertEqual([row['reply_to'] for row in rows], [None, None, None, 2, None, None, 4, None, None])
        self.assertEqual(rows[3]['reply_ms'], 400.0)
        self.assertEqual(rows[3]['error'], 'status failed')
        # the second getlist with commandid 2 waits for its own answer, and never gets one
        self.assertEqual([row['unanswered'] for row in rows], [False] * 5 + [True, False, True, False])

    def test_sessions(self):
        session, = self.store.sessions()
        self.assertEqual(session, {
            'number': 1, 'client': '127.0.0.1:40000', 'server': 'xivo:5003', 'opened': START,
            'opened_time': session['opened_time'], 'ended': START + 10, 'state': 'closed',
            'end': 'session #1 ended: the client closed', 'messages': {'client': 4, 'server': 3}, 'rows': 9,
            'errors': 1, 'unanswered': 2, 'encrypted': False})

    def test_timeline(self):
        timeline = self.store.timeline(1)
        self.assertEqual(timeline['per_second'], [
            {'t': int(START), 'client': 1, 'server': 1}, {'t': int(START) + 1, 'client': 1, 'server': 1},
            {'t': int(START) + 2, 'client': 2, 'server': 1}])
        self.assertEqual(timeline['replies'], [{'t': START + 1.2, 'ms': 400.0, 'class': 'login_id'},
                                               {'t': START + 2.4, 'ms': 800.0, 'class': 'getlist'}])

    def test_the_download_is_what_json_lines_writes(self):
        stream = io.BytesIO()
        run_session(JsonLinesOutput(stream, loop=True))
        self.assertEqual(b''.join(self.store.download(1)), stream.getvalue())

    def test_detail(self):
        detail = self.store.row(1, 2)
        self.assertEqual(detail['message'], {'class': 'login_id', 'commandid': 1, 'userlogin': 'alice'})
        self.assertEqual(detail['line'], TRAFFIC[1][1].decode().strip())
        self.assertEqual(self.store.row(1, 1)['message'], None)
        for number, index in ((1, 9), (1, -1), (2, 0)):
            with self.assertRaises(KeyError):
                self.store.row(number, index)

    def test_row_ranges(self):
        self.assertEqual([row['i'] for row in self.store.rows(1, 7, 100)['rows']], [7, 8])
        self.assertEqual(self.store.rows(1, 50, 100), {'session': 1, 'total': 9, 'rows': []})
        with self.assertRaises(KeyError):
            self.store.rows(3, 0, 1)

    def test_match(self):
        def indices(query):
            return self.store.match(1, query)['indices']
        self.assertEqual(indices('class=getlist'), [4, 5, 6])
        self.assertEqual(indices('class=getlist function=listid function=updateconfig'), [4, 5])
        self.assertEqual(indices('class=getlist -function=listid'), [5, 6])
        self.assertEqual(indices('commandid=2'), [4, 5])
        self.assertEqual(indices('commandid="x"'), [7])
        self.assertEqual(indices('XIVO'), [0, 1])
        self.assertEqual(indices('xivo cti'), [1])
        self.assertEqual(indices('-class=login_id alice'), [])
        self.assertEqual(indices('"version 1.2"'), [1])
        self.assertEqual(self.store.match(1, 'class=getlist')['total'], 9)

    def test_matches_are_kept_and_extended_as_rows_come(self):
        store = WebStore()
        analysis = Analysis(store)
        session = SessionInfo(1, START)
        analysis.session_opened(session)
        analysis.received(session, CLIENT, START, TRAFFIC[1][1] + TRAFFIC[3][1])
        self.assertEqual(store.match(1, 'class=login_id')['indices'], [1])
        analysis.received(session, SERVER, START, TRAFFIC[2][1])
        self.assertEqual(store.match(1, 'class=login_id'), {'session': 1, 'total': 4, 'indices': [1, 3]})
        analysis.received(session, SERVER, START, TRAFFIC[5][1] + TRAFFIC[2][1])
        self.assertEqual(store.match(1, 'class=login_id'), {'session': 1, 'total': 6, 'indices': [1, 3, 5]})

    def test_the_byte_shortcut_decides_as_the_filter_does(self):
        lines = [b'{"class": "getlist", "tid": 17}', b'{"\\u0063lass": "getlist"}', b'{"class": "get\\u006cist"}',
                 b'{"class": "getlist", "a": {"b": "x"}}', b'{"a": {"b": "x y"}}', b'{"tid": 17.0}', b'{"tid": "17"}',
                 b'{"class": ["getlist"]}', b'{"name": "Bob"}', b'{"name": "\\"Bob\\""}', b'{"on": false}',
                 '{"name": "\u00e9t\u00e9"}'.encode(), b'{"b": "class"}', b'{"tid": 1.7e1}']
        queries = ['class=getlist', 'tid=17', 'a.b=x', 'a.b="x y"', 'name="Bob"', 'name=Bob', 'on=false',
                   'name=\u00e9t\u00e9', 'class=getlist -tid=17', '-class=getlist', 'b=class', 'class=["getlist"]']
        store = WebStore()
        run_session(store, [(CLIENT, line + b'\n') for line in lines])
        messages = [parse_message(line) for line in lines]
        self.assertNotIn(None, messages)
        for text in queries:
            query = Query(text)
            expected = [index + 1 for index, message in enumerate(messages) if query.filter.shows(message)]
            self.assertEqual([index for index in store.match(1, text)['indices'] if 0 < index <= len(lines)],
                             expected, text)

    def test_queries_on_class_and_function_decide_as_on_the_message(self):
        lines = [b'{"class": "getlist", "function": "listid"}', b'{"class": ["getlist"]}', b'{"class": 5}',
                 b'{"class": null, "function": 7}', b'{"function": "listid"}', b'{"class": "(a big list)"}',
                 ('{"class": [%s]}' % ', '.join(['1'] * 20)).encode(), b'{"class": "getlist", "function": null}',
                 b'{"\\u0063lass": "getlist"}', b'not json', b'{"class": "5"}']
        store = WebStore()
        run_session(store, [(CLIENT, line + b'\n') for line in lines])
        rows = store.rows(1, 0, 100)['rows']
        messages = [store.row(1, row['i'])['message'] for row in rows]
        for text in ('class=getlist', 'class="(a big list)"', 'function=listid', 'class=getlist -function=listid',
                     '-class=getlist', 'class=5', 'class="5"', 'class=getlist function=listid', 'class=["getlist"]'):
            query = Query(text)
            expected = [index for index, message in enumerate(messages) if query.filter.shows(message)]
            self.assertEqual(store.match(1, text)['indices'], expected, text)

    def test_queries(self):
        self.assertEqual(Query('a=1 -b=2 Free "two words"').texts, ['free', 'two words'])
        for text, error in (('=1', "expected KEY=VALUE, got '=1'"), ('-=1', "expected KEY=VALUE, got '=1'"),
                            ('"open', 'No closing quotation in the query'),
                            ('a.=1', "not a key path: 'a.' (an empty key) in 'a.=1'"),
                            ('-a..b=1', "not a key path: 'a..b' (an empty key) in 'a..b=1'")):
            with self.assertRaises(QueryError) as raised:
                Query(text)
            self.assertEqual(str(raised.exception), error)

    def test_the_filters_of_the_command_line_apply(self):
        store = WebStore(strip=True)
        run_session(store, message_filter=MessageFilter(include=[('class', 'login_id')], strip=['userlogin'],
                                                        directions=[CLIENT]))
        rows = store.rows(1, 0, 100)['rows']
        self.assertEqual([(row['kind'], row['class']) for row in rows],
                         [('notice', None), ('message', 'login_id'), ('notice', None)])
        self.assertEqual(store.row(1, 1)['line'], '{"class": "login_id", "commandid": 1}')

    def test_the_oldest_closed_sessions_go_beyond_max_kept(self):
        store = WebStore()
        analysis = Analysis(store)
        sessions = [SessionInfo(number, START) for number in (1, 2, 3)]
        for session in sessions:
            analysis.session_opened(session)
            analysis.received(session, CLIENT, START, TRAFFIC[1][1] * 4)
        store.max_kept = store.kept + 2000      # room for one session's end (its notice and records)
        analysis.session_closed(sessions[1], START + 1)
        self.assertEqual([session['number'] for session in store.sessions()], [1, 2, 3])
        analysis.session_closed(sessions[0], START + 2)
        self.assertEqual([session['number'] for session in store.sessions()], [1, 3])     # the first closed goes
        self.assertLessEqual(store.kept, store.max_kept)
        analysis.received(sessions[2], CLIENT, START, TRAFFIC[1][1] * 40)
        self.assertEqual([session['number'] for session in store.sessions()], [3])        # an open one stays
        self.assertEqual(store.sessions()[0]['rows'], 45)
        self.assertEqual(store.get_info()['forgotten'], 2)
        with self.assertRaises(KeyError):
            store.rows(1, 0, 1)

    def test_at_most_max_rows_at_once(self):
        store = WebStore()
        run_session(store, [(CLIENT, b'{"class": "keepalive"}\n' * (MAX_ROWS + 10))])
        self.assertEqual(len(store.rows(1, 0, MAX_ROWS * 2)['rows']), MAX_ROWS)


class EncryptedTest(unittest.TestCase):

    def test_starttls_is_said_once(self):
        """As the relay says it: the server's side encrypted, its notice, then the client's side."""
        store = WebStore()
        analysis = Analysis(store)
        session = SessionInfo(1, START, ('127.0.0.1', 40000), ('xivo', 5003))
        analysis.session_opened(session)
        for side, line in TRAFFIC[:2]:
            analysis.received(session, side, START + 1, line)
        analysis.encrypted(session, SERVER, START + 5)
        analysis.notice(session, START + 5, 'STARTTLS: the session is now encrypted and cannot be shown')
        analysis.encrypted(session, CLIENT, START + 6)
        previews = [row['preview'] for row in store.rows(1, 0, 100)['rows']]
        self.assertEqual([text for text in previews if 'STARTTLS' in text],
                         ['STARTTLS: the session is now encrypted and cannot be shown'])
        self.assertTrue(store.sessions()[0]['encrypted'])


class EventTest(unittest.TestCase):
    """The versions the event streams wait on, and the news they send."""

    def test_news(self):
        store = WebStore()
        whole, news, version = store.news(None)
        self.assertEqual((whole, news), (True, []))
        self.assertEqual(store.news(version), (False, None, version))
        run_session(store, TRAFFIC[:2], end=False)
        whole, news, version = store.news(version)
        self.assertEqual((whole, [(summary['rows'], rows) for summary, rows in news]), (False, [(3, 3)]))
        self.assertEqual(store.news(version), (False, None, version))

    def test_news_hold_only_the_sessions_that_changed(self):
        store = WebStore()
        analysis = Analysis(store)
        sessions = [SessionInfo(number, START + number, ('127.0.0.1', 40000 + number), ('xivo', 5003))
                    for number in range(1, 301)]
        for session in sessions:
            analysis.session_opened(session)
            analysis.received(session, CLIENT, session.opened, TRAFFIC[0][1])
        whole, news, version = store.news(None)
        self.assertEqual((whole, len(news)), (True, 300))
        analysis.received(sessions[122], SERVER, START + 400, TRAFFIC[1][1])
        whole, news, version = store.news(version)
        self.assertEqual((whole, [(summary['number'], rows) for summary, rows in news]), (False, [(123, 3)]))

    def test_a_change_wakes_a_waiter_and_stop_ends_it(self):
        store = WebStore()
        version = store.version
        woken = []
        waiter = threading.Thread(target=lambda: woken.append(store.wait(version, 20.0)))
        waiter.start()
        run_session(store, TRAFFIC[:1], end=False)
        waiter.join(20.0)
        self.assertNotEqual(woken[0][0], version)
        self.assertEqual(woken[0][1], False)
        store.stop()
        self.assertEqual(store.wait(store.version, 20.0)[1], True)


class FanOutTest(unittest.TestCase):

    def test_each_event_to_each_part_that_takes_it(self):
        raw, seeing = Recorder(sees_all=False, wants_messages=False), Recorder(sees_all=True)
        fan = FanOut(raw, seeing)
        self.assertEqual((fan.sees_all, fan.wants_messages), (True, True))
        run_session(fan, TRAFFIC[:2])
        self.assertNotIn('message', raw.events)
        self.assertNotIn('seen', raw.events)
        self.assertEqual(raw.events.count('chunk'), 2)
        self.assertEqual(seeing.events.count('seen'), 2)
        self.assertEqual(seeing.events.count('message'), 2)
        self.assertEqual(FanOut(raw).sees_all, False)

    def test_the_terminal_shows_the_same_beside_the_store(self):
        alone, beside = io.BytesIO(), io.BytesIO()
        run_session(SpyOutput(alone, loop=True))
        store = WebStore()
        run_session(FanOut(SpyOutput(beside, loop=True), store))
        self.assertEqual(beside.getvalue(), alone.getvalue())
        self.assertEqual(store.sessions()[0]['rows'], 9)


if __name__ == '__main__':
    unittest.main()
