"""Pairing: which server message answers which client request, and which answers report an error.

A server message whose `replyid` equals the `commandid` of an earlier client request
is that request's answer: the oldest request still waiting with that id.  The reply
time runs from the arrival of the request's last byte to the arrival of the answer's.
I/O-free: ctispy marks answers with it, ctistat counts with it.
"""

import collections
import json

MAX_WAITING = 10000       # requests a session keeps waiting for their answer; beyond, the oldest is forgotten
LONGEST_ID = 256          # characters of a string commandid that pairs; a longer one is not kept
BIGGEST_ID = 10 ** 256    # and the integers that pair lie strictly between minus this and this
SMALL_CLASS = 16          # a list or object class of at most this many values is named by its JSON text

Request = collections.namedtuple('Request', 'kind function commandid time')
Request.__doc__ = 'A client request: its class name, function (or None), commandid and arrival time.'
Reply = collections.namedtuple('Reply', 'request ms')
Reply.__doc__ = 'An answer\'s pairing: the Request it answers and the reply time in milliseconds.'


def has_id_value(value):
    """Whether value can pair a request and its answer: a number, or a string of at most LONGEST_ID characters
    (not a list, object or bool; a longer id, or a bigger integer, is not kept: what waits stays small)."""
    kind = value.__class__
    if kind is str:
        return len(value) <= LONGEST_ID
    return kind is float or (kind is int and -BIGGEST_ID < value < BIGGEST_ID)


def class_name(kind):
    """How a class is named: itself if a string, else its JSON text if small, else '(a big list)' or
    '(a big object)', so that a class nested as deep as json reads costs no recursion and makes no long name."""
    if kind.__class__ is str:
        return kind
    if kind.__class__ in (dict, list) and not _at_most(kind, SMALL_CLASS):
        return '(a big list)' if kind.__class__ is list else '(a big object)'
    return json.dumps(kind)


def _at_most(value, count):
    """Whether value holds at most count values, itself included, at any depth (counted without recursion)."""
    waiting = [value]
    while waiting:
        count -= 1
        if count < 0:
            return False
        value = waiting.pop()
        if value.__class__ in (dict, list):
            if len(value) > count:
                return False
            waiting.extend(value.values() if value.__class__ is dict else value)
    return True


def function_of(message):
    """The message's `function` (getlist's updateconfig, say) if it is a string, else None."""
    function = message.get('function')
    return function if function.__class__ is str else None


def label_of(message):
    """(class_name of its class, function_of it): what a message is counted as."""
    kind = message.get('class')
    function = message.get('function')
    return (kind if kind.__class__ is str else class_name(kind)), (function if function.__class__ is str else None)


def request_label(kind, function):
    """'getlist/updateconfig', or the class alone when there is no function."""
    return kind if function is None else '%s/%s' % (kind, function)


def error_of(message):
    """What makes a server message an error answer, or None: its `error_string`, a string `status` other
    than 'ok', or the class 'error'."""
    if 'error_string' in message:
        text = message['error_string']
        return text if text.__class__ is str else json.dumps(text)
    status = message.get('status')
    if status.__class__ is str and status.lower() != 'ok':
        return 'status %s' % status
    if message.get('class') == 'error':
        return 'error'
    return None


class RequestPairing:
    """Client requests waiting for their answer, by commandid, each id's oldest first.

    Answered requests are dropped.  At most `limit` are kept: beyond that, the request
    waiting longest is forgotten and counted in `forgotten`.  Whether an answer comes for
    a forgotten request later cannot be told (its id is not kept), so it is neither timed
    nor listed as never answered: unanswered() lists the requests still waiting.
    """

    def __init__(self, limit=MAX_WAITING):
        self.limit = limit
        self.kept = 0
        self.forgotten = 0
        self._by_id = collections.OrderedDict()     # commandid: deque of Requests; ids in order of arrival
        self._names = {}                            # one string per class name, shared by its requests

    def request(self, message, when):
        """A client message: keep it if it has a commandid; return its Request, or None."""
        commandid = message.get('commandid')
        if commandid is None or not has_id_value(commandid):
            return None
        if self.kept >= self.limit:
            self._forget_oldest()
        kind = class_name(message.get('class'))
        request = Request(self._names.setdefault(kind, kind), function_of(message), commandid, when)
        waiting = self._by_id.get(commandid)
        if waiting is None:
            self._by_id[commandid] = collections.deque((request,))
        else:
            waiting.append(request)
        self.kept += 1
        return request

    def answer(self, message, when):
        """A server message: the Reply it is, taking its request out; None if it answers nothing waiting."""
        replyid = message.get('replyid')
        if replyid is None or not has_id_value(replyid):
            return None
        request = self._take(replyid)
        if request is None:
            return None
        return Reply(request, (when - request.time) * 1000.0)

    def unanswered(self):
        """The requests kept and still waiting, in the order they came."""
        return sorted((request for waiting in self._by_id.values() for request in waiting),
                      key=lambda request: request.time)

    def _take(self, commandid):
        waiting = self._by_id.get(commandid)
        if waiting is None:
            return None
        request = waiting.popleft()
        if not waiting:
            del self._by_id[commandid]
        self.kept -= 1
        return request

    def _forget_oldest(self):
        commandid = next(iter(self._by_id))     # O(1): an OrderedDict starts at its oldest key
        self._take(commandid)
        self.forgotten += 1
