"""Unit tests for filters: --strip, --include, --exclude, --no-client and --no-server."""

import json
import unittest

import tests  # noqa: F401 (first: it puts cti-proxy/ on sys.path, whichever runner runs this file)
from ctiproxy.filters import CLIENT, SERVER, MessageFilter


def shown(message_filter, messages):
    return [message for message in messages if message_filter.shows(message)]


class StripTest(unittest.TestCase):

    def test_strip_top_level_field(self):
        message = {'class': 'getlist', 'timenow': 1.5, 'tid': 17}
        self.assertEqual(MessageFilter(strip=['timenow']).strip(message), {'class': 'getlist', 'tid': 17})

    def test_strip_is_repeatable(self):
        message = {'class': 'login_id', 'commandid': 1, 'replyid': 1, 'timenow': 2.0}
        stripped = MessageFilter(strip=['timenow', 'commandid', 'replyid']).strip(message)
        self.assertEqual(stripped, {'class': 'login_id'})

    def test_strip_nested_field(self):
        message = {'class': 'getlist', 'status': {'name': 'alice', 'availstate': 'away'}, 'name': 'top'}
        stripped = MessageFilter(strip=['status.name']).strip(message)
        self.assertEqual(stripped, {'class': 'getlist', 'status': {'availstate': 'away'}, 'name': 'top'})

    def test_strip_deeply_nested_field(self):
        message = {'a': {'b': {'c': 1, 'd': 2}}}
        self.assertEqual(MessageFilter(strip=['a.b.c']).strip(message), {'a': {'b': {'d': 2}}})

    def test_strip_whole_object(self):
        message = {'class': 'x', 'status': {'name': 'alice'}}
        self.assertEqual(MessageFilter(strip=['status']).strip(message), {'class': 'x'})

    def test_strip_missing_field_leaves_message_alone(self):
        message = {'class': 'x', 'status': 'away', 'list': [{'name': 1}]}
        expected = {'class': 'x', 'status': 'away', 'list': [{'name': 1}]}
        self.assertEqual(MessageFilter(strip=['timenow', 'status.name', 'nothing.here', 'list.name']).strip(message),
                         expected)

    def test_strip_does_not_change_what_is_shown(self):
        message_filter = MessageFilter(strip=['class'])
        self.assertTrue(message_filter.shows({'class': 'x'}))
        self.assertTrue(message_filter.shows(None))


