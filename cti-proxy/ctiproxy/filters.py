"""Filters: choose which messages are shown and what of them.  They never touch the wire."""

import json

CLIENT = 'client'
SERVER = 'server'

_MISSING = object()


def value_at(message, path):
    """Return the value at a dotted path ('status.availstate') in a message, or _MISSING."""
    value = message
    for key in path:
        if value.__class__ is not dict or key not in value:
            return _MISSING
        value = value[key]
    return value


_NOT_NUMBERS = (bool, str, dict, list, type(None))   # JSON types that only equal their own kind


def same_json(a, b):
    """Equality that keeps JSON's types apart at every depth: true is not 1, false is not 0, a list is
    not an object (17 and 17.0 are one number, as JSON has one kind).  Iterative: any depth will do."""
    pairs = [(a, b)]
    while pairs:
        a, b = pairs.pop()
        kind = a.__class__
        if kind is not b.__class__ and (kind in _NOT_NUMBERS or b.__class__ in _NOT_NUMBERS):
            return False
        if kind is dict:
            if a.keys() != b.keys():
                return False
            pairs.extend((value, b[key]) for key, value in a.items())
        elif kind is list:
            if len(a) != len(b):
                return False
            pairs.extend(zip(a, b))
        elif a != b:
            return False
    return True


class FieldTest:
    """KEY=VALUE, given once or more for one key: the message's value there is one of them.

    A value matches as a string (tid=17 matches "17") or as JSON (tid=17 matches 17,
    on_call=false matches false).
    """

    def __init__(self, key):
        self.key = key
        self.path = key.split('.')
        self.texts = set()
        self.json_values = []

    def add(self, text):
        self.texts.add(text)
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):     # not JSON, or nested deeper than json reads: a string
            return
        if isinstance(value, str):
            self.texts.add(value)            # name="Bob" matches "Bob"
        else:
            self.json_values.append(value)

    def matches(self, message):
        value = value_at(message, self.path)
        if value is _MISSING:
            return False
        if value.__class__ is str:
            return value in self.texts
        return any(same_json(value, wanted) for wanted in self.json_values)


class Selection:
    """A set of KEY=VALUE conditions: each key must match one of its values."""

    def __init__(self, pairs):
        self.tests = {}
        for key, text in pairs:
            self.tests.setdefault(key, FieldTest(key)).add(text)

    def __bool__(self):
        return bool(self.tests)

    def matches(self, message):
        return all(test.matches(message) for test in self.tests.values())


class MessageFilter:
    """Decides what a tool shows: which directions, which messages, without which fields."""

    def __init__(self, include=(), exclude=(), strip=(), directions=(CLIENT, SERVER)):
        self.include = Selection(include)
        self.exclude = Selection(exclude)
        self.strip_paths = [field.split('.') for field in strip]
        self.directions = frozenset(directions)
        self.shows_text = not self.include
        self.passes_all = not (self.include or self.exclude or self.strip_paths)

    def shows_direction(self, direction):
        return direction in self.directions

    def shows(self, message):
        """Whether to show a message (a dict; None for a line that is not a message)."""
        if message is None:
            return self.shows_text
        if self.include and not self.include.matches(message):
            return False
        return not (self.exclude and self.exclude.matches(message))

    def strip(self, message):
        """Remove the stripped fields from a message that is about to be shown."""
        for path in self.strip_paths:
            parent = value_at(message, path[:-1])
            if parent.__class__ is dict:
                parent.pop(path[-1], None)
        return message
