"""The CTI protocol as the simulator speaks it: its constants, and the checks of a request line."""

import json

BANNER = 'XiVO CTI Server Version 1.2.3 (simulated)'
XIVO_VERSION = '1.2'
IPBX_ID = 'xivo'
LISTNAMES = ('users', 'phones', 'queues', 'agents')
DEFAULT_PORT = 5003
DEFAULT_TLS_PORT = 5013
DEFAULT_PROXY_PORT = 50030
DEFAULT_USERS = 5
DEFAULT_EVENT_INTERVAL = 10.0
DIRECTORY_DELAY = 0.2          # seconds a directory search takes (a lookup in an LDAP), the session's slow answer
TIMEOUT = 10.0                 # seconds the client and the demo wait for any one thing
LONGEST_WAIT = 3600.0          # seconds of one wait at most: a recorded gap may be years, beyond what a wait takes


def encode(message):
    """One message on the wire, as a Python CTI server writes it: ASCII JSON and a newline."""
    return (json.dumps(message, allow_nan=False) + '\n').encode('ascii')


def strict_json(value):
    """Whether value can be written as JSON proper: no NaN or infinity anywhere in it."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def whole_number(value):
    """A request's number (5, 5.0 or "5") as an int; ValueError for a bool (true is not a number), as for
    "x"; OverflowError for infinity."""
    if value.__class__ is bool:
        raise ValueError(value)
    return int(value)


MAX_REQUEST_DEPTH = 32      # a request nested deeper is answered with an error, unread


def nested_deeper(value, limit):
    """Whether a decoded JSON value has lists or objects nested more than limit deep (found without
    recursion: the handlers' str() and json.dumps of a value recurse, and a client may nest ~1000 deep)."""
    waiting = [(value, 0)]
    while waiting:
        value, depth = waiting.pop()
        if value.__class__ in (dict, list):
            if depth == limit:
                return True
            waiting.extend((item, depth + 1) for item in (value.values() if value.__class__ is dict else value))
    return False


def wire_line(message):
    """A message on the wire as a Python server writes it (NaN kept, as a recording may hold it)."""
    return (json.dumps(message) + '\n').encode('ascii')
