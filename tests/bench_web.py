#!/usr/bin/env python3
"""Benchmark of the web view in a real browser (tests/bench.py runs it as its last section; alone:
`python3 tests/bench_web.py [--quick]`).

A recording of 200,000 messages (20,000 with --quick) is read by `ctispy --read REC --web 127.0.0.1:0`; headless
Chromium (tests/chromium.py) opens the session's page and the page's own clock (performance.now) times:
first rows shown after the navigation starts, the page ready (rows, timeline), a jump to the end with its rows
shown, 200 jumps across the whole table (frame times, and the script's own longest render), and filters applied
until their rows show (the server's match included, the page's 300 ms typing debounce not).  Wall-clock times:
on a loaded machine the longest frame and render mostly measure the scheduler.
Skipped, and said so, without Chromium.
"""

import json
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tests.chromium import Chromium, chromium_path  # noqa: E402
from tests.harness import WebSpyProcess  # noqa: E402

GOAL_FIRST_ROWS_MS = 1500     # navigation start -> the first rows shown, at most
GOAL_END_MS = 500             # a jump to the end -> its rows shown, at most
GOAL_FRAME_MS = 34             # the median frame while jumping across the table, at most (two frames at 60 Hz)
GOAL_FILTER_MS = 2000         # a filter typed -> the matching rows shown, at most (no debounce counted)
TIMEOUT = 120.0
FILTERS = ['function=updatestatus', 'class=getlist -function=updatestatus', 'alice']


def write_recording(path, count, seed=16):
    """A --json-lines recording of one session: requests and answers (some errors), status events."""
    rng = random.Random(seed)
    start = 1790000000.0
    names = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']
    with open(path, 'w') as out:
        written, command, when = 0, 0, start
        while written < count:
            when += rng.expovariate(200.0)
            kind = rng.random()
            if kind < 0.15:
                command += 1
                request = {'class': rng.choice(['getlist', 'history', 'ipbxcommand', 'keepalive']),
                           'commandid': command, 'function': 'listid', 'tipbxid': 'xivo'}
                answer = {'class': request['class'], 'replyid': command, 'timenow': when}
                if rng.random() < 0.02:
                    answer['error_string'] = 'unknown command'
                out.write(record(when, 'client', request))
                out.write(record(when + rng.uniform(0.0005, 0.3), 'server', answer))
                written += 2
            else:
                out.write(record(when, 'server', {
                    'class': 'getlist', 'function': 'updatestatus', 'listname': rng.choice(['users', 'phones']),
                    'tipbxid': 'xivo', 'tid': str(rng.randrange(500)),
                    'status': {'availstate': rng.choice(['available', 'away', 'busy']),
                               'name': rng.choice(names), 'hintstatus': str(rng.randrange(8))}}))
                written += 1


def record(when, direction, message):
    stamp = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(when)) + ('%.6f' % (when % 1))[1:] + '+00:00'
    return json.dumps({'time': stamp, 'session': 1, 'direction': direction, 'message': message}) + '\n'


JUMPS = '''(function () {
  var box = document.querySelector('#rows'), jumps = 200, longest = 0, last = performance.now(), k = 0, frames = [];
  var scrollable = box.scrollHeight - box.clientHeight;
  return new Promise(function (resolve) {
    function step() {
      var now = performance.now();
      if (k > 1) frames.push(now - last);
      last = now;
      if (k > jumps) {
        frames.sort(function (a, b) { return a - b; });
        resolve([frames[frames.length >> 1], frames[frames.length - 1]]);
        return;
      }
      box.scrollTop = scrollable * ((k * 7919) % jumps) / jumps;
      k++;
      requestAnimationFrame(step);
    }
    requestAnimationFrame(step);
  }).then(function (frames) { return window.ctiView.settled().then(function () { return frames; }); });
})()'''


def timed(browser, expression):
    """Milliseconds, by the page's clock, until the promise of expression resolves."""
    return browser.evaluate('(function () { var t = performance.now(); return (%s).then(function () { '
                            'return performance.now() - t; }); })()' % expression, timeout=TIMEOUT)