class IncludeTest(unittest.TestCase):

    def test_string_value(self):
        message_filter = MessageFilter(include=[('class', 'getlist')])
        messages = [{'class': 'getlist'}, {'class': 'login_id'}, {'other': 'getlist'}, {'class': 'getlistx'}]
        self.assertEqual(shown(message_filter, messages), [{'class': 'getlist'}])

    def test_number_matches_as_string_and_as_json(self):
        message_filter = MessageFilter(include=[('tid', '17')])
        messages = [{'tid': 17}, {'tid': '17'}, {'tid': 18}, {'tid': '017'}, {'tid': [17]}, {'tid': None}, {}]
        self.assertEqual(shown(message_filter, messages), [{'tid': 17}, {'tid': '17'}])

    def test_false_matches_false_not_zero(self):
        message_filter = MessageFilter(include=[('on_call', 'false')])
        self.assertTrue(message_filter.shows({'on_call': False}))
        self.assertTrue(message_filter.shows({'on_call': 'false'}))
        for value in (0, 0.0, None, '', [], {}, True):
            self.assertFalse(message_filter.shows({'on_call': value}), value)

    def test_one_does_not_match_true(self):
        self.assertFalse(MessageFilter(include=[('flag', '1')]).shows({'flag': True}))
        self.assertTrue(MessageFilter(include=[('flag', '1')]).shows({'flag': 1}))

    def test_true_does_not_match_one(self):
        message_filter = MessageFilter(include=[('flag', 'true')])
        self.assertTrue(message_filter.shows({'flag': True}))
        self.assertFalse(message_filter.shows({'flag': 1}))
        self.assertFalse(message_filter.shows({'flag': 1.0}))

    def test_zero_does_not_match_false(self):
        message_filter = MessageFilter(include=[('count', '0')])
        self.assertTrue(message_filter.shows({'count': 0}))
        self.assertFalse(message_filter.shows({'count': False}))

    def test_null_matches_null_not_missing(self):
        message_filter = MessageFilter(include=[('phone', 'null')])
        self.assertTrue(message_filter.shows({'phone': None}))
        self.assertTrue(message_filter.shows({'phone': 'null'}))
        self.assertFalse(message_filter.shows({}))
        self.assertFalse(message_filter.shows({'phone': 0}))

    def test_empty_value_matches_empty_string(self):
        message_filter = MessageFilter(include=[('name', '')])
        self.assertTrue(message_filter.shows({'name': ''}))
        self.assertFalse(message_filter.shows({}))
        self.assertFalse(message_filter.shows({'name': None}))

    def test_quoted_value_matches_as_json_string(self):
        """name="alice" read as JSON is the string alice."""
        message_filter = MessageFilter(include=[('name', '"alice"')])
        self.assertTrue(message_filter.shows({'name': 'alice'}))
        self.assertTrue(message_filter.shows({'name': '"alice"'}))
        self.assertFalse(message_filter.shows({'name': 'bob'}))

    def test_json_object_and_list_values(self):
        self.assertTrue(MessageFilter(include=[('status', '{"a": 1}')]).shows({'status': {'a': 1}}))
        self.assertFalse(MessageFilter(include=[('status', '{"a": 1}')]).shows({'status': {'a': 2}}))
        self.assertTrue(MessageFilter(include=[('ids', '[1, 2]')]).shows({'ids': [1, 2]}))
        self.assertFalse(MessageFilter(include=[('ids', '[1, 2]')]).shows({'ids': [2, 1]}))

    def test_nested_json_values_keep_their_types(self):
        """Deep inside a list or object too, true is not 1 and false is not 0."""
        self.assertFalse(MessageFilter(include=[('a', '[1]')]).shows({'a': [True]}))
        self.assertFalse(MessageFilter(include=[('a', '[true]')]).shows({'a': [1]}))
        self.assertFalse(MessageFilter(include=[('a', '{"x": 0}')]).shows({'a': {'x': False}}))
        self.assertFalse(MessageFilter(include=[('a', '{"x": false}')]).shows({'a': {'x': 0}}))
        deep = MessageFilter(include=[('a', '{"x": [[1, {"y": 0}]]}')])
        self.assertFalse(deep.shows({'a': {'x': [[1, {'y': False}]]}}))
        self.assertTrue(deep.shows({'a': {'x': [[1, {'y': 0}]]}}))
        self.assertTrue(MessageFilter(include=[('a', '[true, false, null]')]).shows({'a': [True, False, None]}))
        self.assertFalse(MessageFilter(include=[('a', '[null]')]).shows({'a': [0]}))
        self.assertFalse(MessageFilter(include=[('a', '["1"]')]).shows({'a': [1]}))
        self.assertFalse(MessageFilter(exclude=[('a', '[0]')]).shows({'a': [0]}))
        self.assertTrue(MessageFilter(exclude=[('a', '[0]')]).shows({'a': [False]}))

    def test_nested_lists_and_objects_are_not_interchangeable(self):
        self.assertFalse(MessageFilter(include=[('a', '[[1]]')]).shows({'a': [{'1': 1}]}))
        self.assertFalse(MessageFilter(include=[('a', '{"x": [1]}')]).shows({'a': {'x': [1], 'y': 2}}))
        self.assertFalse(MessageFilter(include=[('a', '[1, 2]')]).shows({'a': [1, 2, 3]}))

    def test_a_whole_number_matches_the_same_number_written_with_a_point(self):
        """JSON has one kind of number: 17 and 17.0 are the same, at any depth."""
        self.assertTrue(MessageFilter(include=[('tid', '17')]).shows({'tid': 17.0}))
        self.assertTrue(MessageFilter(include=[('a', '[1.0]')]).shows({'a': [1]}))
        self.assertFalse(MessageFilter(include=[('a', '[1.5]')]).shows({'a': [1]}))

    def test_value_nested_too_deep_for_json_is_a_string(self):
        deep = '[' * 100000 + ']' * 100000
        message_filter = MessageFilter(include=[('a', deep)])
        self.assertTrue(message_filter.shows({'a': deep}))
        self.assertFalse(message_filter.shows({'a': []}))

    def test_deep_message_value_against_deep_wanted_value(self):
        wanted = '[' * 900 + ']' * 900
        value = []
        for _ in range(2000):
            value = [value]
        message_filter = MessageFilter(include=[('a', wanted)])
        self.assertFalse(message_filter.shows({'a': value}))
        self.assertTrue(message_filter.shows({'a': json.loads(wanted)}))

    def test_non_ascii_value(self):
        message_filter = MessageFilter(include=[('name', 'H\u00e9l\u00e8ne')])
        self.assertTrue(message_filter.shows({'name': 'H\u00e9l\u00e8ne'}))
        self.assertFalse(message_filter.shows({'name': 'Helene'}))

    def test_dotted_path(self):
        message_filter = MessageFilter(include=[('status.availstate', 'away')])
        self.assertTrue(message_filter.shows({'status': {'availstate': 'away'}}))
        self.assertFalse(message_filter.shows({'status': {'availstate': 'available'}}))
        self.assertFalse(message_filter.shows({'status': 'away'}))
        self.assertFalse(message_filter.shows({'status': ['away']}))
        self.assertFalse(message_filter.shows({'availstate': 'away'}))
        self.assertFalse(message_filter.shows({}))

    def test_deep_dotted_path_with_json_value(self):
        message_filter = MessageFilter(include=[('a.b.c', '3')])
        self.assertTrue(message_filter.shows({'a': {'b': {'c': 3}}}))
        self.assertTrue(message_filter.shows({'a': {'b': {'c': '3'}}}))
        self.assertFalse(message_filter.shows({'a': {'b': {'c': 4}}}))

    def test_same_key_several_times_means_any(self):
        message_filter = MessageFilter(include=[('class', 'getlist'), ('class', 'login_id')])
        messages = [{'class': 'getlist'}, {'class': 'login_id'}, {'class': 'keepalive'}]
        self.assertEqual(shown(message_filter, messages), messages[:2])

    def test_different_keys_must_all_match(self):
        message_filter = MessageFilter(include=[('class', 'getlist'), ('function', 'updatestatus')])
        messages = [{'class': 'getlist', 'function': 'updatestatus'}, {'class': 'getlist', 'function': 'listid'},
                    {'class': 'login_id', 'function': 'updatestatus'}, {'class': 'getlist'}]
        self.assertEqual(shown(message_filter, messages), messages[:1])

    def test_any_within_key_all_across_keys(self):
        message_filter = MessageFilter(include=[('class', 'a'), ('tid', '1'), ('class', 'b'), ('tid', '2')])
        messages = [{'class': 'a', 'tid': 1}, {'class': 'b', 'tid': '2'}, {'class': 'a', 'tid': 3},
                    {'class': 'c', 'tid': 1}, {'class': 'b'}]
        self.assertEqual(shown(message_filter, messages), messages[:2])

    def test_include_hides_lines_that_are_not_json(self):
        self.assertFalse(MessageFilter(include=[('class', 'x')]).shows(None))

    def test_without_include_lines_that_are_not_json_are_shown(self):
        self.assertTrue(MessageFilter().shows(None))
        self.assertTrue(MessageFilter(exclude=[('class', 'x')]).shows(None))
        self.assertTrue(MessageFilter(strip=['timenow']).shows(None))

    def test_include_does_not_change_the_message(self):
        message = {'class': 'getlist', 'tid': 17}
        MessageFilter(include=[('tid', '17')]).shows(message)
        self.assertEqual(message, {'class': 'getlist', 'tid': 17})


