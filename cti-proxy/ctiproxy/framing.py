"""Framing: cut a direction's byte stream into lines, and read the message a line holds.

A CTI message is one JSON object on one line.  Any other line (the old server's
banner, broken JSON, bytes that are not UTF-8) is kept as text, never dropped.
"""

import json

MAX_LINE_SIZE = 64 * 1024 * 1024
TOTAL_HELD_SIZE = 64 * 1024 * 1024     # what all sessions' unfinished lines may hold together, at least
PIECE_SIZE = 1024 * 1024               # an overlong line goes on in pieces of about this size
SMALL_TAIL = 64 * 1024                 # unfinished ends shorter than this are copied together, not kept each
BIG_LINE = 1024 * 1024                 # a longer line is let go of as bytes once decoded, where the output allows
SAFE_DEPTH = 100                       # json writes a message nested at most this deep, whatever the stack


class Fragment(bytes):
    """Part of a line: a piece of an overlong line, or what a stream left without its newline."""


class HeldBudget:
    """A bound on what several LineSplitters hold together (the unfinished lines of all sessions).

    Each splitter counts here what it holds.  When together they hold more than
    limit bytes, relieve() makes the one holding most hand its unfinished line on
    in Fragment pieces, until they are back within the bound: memory stays bounded
    however many sessions send long lines, and a session holding a long line makes
    the others' ordinary lines come in pieces only if theirs is longer.
    """

    def __init__(self, limit=TOTAL_HELD_SIZE):
        self.limit = limit
        self.held = 0
        self._holders = set()      # the splitters holding something

    def relieve(self):
        """While the splitters hold more than limit, cut the longest unfinished line: yield (splitter, pieces)."""
        while self.held > self.limit:
            splitter = max(self._holders, key=_held_size)
            yield splitter, splitter.cut()

    def _add(self, splitter, size):
        if not splitter.held_size:
            self._holders.add(splitter)
        self.held += size

    def _release(self, splitter):
        self.held -= splitter.held_size
        self._holders.discard(splitter)


def _held_size(splitter):
    return splitter.held_size


class LineSplitter:
    """Cuts one direction's byte stream into lines, holding an unfinished line until it ends.

    Each chunk is scanned once and each line joined once, so a message of many
    megabytes arriving in small chunks costs time linear in its size.  A line that
    grows beyond max_line_size, or that its budget (shared with other splitters)
    cuts, is handed on in Fragment pieces of about PIECE_SIZE, bounding memory.
    The unfinished line is held as the chunks' own ends, small ones copied
    together into blocks of up to PIECE_SIZE (so that tiny chunks cost no more than
    their bytes), and it is handed on a piece at a time, never copied whole.

    owner: what the caller wants back when the budget names this splitter.  big_lines: a whole line over
    BIG_LINE bytes comes as big_lines(line) (BigLine, say), which then holds its bytes alone.
    """

    def __init__(self, max_line_size=MAX_LINE_SIZE, budget=None, owner=None, big_lines=None):
        self.max_line_size = max_line_size
        self.big_lines = big_lines
        self.budget = budget if budget is not None else HeldBudget(max_line_size)
        self.owner = owner
        self.held_size = 0
        self._held = []             # the unfinished line's parts (bytes, or bytearray blocks), in order
        self._overlong = False      # the unfinished line already went on in pieces
        self._piece_size = min(max_line_size, PIECE_SIZE)

    def feed(self, data):
        """Return the lines that data completes, without their b'\\n'.

        A line longer than max_line_size comes as Fragment pieces, whatever the cuts."""
        limit = self.max_line_size
        lines = data.split(b'\n')
        tail = lines.pop()
        if len(data) > limit:               # only then can a whole line in data be overlong
            lines = [Fragment(line) if len(line) > limit else line for line in lines]
        if lines and (self._held or self._overlong):
            lines[0:1] = self._end_held_line(lines[0])
        if self.big_lines is not None and lines and (len(lines[0]) > BIG_LINE or len(data) > BIG_LINE):
            lines = self._big_lines_wrapped(lines)
        if tail:
            self._hold(tail)
            if self.held_size > (self._piece_size if self._overlong else limit):
                self._overlong = True
                lines.extend(self._take_pieces())
        return lines

    def holds_whole_lines(self, size):
        """Whether feeding size more bytes gives exactly one whole line per newline (no overlong line's pieces)."""
        return not self._overlong and self.held_size + size <= self.max_line_size

    def cut(self):
        """Hand on the unfinished line held so far, in Fragment pieces; the rest of it will follow in pieces."""
        if not self._held:
            return []
        self._overlong = True
        return self._take_pieces()

    def finish(self):
        """Return what the stream left after its last newline, in Fragment pieces (none if nothing)."""
        self._overlong = False
        return self._take_pieces()

    def _end_held_line(self, end):
        """The lines for the held line completed by end: the whole line, or its pieces if overlong."""
        if not self._overlong and self.held_size + len(end) <= self.max_line_size:
            line = b''.join(self._held + [end])
            self._release()
            return [line]
        self._overlong = False
        pieces = self._take_pieces()
        if end:         # else the overlong line ended right after its last piece
            pieces.append(end if end.__class__ is Fragment else Fragment(end))
        return pieces

    def _big_lines_wrapped(self, lines):
        """lines, each whole line over BIG_LINE bytes as big_lines(line)."""
        if max(map(len, lines)) <= BIG_LINE:
            return lines
        return [self.big_lines(line) if len(line) > BIG_LINE and line.__class__ is bytes else line for line in lines]

    def _hold(self, tail):
        self.budget._add(self, len(tail))
        held = self._held
        if len(tail) >= SMALL_TAIL:
            held.append(tail)
        elif held and held[-1].__class__ is bytearray and len(held[-1]) < PIECE_SIZE:
            held[-1] += tail
        else:
            held.append(bytearray(tail))
        self.held_size += len(tail)

    def _take_pieces(self):
        """The held parts as Fragments of about PIECE_SIZE, each part let go as soon as it is copied."""
        held = self._held
        held.reverse()
        pieces = []
        while held:
            part = held.pop()
            if held and len(part) + len(held[-1]) <= PIECE_SIZE:
                group, size = [part], len(part)
                while held and size + len(held[-1]) <= PIECE_SIZE:
                    size += len(held[-1])
                    group.append(held.pop())
                part = b''.join(group)
            pieces.append(Fragment(part))
        self._release()
        return pieces

    def _release(self):
        self.budget._release(self)
        self._held = []
        self.held_size = 0