def measure(workdir, count):
    recording = os.path.join(workdir, 'big.jsonl')
    write_recording(recording, count)
    size = os.path.getsize(recording)
    started = time.monotonic()
    tool = WebSpyProcess(read=recording)
    browser = None
    try:
        url = tool.url
        tool.web_read_stderr_until('read to the end')
        read_seconds = time.monotonic() - started
        browser = Chromium(os.path.join(workdir, 'browser'))
        browser.open(url + '#session=1', timeout=TIMEOUT)
        timings = json.loads(browser.evaluate('document.body.dataset.timings'))
        total = browser.evaluate("document.querySelector('#count').textContent")
        figures = {'records': count, 'mb': size / 1048576.0, 'read_s': read_seconds,
                   'first_rows_ms': timings.get('firstRows', timings.get('ready')), 'ready_ms': timings['ready'],
                   'count': total}
        figures['end_ms'] = timed(browser, 'window.ctiView.scrollToEnd()')
        browser.evaluate('window.ctiView.renderStats.longest = 0')
        figures['median_frame_ms'], figures['frame_ms'] = browser.evaluate(JUMPS, timeout=TIMEOUT)
        figures['render_ms'] = browser.evaluate('window.ctiView.renderStats.longest')
        figures['filters'] = []
        for query in FILTERS:
            ms = timed(browser, 'window.ctiView.filter(%s)' % json.dumps(query))
            shown = browser.evaluate("document.querySelector('#count').textContent")
            server = browser.evaluate('window.ctiView.timings.matchMs')
            figures['filters'].append((query, ms, shown, server))
        figures['unfilter_ms'] = timed(browser, "window.ctiView.filter('')")
        figures['heap_mb'] = browser.evaluate('performance.memory ? performance.memory.usedJSHeapSize / 1048576 : null')
        return figures
    finally:
        if browser is not None:
            browser.close()
        tool.stop(timeout=TIMEOUT)


def verdict(ok):
    return 'ok' if ok else 'MISSED'


def browser_section(quick=False, number=6):
    """Print the section; return the problems (a failure, not a missed goal)."""
    count = 20000 if quick else 200000
    print('%d. Web view in headless Chromium: ctispy --read of a recording of %d messages --web, the session\'s '
          'page; times by the page\'s clock' % (number, count))
    if not chromium_path():
        print('   chromium is not installed: not measured')
        print()
        return []
    with tempfile.TemporaryDirectory(prefix='cti-bench-web-') as workdir:
        try:
            f = measure(workdir, count)
        except Exception as error:       # a measurement, not a test: say what broke, go on
            print('   FAILED: %s' % error)
            print()
            return ['web view in Chromium: %s' % error]
    print('   recording %.1f MB; ctispy read it in %.1f s; the page shows "%s"; JS heap %s MB'
          % (f['mb'], f['read_s'], f['count'], '%.0f' % f['heap_mb'] if f['heap_mb'] else '?'))
    rows = [['first rows shown (from navigation start)', '%.0f' % f['first_rows_ms'], '<= %d' % GOAL_FIRST_ROWS_MS,
             verdict(f['first_rows_ms'] <= GOAL_FIRST_ROWS_MS)],
            ['page ready (rows and timeline)', '%.0f' % f['ready_ms'], '', ''],
            ['jump to the end, its rows shown', '%.0f' % f['end_ms'], '<= %d' % GOAL_END_MS,
             verdict(f['end_ms'] <= GOAL_END_MS)],
            ['200 jumps across the table, rows fetched: median frame', '%.0f' % f['median_frame_ms'],
             '<= %d' % GOAL_FRAME_MS, verdict(f['median_frame_ms'] <= GOAL_FRAME_MS)],
            ['   the longest frame', '%.0f' % f['frame_ms'], '', '']]
    rows.append(['   the longest render (the script\'s own work)', '%.1f' % f['render_ms'], '', ''])
    for query, ms, shown, server in f['filters']:
        rows.append(['filter %r (%s)' % (query, shown), '%.0f' % ms, '<= %d' % GOAL_FILTER_MS,
                     verdict(ms <= GOAL_FILTER_MS)])
        rows.append(['   of which the /match request', '%.0f' % server, '', ''])
    rows.append(['filter cleared', '%.0f' % f['unfilter_ms'], '', ''])
    widths = [max(len(r[c]) for r in rows + [['what', 'ms', 'goal', 'result']]) for c in range(4)]
    for r in [['what', 'ms', 'goal', 'result']] + rows:
        cells = [cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths))]
        print('   ' + '  '.join(cells))
    print()
    return []


if __name__ == '__main__':
    sys.exit(1 if browser_section('--quick' in sys.argv[1:]) else 0)
