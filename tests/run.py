"""Run the whole test suite and end with one plain line: 'tests: N passed, N failed, N skipped'.

tests/run.py [--jobs N] [PATTERN]: with N above 1, N worker processes run the test classes, each class
whole (its setUpClass once), the next class going to whichever worker is free; each class's report is
shown once it is done, and the slowest tests are listed before the last line.
"""

import argparse
import io
import json
import os
import select
import subprocess
import sys
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOWEST_SHOWN = 15
# The classes that take longest, handed out first so that no worker is left with one of them at the end.  (Not
# the endless-line memory tests: pushed hardest by the others, they would not relay their 400 MB in time.)
SLOW_FIRST = ('tests.test_cli.UsageErrorTest', 'tests.test_faults.BadInputTest', 'tests.test_faults.StartErrorTest',
              'tests.test_faults.SlowPeerTest', 'tests.test_faults.SignalTest')


class TimedResult(unittest.TextTestResult):
    """A test result that records each test's duration (in `durations`, {test id: seconds})."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.durations = {}
        self._started = {}

    def startTest(self, test):
        self._started[test.id()] = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        self.durations[test.id()] = time.monotonic() - self._started.pop(test.id(), time.monotonic())


class Tally:
    """The counts of a run, in one process or merged from several."""

    def __init__(self):
        self.run = 0
        self.failed = set()         # ids of the failed tests: one per test, however many of its subtests failed
        self.skipped = 0
        self.durations = {}

    def add_result(self, result):
        self.run += result.testsRun
        self.failed |= {getattr(test, 'test_case', test).id() for test, _ in result.failures + result.errors}
        self.failed |= {test.id() for test in result.unexpectedSuccesses}
        self.skipped += len(result.skipped)
        self.durations.update(result.durations)

    def as_dict(self):
        return {'run': self.run, 'failed': sorted(self.failed), 'skipped': self.skipped, 'durations': self.durations}

    def add_dict(self, counts):
        self.run += counts['run']
        self.failed |= set(counts['failed'])
        self.skipped += counts['skipped']
        self.durations.update(counts['durations'])

    def report(self, stream):
        """The slowest tests, then the last line; return the exit status."""
        slowest = sorted(self.durations.items(), key=lambda item: -item[1])[:SLOWEST_SHOWN]
        if slowest:
            stream.write('slowest tests:\n')
            for test_id, seconds in slowest:
                stream.write('%7.2fs  %s\n' % (seconds, test_id))
        failed = len(self.failed)
        stream.write('tests: %d passed, %d failed, %d skipped\n' % (self.run - failed - self.skipped, failed,
                                                                    self.skipped))
        if self.run == 0:
            stream.write('no test ran\n')
            return 1
        return 0 if failed == 0 else 1


def discover(pattern):
    sys.path.insert(0, ROOT)          # the tests package, which puts cti-proxy/ on sys.path
    return unittest.defaultTestLoader.discover(os.path.join(ROOT, 'tests'), pattern=pattern, top_level_dir=ROOT)


def run_tests(suite, stream):
    """Run suite, reporting to stream; return its result."""
    return unittest.TextTestRunner(stream=stream, verbosity=2, resultclass=TimedResult).run(suite)


def run_here(pattern):
    """The whole run in this process."""
    tally = Tally()
    tally.add_result(run_tests(discover(pattern), sys.stderr))
    sys.stderr.flush()
    return tally.report(sys.stdout)


# -- several processes --

def units(suite):
    """The names of the suite's test classes (or of the modules that failed to load), each once, in order."""
    names = []
    for test in iterate(suite):
        if type(test).__name__ in ('_FailedTest', 'ModuleImportFailure'):    # a module that cannot be imported
            name = test._testMethodName
        else:
            name = '%s.%s' % (type(test).__module__, type(test).__qualname__)
        if name not in names:
            names.append(name)
    return names


def iterate(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from iterate(test)
        else:
            yield test


def run_parallel(pattern, jobs):
    """Hand out the test classes to `jobs` worker processes, one at a time, and merge what they report."""
    pending = sorted(units(discover(pattern)), key=lambda unit: unit not in SLOW_FIRST)     # a stable sort
    tally = Tally()
    workers = [Worker() for _ in range(min(jobs, len(pending)) or 1)]
    for worker in workers:
        worker.give(pending)
    while any(worker.busy for worker in workers):
        ready, _, _ = select.select([worker.results for worker in workers if worker.busy], [], [])
        for worker in workers:
            if worker.results in ready:
                output, counts = worker.receive()
                sys.stderr.write(output)
                sys.stderr.flush()
                tally.add_dict(counts)
                worker.give(pending)
    for worker in workers:
        worker.close()
    for unit in pending:                # every worker ended before these could be given out
        sys.stderr.write('%s: not run: no worker left\n' % unit)
        tally.add_dict({'run': 1, 'failed': [unit], 'skipped': 0, 'durations': {}})
    return tally.report(sys.stdout)


class Worker:
    """A process that runs the test classes named on its command pipe, one by one, and reports each on its
    result pipe (its stdin, stdout and stderr are the run's own, for what the tests let through)."""

    def __init__(self):
        command_read, self.commands = os.pipe()
        self.results, result_write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), '--worker', '%d,%d' % (command_read, result_write)],
            pass_fds=(command_read, result_write))
        os.close(command_read)
        os.close(result_write)
        self.reader = os.fdopen(self.results, 'rb')
        self.unit = None
        self.ended = False

    @property
    def busy(self):
        return self.unit is not None

    def give(self, pending):
        if pending and not self.ended:
            self.unit = pending.pop(0)
            os.write(self.commands, self.unit.encode('utf-8') + b'\n')

    def receive(self):
        """What the worker reports of its class: (its test report, its counts)."""
        unit, self.unit = self.unit, None
        line = self.reader.readline()
        if not line:
            self.ended = True
            self.process.wait()
            said = '\n%s: its worker ended (status %s) before it reported\n' % (unit, self.process.returncode)
            return (said, {'run': 1, 'failed': [unit], 'skipped': 0, 'durations': {}})
        report = json.loads(line.decode('utf-8'))
        return report['output'], report['counts']

    def close(self):
        os.close(self.commands)
        self.process.wait()
        self.reader.close()


def work(descriptors):
    """The worker's side: run each test class named on the command pipe, report it on the result pipe."""
    command_read, result_write = (int(number) for number in descriptors.split(','))
    for descriptor in (command_read, result_write):
        os.set_inheritable(descriptor, False)         # not for the processes the tests start
    sys.path.insert(0, ROOT)
    with os.fdopen(command_read, 'rb') as commands, os.fdopen(result_write, 'wb') as results:
        for line in commands:
            output = io.StringIO()
            tally = Tally()
            tally.add_result(run_tests(unittest.defaultTestLoader.loadTestsFromName(line.decode('utf-8').strip()),
                                       output))
            results.write(json.dumps({'output': output.getvalue(), 'counts': tally.as_dict()}).encode('utf-8') + b'\n')
            results.flush()
    return 0


def main():
    parser = argparse.ArgumentParser(description='Run the test suite.')
    parser.add_argument('pattern', nargs='?', default='test*.py', help='the test files (default: test*.py)')
    parser.add_argument('--jobs', '-j', type=int, default=1, help='worker processes (default: 1, none)')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return work(args.worker)
    if args.jobs > 1:
        return run_parallel(args.pattern, args.jobs)
    return run_here(args.pattern)


if __name__ == '__main__':
    sys.exit(main())