class ExcludeTest(unittest.TestCase):

    def test_exclude_hides_matches(self):
        message_filter = MessageFilter(exclude=[('class', 'keepalive')])
        messages = [{'class': 'keepalive'}, {'class': 'getlist'}, {'tid': 1}]
        self.assertEqual(shown(message_filter, messages), messages[1:])

    def test_same_key_several_times_hides_any(self):
        message_filter = MessageFilter(exclude=[('class', 'keepalive'), ('class', 'getlist')])
        messages = [{'class': 'keepalive'}, {'class': 'getlist'}, {'class': 'login_id'}]
        self.assertEqual(shown(message_filter, messages), messages[2:])

    def test_different_keys_hide_only_when_all_match(self):
        message_filter = MessageFilter(exclude=[('class', 'getlist'), ('function', 'updatestatus')])
        messages = [{'class': 'getlist', 'function': 'updatestatus'}, {'class': 'getlist', 'function': 'listid'},
                    {'function': 'updatestatus'}]
        self.assertEqual(shown(message_filter, messages), messages[1:])

    def test_exclude_uses_json_types(self):
        message_filter = MessageFilter(exclude=[('on_call', 'false')])
        self.assertFalse(message_filter.shows({'on_call': False}))
        self.assertTrue(message_filter.shows({'on_call': 0}))
        self.assertTrue(message_filter.shows({'on_call': True}))

    def test_include_and_exclude_together(self):
        message_filter = MessageFilter(include=[('class', 'getlist')], exclude=[('function', 'updatestatus')])
        messages = [{'class': 'getlist', 'function': 'listid'}, {'class': 'getlist', 'function': 'updatestatus'},
                    {'class': 'login_id', 'function': 'listid'}]
        self.assertEqual(shown(message_filter, messages), messages[:1])


class DirectionTest(unittest.TestCase):

    def test_both_directions_by_default(self):
        message_filter = MessageFilter()
        self.assertTrue(message_filter.shows_direction(CLIENT))
        self.assertTrue(message_filter.shows_direction(SERVER))

    def test_no_client(self):
        message_filter = MessageFilter(directions=[SERVER])
        self.assertFalse(message_filter.shows_direction(CLIENT))
        self.assertTrue(message_filter.shows_direction(SERVER))

    def test_no_server(self):
        message_filter = MessageFilter(directions=[CLIENT])
        self.assertTrue(message_filter.shows_direction(CLIENT))
        self.assertFalse(message_filter.shows_direction(SERVER))


if __name__ == '__main__':
    unittest.main()
