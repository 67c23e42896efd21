"""Escaping: whatever came from the network, made safe to show on the user's terminal.

A terminal obeys the control characters in what it is given: C0 (ESC [ ... m colours,
ESC ] 0 ; ... BEL sets the title, CR overwrites a line), DEL, and C1 (U+0080-U+009F;
U+009B is a CSI on some terminals).  Invisible format characters reorder or hide what is
shown: bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069), marks (U+200E,
U+200F, U+061C), line and paragraph separators (U+2028, U+2029), zero-width spaces, tags.
So every character of Unicode categories Cc, Cf, Zl and Zp is shown as an escape, except:
tab (harmless), and the zero-width joiners U+200C and U+200D (they cannot reorder or erase
anything, and Persian and Indic text and emoji sequences need them).

Text is shown with Python-style escapes: \\x1b for C0 and DEL, \\u0085 for C1 (a byte that is
not UTF-8 is \\x85: both can be told apart), \\u202e, \\U000e0041.  JSON gets JSON escapes
(\\u202e; \\udb40\\udc41 beyond U+FFFF), so that it stays JSON with the same meaning.

The common case costs little: one C-speed scan finds that nothing needs escaping.  Where
something does, each distinct character is replaced in one C-speed pass: no input, however
hostile, costs a Python step per character (at most one per occurrence of the text '\\udc').
Big pieces are shown a slice at a time (shown_pieces, json_string_pieces): bounded memory.
"""

import codecs
import json
import re
import traceback

# Unicode 15.1's Cc, Cf, Zl and Zp, less tab, newline (see keep_newlines), U+200C and U+200D.
_UNSAFE_RANGES = (
    (0x00, 0x08), (0x0B, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200B), (0x200E, 0x200F),
    (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001), (0xE0020, 0xE007F))
NEWLINE = 0x0A


def _text_escape(code):
    if code < 0x80:
        return '\\x%02x' % code
    if code <= 0xFFFF:
        return '\\u%04x' % code
    return '\\U%08x' % code


def _json_escape(code):
    if code <= 0xFFFF:
        return '\\u%04x' % code
    code -= 0x10000
    return '\\u%04x\\u%04x' % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))


UNSAFE_CODES = frozenset(code for low, high in _UNSAFE_RANGES for code in range(low, high + 1)) | {NEWLINE}


def _escapes_by_lead(escape, codes):
    """{first byte: [(UTF-8 but the last byte, a regex finding the characters so encoded,
    {their UTF-8: escape})]} for the characters of codes."""
    groups = {}
    for code in sorted(codes):
        encoded = chr(code).encode('utf-8')
        groups.setdefault(encoded[:-1] or encoded, {})[encoded] = escape(code).encode('ascii')
    table = {}
    for start, group in groups.items():
        if len(start) == 1 and start in group:          # a character of one byte
            finder = re.compile(re.escape(start))
        else:
            finder = re.compile(re.escape(start) + b'[' + b''.join(re.escape(char[-1:]) for char in group) + b']')
        table.setdefault(start[0], []).append((start, finder, group))
    return table


_TEXT_ESCAPES = _escapes_by_lead(_text_escape, UNSAFE_CODES)
_TEXT_ESCAPES_BUT_NEWLINES = _escapes_by_lead(_text_escape, UNSAFE_CODES - {NEWLINE})
# In JSON as json writes it, C0 controls are escaped already: only the others can occur.
_JSON_ESCAPES = _escapes_by_lead(_json_escape, [code for code in UNSAFE_CODES if code >= 0x7F])

# The bytes that cannot begin the UTF-8 of a character to escape: text made of them alone needs nothing.
_SAFE_BYTES = bytes(sorted(set(range(256)) - set(_TEXT_ESCAPES)))
_SAFE_BYTES_AND_NEWLINES = _SAFE_BYTES + b'\n'
# Finds a byte that may begin a character to escape in JSON (where newlines are the layout's), without
# a copy of the text (a message may be many megabytes).
_JSON_SUSPECT = re.compile(b'[' + b''.join(re.escape(bytes([byte])) for byte in range(256)
                                           if byte not in _SAFE_BYTES_AND_NEWLINES) + b']').search


DISTINCT_PASSES = 3


def _escape_utf8(encoded, safe, escapes):
    """Valid UTF-8 with each character of escapes replaced by its escape.

    One C-speed pass finds the bytes that may begin such a character; a regex finds which of the
    characters they begin are there, and each is replaced in a C-speed pass of its own.  A group
    of characters (C1 controls) with more than DISTINCT_PASSES of them there is replaced in one
    regex pass instead (binary data holds a few of each, and a pass per character would cost
    more); either way no input costs a Python step per byte."""
    suspects = encoded.translate(None, safe)
    if not suspects:
        return encoded
    for lead in set(suspects):
        for start, finder, group in escapes.get(lead, ()):
            found = start in encoded and finder.search(encoded)
            passes = 0
            while found:            # once per character present: the replace removes it
                if passes == DISTINCT_PASSES:
                    encoded = finder.sub(lambda match: group[match.group()], encoded)
                    break
                character = found.group()
                encoded = encoded.replace(character, group[character])
                passes += 1
                found = finder.search(encoded, found.start())
    return encoded