class BigLine:
    """A whole line over BIG_LINE bytes, as a LineSplitter with big_lines hands it on: the message it holds is read
    by parse_message(), which lets go of the line's bytes once decoded, so that the line, its text and its message
    are never held at once.

    len() is the line's size.  bytes() is the line, for a line that is not a message; for a message, only if
    text_if_deep and the message nests deeper than SAFE_DEPTH (its text is kept for that: json may fail to write
    it, and the output then shows the line as text).  Else json can write the message, in pieces (in_pieces).
    """

    __slots__ = ('size', 'data', 'text', 'text_if_deep', 'in_pieces')

    def __init__(self, line, text_if_deep=True):
        self.size = len(line)
        self.data = line
        self.text = None
        self.text_if_deep = text_if_deep
        self.in_pieces = False      # a message that json can write, whatever the stack: in pieces

    def parse(self):
        """parse_message() of the line; None (the bytes kept) if it holds no message."""
        try:
            text = self.data.decode('utf-8')
        except ValueError:
            return None
        self.data = None
        message = parse_message(text)
        if message is None:
            self.data = text.encode('utf-8')        # the same bytes: they were UTF-8
        elif self.text_if_deep and nested_deeper_than(message, SAFE_DEPTH):
            self.text = text
        else:
            self.in_pieces = True
        return message

    def __len__(self):
        return self.size

    def __bytes__(self):
        return self.data if self.data is not None else self.text.encode('utf-8')


def line_bytes(line):
    """A line's bytes, a BigLine's too (bytes() of it: see there)."""
    return bytes(line) if line.__class__ is BigLine else line


_CONTAINERS = frozenset((dict, list))


def nested_deeper_than(value, depth):
    """Whether value holds lists or objects nested more than depth deep (value itself being one level)."""
    level = [value]
    for _ in range(depth):
        inside = []
        for container in level:
            items = container.values() if container.__class__ is dict else container
            if not _CONTAINERS.isdisjoint(map(type, items)):     # (in C: a big list of strings costs little)
                inside += [item for item in items if item.__class__ is dict or item.__class__ is list]
        if not inside:
            return False
        level = inside
    return True


_scan = json.JSONDecoder().scan_once       # raw_decode's scanner, without its wrapping
_JSON_SPACE = ' \t\n\r'


def parse_message(line):
    """Return the JSON object that a line holds, or None for any other line.

    The same as json.loads(line) being a dict, without json.loads's wrapping.  line may also be a BigLine, or
    a line's text, decoded already (BigLine's).
    """
    if line.__class__ is not bytes:
        if line.__class__ is BigLine:
            return line.parse()
        if line.__class__ is not str:   # a Fragment is never a whole message
            return None
        text = line
    else:
        try:
            text = line.decode('utf-8')
        except ValueError:      # not UTF-8
            return None
    try:
        start = 0 if text[:1] == '{' else len(text) - len(text.lstrip(_JSON_SPACE))
        message, end = _scan(text, start)
    except (ValueError, StopIteration, RecursionError, MemoryError):
        # ValueError covers bad JSON (StopIteration: no JSON value at all); RecursionError,
        # nesting too deep to read.
        return None
    if message.__class__ is not dict or (end != len(text) and text[end:].strip(_JSON_SPACE)):
        return None
    return message
