"""Inputs: the file or pipe that --read takes, as bytes for a capture or as text for a recording.

A read that fails is an InputError, so that any other OSError is the output's.
"""

import errno
import io
import sys

from .recording import RecordingError
from .relay import describe_error


def open_input(path):
    """The binary stream at path ('-': stdin); OSError if it cannot be opened (stdin closed: EBADF)."""
    if path != '-':
        return open(path, 'rb')
    if sys.stdin is None:           # what Python makes of a file descriptor 0 closed at start
        raise OSError(errno.EBADF, 'stdin is closed')
    return sys.stdin.buffer


class InputError(Exception):
    """The input cannot be read (the message names it and says why)."""


class InputStream:
    """A binary stream being read, a failed read being an InputError (so that any other OSError is the output's)."""

    def __init__(self, stream, name):
        self.stream = stream
        self.name = name

    def read(self, size=-1):
        return self._do(self.stream.read, size)

    def read1(self, size=-1):
        return self._do(self.stream.read1, size)

    def seekable(self):
        return self.stream.seekable()

    def seek(self, offset, whence=0):
        return self.stream.seek(offset, whence)

    def _do(self, action, argument):
        try:
            return action(argument)
        except OSError as error:
            raise InputError('cannot read %s: %s' % (self.name, describe_error(error)))


class Prefixed(io.RawIOBase):
    """A stream that cannot seek, with the bytes already read from it put back in front."""

    def __init__(self, prefix, stream):
        super().__init__()
        self._prefix = prefix
        self._stream = stream

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._prefix[:len(buffer)]
        self._prefix = self._prefix[len(data):]
        if not data:
            data = self._stream.read1(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def text_stream(stream, head):
    """A recording's binary stream as text, from its first byte (head: the bytes already read)."""
    if stream.seekable():
        stream.seek(0)
        return io.TextIOWrapper(stream.stream, 'utf-8', 'replace')
    return io.TextIOWrapper(io.BufferedReader(Prefixed(head, stream)), 'utf-8', 'replace')


def read_lines(stream, name):
    """The lines of a recording, a failed read being a RecordingError (so that any other OSError is the output's)."""
    try:
        for line in stream:             # not yield from, which would close the file with the generator
            yield line
    except (OSError, InputError) as error:
        raise RecordingError(str(error) if isinstance(error, InputError)
                             else 'cannot read %s: %s' % (name, describe_error(error)))