def escape_text(text, keep_newlines=False):
    """text, with each control or invisible format character as an escape (\\x1b, \\u202e)."""
    if keep_newlines:
        return _escape_utf8(text.encode('utf-8', 'surrogatepass'), _SAFE_BYTES_AND_NEWLINES,
                            _TEXT_ESCAPES_BUT_NEWLINES).decode('utf-8', 'surrogatepass')
    return _escape_utf8(text.encode('utf-8', 'surrogatepass'), _SAFE_BYTES,
                        _TEXT_ESCAPES).decode('utf-8', 'surrogatepass')


def json_bytes(text):
    """JSON text (as json.dumps writes it with ensure_ascii=False) in UTF-8, each C1, DEL or
    invisible format character as a \\u escape: the same JSON, safe on a terminal.  A lone
    surrogate (from a byte that was not UTF-8) becomes the JSON escape \\udcff, which --read
    turns back into the byte."""
    if text.isascii() and '\x7f' not in text:
        return text.encode('ascii')
    encoded = text.encode('utf-8', 'backslashreplace')
    if _JSON_SUSPECT(encoded) is None:      # no byte that may begin one (accented letters)
        return encoded
    if (text.replace('\n', ' ') if '\n' in text else text).isprintable():   # some may (’), none does
        return encoded
    return _escape_utf8(encoded, _SAFE_BYTES_AND_NEWLINES, _JSON_ESCAPES)


def _shown(text, keep_newlines=False):
    """text (decoded with surrogateescape) in UTF-8 for a terminal: a byte that was not UTF-8 (a lone
    surrogate) as \\xff, control and format characters escaped."""
    encoded = text.encode('utf-8', 'backslashreplace')     # a lone surrogate: \\udcff
    if len(encoded) == 6 * len(text):                   # bytes that are not UTF-8, and nothing else
        return _hex_escaped(text.encode('utf-8', 'surrogateescape'))
    if b'\\udc' in encoded:
        if '\\udc' not in text:
            encoded = encoded.replace(b'\\udc', b'\\x')
        else:                                           # the text itself holds '\\udc': leave it
            parts = [part.encode('utf-8', 'backslashreplace') for part in text.split('\\udc')]
            encoded = b'\\udc'.join([part.replace(b'\\udc', b'\\x') for part in parts])
    if keep_newlines:
        return _escape_utf8(encoded, _SAFE_BYTES_AND_NEWLINES, _TEXT_ESCAPES_BUT_NEWLINES)
    return _escape_utf8(encoded, _SAFE_BYTES, _TEXT_ESCAPES)


def _hex_escaped(data):
    """\\xNN for each byte of data (C-speed: no step per byte in Python)."""
    count = len(data)
    digits = data.hex().encode('ascii')
    shown = bytearray(4 * count)
    shown[0::4] = b'\\' * count
    shown[1::4] = b'x' * count
    shown[2::4] = digits[0::2]
    shown[3::4] = digits[1::2]
    return bytes(shown)


def shown_bytes(data, keep_newlines=False):
    """Bytes from the network as UTF-8 text for a terminal: characters where they are UTF-8,
    \\xff for a byte that is not, escapes for control and format characters."""
    return _shown(str(data, 'utf-8', 'surrogateescape'), keep_newlines)


# Big pieces are shown this many bytes at a time, so that showing one costs bounded memory.
SLICE = 64 * 1024


def slices(data, size=SLICE):
    """The text of data, in decoded slices of about size bytes (a UTF-8 character cut between two
    slices is decoded whole); a byte that is not UTF-8 is a lone surrogate (surrogateescape)."""
    decoder = codecs.getincrementaldecoder('utf-8')('surrogateescape')
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield decoder.decode(view[start:start + size], start + size >= len(view))


def shown_pieces(data, keep_newlines=False):
    """shown_bytes(data), in pieces of bounded size."""
    if len(data) <= SLICE:
        return [shown_bytes(data, keep_newlines)]
    return (_shown(text, keep_newlines) for text in slices(data))


_json_string = json.encoder.encode_basestring


def json_string_pieces(data):
    """The inside of the JSON string for data decoded with surrogateescape (without its quotes),
    as json_bytes would write it, in pieces of bounded size."""
    return (json_bytes(_json_string(text)[1:-1]) for text in slices(data))


def shown_traceback():
    """The current exception's traceback, escaped (its values may come from the traffic)."""
    return escape_text(traceback.format_exc(), keep_newlines=True)
