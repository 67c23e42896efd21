"""Pairing answers with requests (I/O-free): oldest request first per commandid, a bound on what is kept,
error answers of each shape."""

import unittest

from ctiproxy.pairing import Request, RequestPairing, class_name, error_of, request_label
from ctiproxy.stats import SessionStats


def request(number, kind='getlist', **fields):
    return dict({'class': kind, 'commandid': number}, **fields)


def answer(number, kind='getlist', **fields):
    return dict({'class': kind, 'replyid': number}, **fields)


class RequestPairingTest(unittest.TestCase):

    def test_answered_requests_leave_nothing(self):
        pairing = RequestPairing()
        for number in range(1000):
            pairing.request(request(number), float(number))
            reply = pairing.answer(answer(number), number + 0.25)
            self.assertEqual(reply.request, Request('getlist', None, number, float(number)))
            self.assertEqual(reply.ms, 250.0)
        self.assertEqual(len(pairing._by_id), 0)
        self.assertEqual(pairing.unanswered(), [])
        self.assertIsNone(pairing.answer(answer(5), 2000.0))

    def test_same_commandid_oldest_first(self):
        pairing = RequestPairing()
        pairing.request(request(7, 'a'), 1.0)
        pairing.request(request(7, 'b', function='f'), 2.0)
        self.assertEqual(pairing.answer(answer(7), 3.0).request, Request('a', None, 7, 1.0))
        self.assertEqual(pairing.answer(answer(7), 3.0).request, Request('b', 'f', 7, 2.0))
        self.assertIsNone(pairing.answer(answer(7), 3.0))

    def test_answer_before_any_request_pairs_nothing(self):
        pairing = RequestPairing()
        self.assertIsNone(pairing.answer(answer(1), 1.0))
        pairing.request(request(1), 2.0)
        self.assertEqual(pairing.answer(answer(1), 2.5).ms, 500.0)

    def test_ids_that_cannot_pair(self):
        pairing = RequestPairing()
        for commandid in (None, True, [1], {'a': 1}):
            self.assertIsNone(pairing.request({'class': 'x', 'commandid': commandid}, 1.0))
        self.assertEqual(pairing.kept, 0)
        self.assertIsNone(pairing.answer({'class': 'x', 'replyid': [1]}, 1.0))

    def test_long_string_ids_are_not_kept(self):
        """What waits stays small: a 100 KB commandid is not kept (before: 10,000 of them, a GB)."""
        pairing = RequestPairing()
        self.assertIsNone(pairing.request(request('x' * 100000), 1.0))
        self.assertEqual(pairing.kept, 0)
        self.assertIsNotNone(pairing.request(request('x' * 256), 1.0))
        self.assertIsNone(pairing.request(request(10 ** 5000), 1.0))
        self.assertIsNotNone(pairing.request(request(10 ** 255), 1.0))

    def test_beyond_the_limit_the_oldest_is_forgotten_and_counted(self):
        pairing = RequestPairing(limit=100)
        for number in range(250):
            pairing.request(request(number), float(number))
        self.assertEqual(pairing.kept, 100)
        self.assertEqual(pairing.forgotten, 150)
        self.assertEqual([waiting.commandid for waiting in pairing.unanswered()], list(range(150, 250)))
        self.assertIsNone(pairing.answer(answer(0), 300.0))     # forgotten: its answer is not matched
        self.assertEqual(pairing.answer(answer(249), 300.0).request.commandid, 249)
        self.assertEqual(len(pairing.unanswered()), 99)
        self.assertEqual(pairing.forgotten, 150)

    def test_unanswered_in_the_order_sent(self):
        pairing = RequestPairing()
        pairing.request(request(2, 'b'), 1.0)
        pairing.request(request(1, 'a', function='f'), 2.0)
        pairing.request(request(2, 'c'), 3.0)
        self.assertEqual(pairing.unanswered(), [Request('b', None, 2, 1.0), Request('a', 'f', 1, 2.0),
                                                Request('c', None, 2, 3.0)])

    def test_class_names_are_shared(self):
        pairing = RequestPairing()
        first = pairing.request(request(1, ''.join(['get', 'list'])), 1.0)
        second = pairing.request(request(2, ''.join(['get', 'list'])), 2.0)
        self.assertIs(first.kind, second.kind)

    def test_session_report_counts_forgotten_requests_apart(self):
        stats = SessionStats(1, 0.0)
        stats.pairing = RequestPairing(limit=10)
        for number in range(30):
            stats.add_line('client', 1.0, request(number))
        for number in range(25, 30):
            stats.add_line('server', 1.5, answer(number))
        report = stats.report()
        self.assertEqual(report['replies']['getlist']['count'], 5)
        self.assertEqual(report['replies']['getlist']['median_ms'], 500.0)
        self.assertEqual(report['unanswered'], 5)
        self.assertEqual(report['not_timed'], 20)


class NamesTest(unittest.TestCase):

    def test_class_name(self):
        self.assertEqual(class_name('getlist'), 'getlist')
        self.assertEqual(class_name(None), 'null')
        self.assertEqual(class_name([1, 2]), '[1, 2]')
        self.assertEqual(class_name(list(range(100))), '(a big list)')
        self.assertEqual(class_name({str(n): n for n in range(100)}), '(a big object)')

    def test_request_label(self):
        self.assertEqual(request_label('getlist', 'updateconfig'), 'getlist/updateconfig')
        self.assertEqual(request_label('login_id', None), 'login_id')


class ErrorAnswerTest(unittest.TestCase):

    def test_error_shapes(self):
        self.assertEqual(error_of({'class': 'login_id', 'replyid': 1, 'error_string': 'user_not_found'}),
                         'user_not_found')
        self.assertEqual(error_of({'class': 'x', 'error_string': {'code': 3}}), '{"code": 3}')
        self.assertEqual(error_of({'class': 'ipbxcommand', 'status': 'ko'}), 'status ko')
        self.assertEqual(error_of({'class': 'error', 'replyid': 2}), 'error')

    def test_normal_answers(self):
        for message in ({'class': 'getlist', 'replyid': 1}, {'class': 'x', 'status': 'OK'},
                        {'class': 'getlist', 'function': 'updatestatus', 'status': {'availstate': 'away'}},
                        {'class': 'starttls', 'status': True}):
            self.assertIsNone(error_of(message), message)


if __name__ == '__main__':
    unittest.main()
