"""Run the whole test suite and end with one plain line: 'tests: N passed, N failed, N skipped'."""

import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    sys.path.insert(0, ROOT)          # the tests package, which puts cti-proxy/ on sys.path
    pattern = sys.argv[1] if len(sys.argv) > 1 else 'test*.py'
    suite = unittest.defaultTestLoader.discover(os.path.join(ROOT, 'tests'), pattern=pattern, top_level_dir=ROOT)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    # A test with failing subtests is one failed test, however many of its subtests failed.
    failed = len({getattr(test, 'test_case', test).id()
                  for test, _ in result.failures + result.errors}) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print('tests: %d passed, %d failed, %d skipped' % (passed, failed, skipped))
    if result.testsRun == 0:
        print('no test ran')
        return 1
    return 0 if failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
