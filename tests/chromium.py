"""Headless Chromium driven through its DevTools protocol on a pipe: the page tests and the bench use it.

`chromium --dump-dom --virtual-time-budget` never finishes on the web view: its event stream stays open,
and virtual time waits for open requests.  So the browser is started once with --remote-debugging-pipe
(fd 3 carries our commands, fd 4 its answers, each a JSON text ended by a NUL byte) and told what to do.
"""

import json
import os
import shutil
import subprocess
import sys
import threading

TIMEOUT = 30.0


def chromium_path():
    """The Chromium program, or None where it is not installed."""
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(AssertionError):
    pass


class Chromium:
    """One headless Chromium, its profile and HOME inside `folder` (the caller's temporary folder)."""

    def __init__(self, folder, width=1400, height=900):
        program = chromium_path()
        if program is None:
            raise BrowserError('chromium is not installed')
        home = os.path.join(folder, 'home')
        os.makedirs(home, exist_ok=True)
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        args = [program, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--no-default-browser-check',
                '--disable-extensions', '--disable-background-networking', '--disable-sync', '--mute-audio',
                '--user-data-dir=' + os.path.join(folder, 'profile'), '--remote-debugging-pipe',
                '--window-size=%d,%d' % (width, height), 'about:blank']
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, '.config'),
                   XDG_CACHE_HOME=os.path.join(home, '.cache'))
        # fds 3 and 4 of the browser are our pipes: a small Python puts them there, then becomes chromium (a shell's
        # '3<&N' takes one digit in dash: in a test process holding many files, N is often 10 or more).  A dup may
        # already be 3 or 4, where dup2 leaves it as dup made it, not inheritable: hence set_inheritable.
        script = ('import os, sys; commands, answers = os.dup(int(sys.argv[1])), os.dup(int(sys.argv[2])); '
                  'os.dup2(commands, 3); os.dup2(answers, 4); '
                  'os.set_inheritable(3, True); os.set_inheritable(4, True); os.execv(sys.argv[3], sys.argv[3:])')
        self.log = open(os.path.join(folder, 'chromium.log'), 'wb')
        self.process = subprocess.Popen([sys.executable, '-c', script, str(commands_read), str(answers_write)] + args,
                                        env=env, cwd=folder,
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                        pass_fds=(commands_read, answers_write))
        os.close(commands_read)
        os.close(answers_write)
        self._next_id = 0
        self._buffer = b''
        self._events = []
        self._lock = threading.Lock()
        self.session = None
        self.attach()
        # the page's viewport is exactly width x height (--window-size counts the window's frame too)
        self.send('Emulation.setDeviceMetricsOverride', {'width': width, 'height': height, 'deviceScaleFactor': 1,
                                                         'mobile': False})

    # -- the protocol --
    def _read_message(self):
        while b'\0' not in self._buffer:
            data = os.read(self._answers, 1 << 16)
            if not data:
                raise BrowserError('chromium ended (see %s)' % self.log.name)
            self._buffer += data
        text, self._buffer = self._buffer.split(b'\0', 1)
        return json.loads(text.decode('utf-8'))

    def send(self, method, params=None, session=True):
        """Send one command and return its result (events coming before it are dropped)."""
        with self._lock:
            self._next_id += 1
            number = self._next_id
            message = {'id': number, 'method': method, 'params': params or {}}
            if session and self.session:
                message['sessionId'] = self.session
            os.write(self._commands, json.dumps(message).encode('utf-8') + b'\0')
            while True:
                answer = self._read_message()
                if answer.get('id') == number:
                    if 'error' in answer:
                        raise BrowserError('%s: %s' % (method, answer['error']))
                    return answer.get('result', {})
                if 'method' in answer:
                    self._events.append(answer['method'])

    def wait_event(self, method):
        """Wait for an event of the page (Page.loadEventFired...), dropping those before it."""
        with self._lock:
            while method not in self._events:
                answer = self._read_message()
                if 'method' in answer:
                    self._events.append(answer['method'])
            del self._events[:self._events.index(method) + 1]

    def attach(self):
        targets = self.send('Target.getTargets', session=False)['targetInfos']
        page = next(t for t in targets if t['type'] == 'page')
        self.session = self.send('Target.attachToTarget', {'targetId': page['targetId'], 'flatten': True},
                                 session=False)['sessionId']
        self.send('Page.enable')
        self.send('Runtime.enable')

    # -- what tests use --
    def evaluate(self, expression, timeout=TIMEOUT):
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.send('Runtime.evaluate', {'expression': expression, 'awaitPromise': True,
                                                'returnByValue': True, 'timeout': int(timeout * 1000)})
        if 'exceptionDetails' in result:
            details = result['exceptionDetails']
            raise BrowserError('page script failed: %s' % details.get('exception', {}).get('description', details))
        return result['result'].get('value')

    def open(self, url, timeout=TIMEOUT):
        """Load url and wait until the page says it has loaded what its fragment asks for."""
        del self._events[:]
        self.send('Page.navigate', {'url': 'about:blank'})
        self.wait_event('Page.loadEventFired')
        self.send('Page.navigate', {'url': url})
        self.wait_event('Page.loadEventFired')
        return self.wait_ready(timeout)

    def wait_ready(self, timeout=TIMEOUT):
        """Wait until the page sets body[data-ready] = "1" (what its fragment asks for is shown)."""
        return self.wait_for("document.body && document.body.dataset.ready === '1'", timeout)

    def wait_for(self, condition, timeout=TIMEOUT):
        """Wait until a JavaScript condition holds in the page: checked there every 20 ms, up to timeout."""
        ok = self.evaluate('''new Promise(function (resolve) {
            var end = performance.now() + %d;
            (function check() {
              var ok = false;
              try { ok = !!(%s); } catch (e) { ok = false; }
              if (ok) resolve(true);
              else if (performance.now() > end) resolve(false);
              else setTimeout(check, 20);
            })();
          })''' % (int(timeout * 1000), condition), timeout=timeout + 5)
        if not ok:
            raise BrowserError('never true in the page: %s; the page shows: %s' % (condition, self.evaluate(
                'document.body ? document.body.innerText.slice(0, 3000) : "no body"')))
        return ok

    def before_each_page(self, script):
        """Run script in every page loaded from now on, before the page's own."""
        self.send('Page.addScriptToEvaluateOnNewDocument', {'source': script})

    def key(self, name):
        """Press and release a key (ArrowDown, Enter, Escape...) in the focused element, as a user does."""
        codes = {'ArrowDown': 40, 'ArrowUp': 38, 'Enter': 13, 'Escape': 27, 'PageDown': 34, 'PageUp': 33,
                 'Home': 36, 'End': 35}
        for kind in ('keyDown', 'keyUp'):
            self.send('Input.dispatchKeyEvent', {'type': kind, 'key': name, 'code': name,
                                                 'windowsVirtualKeyCode': codes.get(name, 0)})

    def grant_clipboard(self):
        """Let the page write and read the clipboard (as a user's click on "allow" does)."""
        self.send('Browser.grantPermissions', {'permissions': ['clipboardReadWrite', 'clipboardSanitizedWrite']},
                  session=False)

    def dom(self):
        """The rendered document as HTML text."""
        return self.evaluate('document.documentElement.outerHTML')

    def screenshot(self, path):
        import base64
        data = self.send('Page.captureScreenshot', {'format': 'png'})['data']
        with open(path, 'wb') as out:
            out.write(base64.b64decode(data))

    def close(self):
        try:
            self.send('Browser.close', session=False)
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._commands, self._answers):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()
