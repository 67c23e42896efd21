"""Stop signals: Ctrl-C (SIGINT), SIGTERM and SIGHUP ask a tool to stop cleanly.

A stop signal repeated within REPEAT_WINDOW of the first is the same request, not a second Ctrl-C:
`timeout` signals the tool and then its process group, systemd sends SIGTERM and then SIGHUP, a
terminal's hang-up reaches the whole process group.  A stop signal later than that ends the tool at
once, for a user whose tool does not stop.
"""

import contextlib
import os
import select
import signal
import time

from .launch import STOP_SIGNALS, release_stop_signals

REPEAT_WINDOW = 0.5         # seconds


class StopRequests:
    """What a stop signal means, from when it comes (no I/O): the first asks the tool to stop, one
    within the window of the first is that request repeated, a later one ends the tool at once."""

    STOP, REPEATED, END_NOW = 'stop', 'repeated', 'end now'

    def __init__(self, window=REPEAT_WINDOW):
        self.window = window
        self.first = None           # when the tool was asked to stop, or began to stop on its own

    def received(self, when):
        if self.first is None:
            self.first = when
            return self.STOP
        return self.REPEATED if when - self.first < self.window else self.END_NOW

    def settle(self, when):
        """The tool is ending anyway: a stop signal from now on has nothing left to stop (it is a repeat),
        unless it comes later than the window (then it ends the tool at once)."""
        if self.first is None:
            self.first = when


class StopSignals:
    """The handler of the stop signals.  At first a request to stop is a KeyboardInterrupt on the main thread,
    which cuts short what it does (starting, replaying a recording).  Once wait_for_requests() is called, a
    request only sets `requested` and wakes wait(), where the main thread does all its waiting: no exception
    lands at an arbitrary place (in a lock's bookkeeping, in code that drops it), and a signal that comes just
    before the main thread goes to sleep still wakes it (signal.set_wakeup_fd)."""

    def __init__(self, window=REPEAT_WINDOW):
        self.requests = StopRequests(window)
        self.requested = False          # a stop was asked
        self._bell = None               # (read end, write end) of the pipe that wakes wait(), once waiting

    def install(self):
        """Handle SIGINT and SIGTERM even when started with them ignored (a script's background job: a
        debugging tool that ignores the user's Ctrl-C is no use); SIGHUP unless ignored (nohup).  A stop signal
        held since the start (launch.hold_stop_signals) comes now: KeyboardInterrupt from here."""
        for signum in STOP_SIGNALS:
            if signum == getattr(signal, 'SIGHUP', None) and signal.getsignal(signum) == signal.SIG_IGN:
                continue
            signal.signal(signum, self._handle)
        release_stop_signals()

    def wait_for_requests(self):
        """From now on (on the main thread) a request to stop raises nothing: it sets `requested` and wakes
        wait().  Every signal, and ring(), writes a byte to the bell pipe; wait() watches it."""
        self._bell = os.pipe()
        for end in self._bell:
            os.set_blocking(end, False)
        signal.set_wakeup_fd(self._bell[1], warn_on_full_buffer=False)

    def ring(self):
        """Wake wait() (from any thread): what it waits for may have happened."""
        if self._bell is not None:
            try:
                os.write(self._bell[1], b'\0')
            except BlockingIOError:         # the pipe is full: it is rung already
                pass

    def wait(self, readable=()):
        """Wait until a stop is asked, ring() is called, or one of the file descriptors `readable` can be read;
        return those that can.  (Python runs a signal's handler on the main thread as soon as its wait ends.)"""
        if self.requested:
            return []
        ready = wait_readable([self._bell[0]] + list(readable))
        if self._bell[0] in ready:
            try:
                while os.read(self._bell[0], 512):
                    pass
            except BlockingIOError:
                pass
        return [fd for fd in ready if fd != self._bell[0]]

    def wait_until(self, done):
        """Wait until done() (checked each time ring() is called); return False if a stop is asked first."""
        while not self.requested:
            if done():
                return True
            self.wait()
        return False

    def settle(self):
        self.requests.settle(time.monotonic())

    def ignore(self):
        """The tool has ended: a stop signal from now on is ignored. (Python's exit would give the signals
        their default action back, and a repeat of the last stop request would kill a tool that ended well.)"""
        self.settle()
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if self._bell is not None:
            signal.set_wakeup_fd(-1)

    def _handle(self, signum, frame):
        decision = self.requests.received(time.monotonic())
        if decision == StopRequests.STOP:
            self.requested = True
            if self._bell is None:
                raise KeyboardInterrupt
        if decision == StopRequests.END_NOW:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)        # ended by the signal, as the shell expects
            os._exit(128 + signum)


def wait_readable(descriptors):
    """Wait until some of the file descriptors can be read (or are at their end, or failed); return those.  (poll,
    unlike select, takes descriptors of any number, and unlike epoll needs none of its own: the tool may be out.)"""
    if not hasattr(select, 'poll'):
        return select.select(descriptors, [], [])[0]
    poller = select.poll()
    for descriptor in descriptors:
        poller.register(descriptor, select.POLLIN)
    return [descriptor for descriptor, _ in poller.poll()]


@contextlib.contextmanager
def stop_signals_blocked():
    """Threads started inside block the stop signals, so that the kernel delivers them to the main thread:
    the one where Python runs signal handlers, and which a signal must wake from its waits (a signal
    taken by another thread leaves the main thread asleep in a lock's wait)."""
    if not hasattr(signal, 'pthread_sigmask'):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
