"""Framing: cut a direction's byte stream into lines, and read the message a line holds.

A CTI message is one JSON object on one line.  Any other line (the old server's
banner, broken JSON, bytes that are not UTF-8) is kept as text, never dropped.
"""

import json

MAX_LINE_SIZE = 64 * 1024 * 1024


class Fragment(bytes):
    """Part of a line: a piece of an overlong line, or what a stream left without its newline."""


class LineSplitter:
    """Cuts one direction's byte stream into lines, holding an unfinished line until it ends.

    Each chunk is scanned once and each line joined once, so a message of many
    megabytes arriving in small chunks costs time linear in its size.  A line that
    grows beyond max_line_size is handed on in Fragment pieces, bounding memory.
    """

    def __init__(self, max_line_size=MAX_LINE_SIZE):
        self.max_line_size = max_line_size
        self._held = []        # the unfinished line's pieces, in order
        self._held_size = 0
        self._overlong = False  # the unfinished line already gave up a Fragment

    def feed(self, data):
        """Return the lines that data completes, without their b'\\n'.

        A line longer than max_line_size comes as Fragment pieces, whatever the cuts."""
        limit = self.max_line_size
        lines = data.split(b'\n')
        tail = lines.pop()
        if lines and (self._held or self._overlong):
            self._held.append(lines[0])
            first = self._take_held()
            if self._overlong or len(first) > limit:
                self._overlong = False
                if first:
                    lines[0] = Fragment(first)
                else:       # the overlong line ended right after its last piece
                    del lines[0]
            else:
                lines[0] = first
        if len(data) > limit:               # only then can a whole line in data be overlong
            lines = [Fragment(line) if len(line) > limit else line for line in lines]
        if tail:
            self._held.append(tail)
            self._held_size += len(tail)
            if self._held_size > limit:
                lines.append(Fragment(self._take_held()))
                self._overlong = True
        return lines

    def finish(self):
        """Return what the stream left after its last newline: a list of at most one Fragment."""
        self._overlong = False
        return [Fragment(self._take_held())] if self._held else []

    def _take_held(self):
        line = b''.join(self._held)
        self._held = []
        self._held_size = 0
        return line


_decode = json.JSONDecoder().raw_decode
_JSON_SPACE = ' \t\n\r'


def parse_message(line):
    """Return the JSON object that a line holds, or None for any other line.

    The same as json.loads(line) being a dict, without json.loads's wrapping.
    """
    if line.__class__ is not bytes:   # a Fragment is never a whole message
        return None
    try:
        text = line.decode('utf-8')
        message, end = _decode(text, len(text) - len(text.lstrip(_JSON_SPACE)))
    except (ValueError, RecursionError, MemoryError):
        # ValueError covers bad UTF-8 and bad JSON; RecursionError, nesting too deep to read.
        return None
    if message.__class__ is not dict or text[end:].strip(_JSON_SPACE):
        return None
    return message
