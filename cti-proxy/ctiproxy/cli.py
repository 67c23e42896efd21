"""Command line: the options of ctispy, ctisave and ctistat, and the run of a tool."""

import argparse
import io
import os
import signal
import ssl
import stat
import sys

from . import __version__
from .analysis import BUFFER_SIZE, Analysis, Analyzer
from .capture import MAGIC_SIZE, CaptureError, capture_format
from .capture_source import CaptureSource, NoTraffic
from .filters import CLIENT, SERVER, MessageFilter
from .framing import MAX_LINE_SIZE
from .inputs import InputError, InputStream, open_input, read_lines, text_stream
from .options import HelpFormatter, key_path, key_value, listen_port, port_number
from .outputs import (TIME_FORMS, Clock, FanOut, JsonLinesOutput, OutputError, SaveOutput, SpyOutput,
                      numbered_file_of, numbered_files, same_file)
from .reassembly import IDLE_SECONDS, MAX_OPEN
from .recording import IncompleteRecording, RecordingError, Replay, last_records, read_records
from .relay import SWITCH_INTERVAL, ListenAddress, Log, RelayServer, Upstream, describe_error
from .stats import StatOutput
from .stopping import StopSignals, stop_signals_blocked
from .tls import CertificateFileError, TlsOptions, load_certificate, tls_reason
from .web import DEFAULT_PORT as DEFAULT_WEB_PORT

DEFAULT_PORT = 5003
DEFAULT_TLS_PORT = 5013
DEFAULT_LISTEN_PORT = 50030

# After Ctrl-C or SIGTERM, sessions get this long to close and the output this long to catch up;
# sessions that did not end, or an output still behind then, make the output said to be incomplete.
SESSIONS_BOUND = 2.0     # seconds the relaying sessions get to end once aborted (it takes them milliseconds)
STOP_GRACE = 0.5


# -- option values --

def non_negative(unit):
    """The type of an option that takes a number of `unit`, 0 or more (--slow MS, --capture-idle SECONDS)."""
    def number(text):
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 <= value < float('inf'):
            raise argparse.ArgumentTypeError('not a number of %s: %r' % (unit, text))
        return value
    number.__name__ = unit
    return number


milliseconds = non_negative('milliseconds')
seconds = non_negative('seconds')


_UNITS = {'': 1, 'K': 1024, 'M': 1024 ** 2, 'G': 1024 ** 3}


def byte_size(text):
    """'65536', '64K', '64M', '1G' (units of 1024; a trailing 'iB' or 'B' is allowed)."""
    number = text.strip().upper()
    for ending in ('IB', 'B'):
        if number.endswith(ending):
            number = number[:-len(ending)]
            break
    unit = number[-1:] if number[-1:] in _UNITS else ''
    try:
        size = int(float(number[:len(number) - len(unit)]) * _UNITS[unit])
    except (ValueError, OverflowError):     # not a number; inf
        size = 0
    if not 1024 <= size <= 2 ** 62:
        raise argparse.ArgumentTypeError('not a size of at least 1K: %r (bytes, or with K, M or G)' % text)
    return size


# -- parsers --

def replays(argv):
    """Whether argv asks to replay a recording (--read FILE), which takes the place of HOST."""
    return any(arg == '--read' or arg.startswith('--read=') for arg in argv)


def base_parser(prog, description, examples, argv):
    # No abbreviations: --rea would be taken for --read by argparse but not by replays(), and an option
    # added later would break an abbreviation in a user's script.  (Before Python 3.8 this also stops
    # grouping short flags, -vh; the tools' only short flags are -v and -h.)
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=HelpFormatter, allow_abbrev=False,
        epilog='examples:\n' + '\n'.join('  ' + line for line in examples.strip().splitlines()))
    if not replays(argv):
        parser.add_argument('host', metavar='HOST',
                            help='the CTI server: a host name or address, or HOST:PORT ([IPV6]:PORT)')
    parser.add_argument('--read', metavar='FILE',
                        help='instead of HOST, read a recording made with ctispy --json-lines, or a tcpdump or '
                             'Wireshark capture (pcap, pcapng; its sessions on --port); - for stdin, a pipe read '
                             'as it comes')
    parser.add_argument('--capture-idle', type=seconds, metavar='SECONDS',
                        help='with --read of a capture: end a session with no packet for SECONDS of the '
                             'capture\'s time, saying so (a later packet of it opens a new session), so that '
                             'memory stays bounded (default: %g; 0: never)' % IDLE_SECONDS)
    parser.set_defaults(host=None)
    return parser


def parse(parser, argv):
    """Parse argv, options and operands in any order (ctisave HOST --strip x CLIENTFILE SERVERFILE),
    with the TLS settings its options ask for in args.tls_options (None with --read: nothing is relayed)."""
    args = parser.parse_intermixed_args(argv)
    if args.capture_idle is not None and args.read is None:
        parser.error('--capture-idle applies to --read of a capture: live sessions end when their side closes')
    if args.capture_idle is None:
        args.capture_idle = IDLE_SECONDS
    server_address(parser, args)
    args.notes = []            # lines to say on stderr once the tool listens
    args.tls_options = tls_options(parser, args) if args.read is None else None     # --read: --cert is not read
    args.read_warnings = [] if args.read is None else unused_relay_options(args)
    if args.listen_port is None:
        args.listen_port = DEFAULT_LISTEN_PORT
    args.web_view = None       # ctispy --web: the WebServer
    return args


def split_host_port(text):
    """(host, port text or None) from 'host', 'host:port', '[v6addr]:port' or '[v6addr]'; a bare IPv6
    address ('::1') is a host.  ValueError for an unclosed '[' or text after ']' that is not ':port'."""
    if text.startswith('['):
        host, bracket, rest = text[1:].partition(']')
        if not bracket or rest[:1] not in ('', ':'):
            raise ValueError(text)
        return host, rest[1:] if rest else None
    if text.count(':') == 1:
        host, _, port = text.partition(':')
        return host, port
    return text, None


def server_address(parser, args):
    """Set args.host and args.port from HOST (or HOST:PORT) and --port; the port is 5013 with --tls, else
    5003.  A port in HOST that --port contradicts is a usage error."""
    if args.host is not None:
        try:
            host, port_text = split_host_port(args.host)
        except ValueError:
            parser.error('HOST: not a host, HOST:PORT or [IPV6]:PORT: %r' % args.host)
        if not host:
            parser.error('HOST: no host name or address in %r' % args.host)
        if port_text is not None:
            try:
                port = port_number(port_text)
            except argparse.ArgumentTypeError as error:
                parser.error('HOST %s: %s' % (args.host, error))
            if args.port is not None and args.port != port:
                parser.error('HOST %s and --port %d name two different ports: give one' % (args.host, args.port))
            args.port = port
        args.host = host
    if args.port is None:
        args.port = DEFAULT_TLS_PORT if args.tls else DEFAULT_PORT


def add_relay_options(parser, loop_help=''):
    group = parser.add_argument_group('relay')
    group.add_argument('--port', type=port_number,
                       help='the CTI server\'s port, also the one whose sessions --read takes from a capture '
                            '(default: %d, or %d with --tls)' % (DEFAULT_PORT, DEFAULT_TLS_PORT))
    group.add_argument('--listen-port', type=listen_port, metavar='PORT',
                       help='the port to accept CTI clients on (default: %d; 0 picks a free one)' % DEFAULT_LISTEN_PORT)
    group.add_argument('--listen-addr', metavar='ADDR',
                       help='the address to accept clients on (default: all interfaces, IPv4 and IPv6)')
    group.add_argument('--loop', action='store_true',
                       help='serve session after session, several at once, until Ctrl-C '
                            '(default: exit after one session)' + loop_help)
    group.add_argument('--max-message-size', type=byte_size, default=MAX_LINE_SIZE, metavar='SIZE',
                       help='the longest line decoded as a message; a longer one is shown in pieces '
                            'and still relayed whole (default: 64M)')
    group.add_argument('-v', '--verbose', action='store_true', help='report connection events on stderr')
    parser.add_argument('--version', action='version', version='%(prog)s (cti-proxy) ' + __version__)
    tls = parser.add_argument_group('encryption')
    tls.add_argument('--tls', action='store_true',
                     help='connect to the server with TLS (port 5013 unless given); its certificate is checked '
                          'against the system\'s CAs')
    tls.add_argument('--tls-ca', metavar='FILE',
                     help='trust this certificate or CA for the server (XiVO uses a self-signed one)')
    tls.add_argument('--tls-no-verify', action='store_true', help='do not check the server\'s certificate')
    tls.add_argument('--listen-tls', action='store_true',
                     help='accept clients with TLS, with --cert and --key')
    tls.add_argument('--cert', metavar='FILE',
                     help='the tool\'s certificate (PEM), for --listen-tls and to see through STARTTLS')
    tls.add_argument('--key', metavar='FILE', help='the private key (PEM) of --cert')
    tls.add_argument('--no-starttls', action='store_true',
                     help='hide the server\'s STARTTLS offer from the client, so that the session stays '
                          'in clear text (this changes the traffic)')


# The options that only the relay uses: with --read, nothing is relayed.
RELAY_ONLY = (('--listen-port', 'listen_port'), ('--listen-addr', 'listen_addr'), ('--listen-tls', 'listen_tls'),
              ('--cert', 'cert'), ('--key', 'key'), ('--tls-ca', 'tls_ca'), ('--tls-no-verify', 'tls_no_verify'),
              ('--no-starttls', 'no_starttls'))


def unused_relay_options(args):
    """--read: a warning naming the options given that only the relay uses (none: no warning)."""
    given = [name for name, attribute in RELAY_ONLY if getattr(args, attribute) not in (None, False)]
    if not given:
        return []
    return ['warning: %s: %s no effect with --read (nothing is relayed)'
            % (', '.join(given), 'has' if len(given) == 1 else 'have')]


def tls_options(parser, args):
    """The TLS settings that the options ask for; a file that cannot be used is a StartError."""
    if bool(args.cert) != bool(args.key):
        parser.error('--cert and --key go together')
    if args.listen_tls and not args.cert:
        parser.error('--listen-tls needs --cert and --key')
    listen_context = upstream_context = None
    if args.cert:
        listen_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            load_certificate(listen_context, args.cert, args.key)
        except CertificateFileError as error:
            raise StartError(str(error))
    warnings = unused_tls_options(args)
    if args.tls or listen_context is not None:
        try:
            upstream_context = ssl.create_default_context(cafile=args.tls_ca)
        except (OSError, ValueError) as error:
            raise StartError('cannot use --tls-ca %s: %s' % (args.tls_ca, tls_reason(error)))
        if args.tls_no_verify:
            upstream_context.check_hostname = False
            upstream_context.verify_mode = ssl.CERT_NONE
            warnings.append('warning: --tls-no-verify: the server\'s certificate is not checked')
    return TlsOptions(upstream_context, args.tls, listen_context, args.listen_tls, args.no_starttls, warnings)


def unused_tls_options(args):
    """Warnings for --tls-ca and --tls-no-verify without --tls or --cert: the tool talks to the server in
    clear text, so they have no effect."""
    if args.tls or args.cert:
        return []
    given = [name for name, value in (('--tls-ca', args.tls_ca), ('--tls-no-verify', args.tls_no_verify)) if value]
    return ['warning: %s has no effect without --tls or --cert (the connection to the server is in clear text)'
            % name for name in given]


# The words of the filters' help: (shown, show, hide, hides) or (saved, save, leave out, leaves out).
FILTER_WORDS = {'shown': ('shown', 'show', 'hide', 'hides'), 'saved': ('saved', 'save', 'leave out', 'leaves out')}


def add_filter_options(parser, what='shown'):
    shown, show, hide, hides = FILTER_WORDS[what]
    group = parser.add_argument_group('filters (they change what is %s, never what is relayed)' % shown)
    group.add_argument('--strip', action='append', default=[], type=key_path, metavar='FIELD',
                       help='remove FIELD from each message %s; a.b removes a nested key; repeatable' % shown)
    group.add_argument('--include', action='append', default=[], type=key_value, metavar='KEY=VALUE',
                       help='%s only messages whose KEY equals VALUE (as a string or as JSON); '
                            'repeat a key for any of several values, use several keys for all of them; '
                            '%s lines that are not JSON' % (show, hides))
    group.add_argument('--exclude', action='append', default=[], type=key_value, metavar='KEY=VALUE',
                       help='%s messages matching KEY=VALUE (combined as --include is)' % hide)
    return group


SPY_EXAMPLES = '''
ctispy xivo-new                       show every message, one per line
ctispy xivo-new --pretty-print        indented, with sorted keys
ctispy xivo-new --raw                 every chunk as it was received (control characters escaped)
ctispy xivo-new --oneline | grep login              time, direction and message on one line
ctispy xivo-new --slow 500            mark answers that took more than half a second
ctispy xivo-new --time since-start    times counted from the session's start (also: date, epoch, delta)
ctispy xivo-new --strip timenow --strip commandid --strip replyid
ctispy xivo-new --include class=getlist
ctispy xivo-new --no-client --loop    only what the server says, session after session
ctispy xivo-new --loop --oneline | grep '\\[#3\\]'      one session out of many
ctispy xivo-new --json-lines > session.jsonl         record, then replay with any tool:
ctispy --read session.jsonl --include class=getlist
ctispy --read session.jsonl --json-lines | jq 'select(.reply_to.ms > 100)'
ctispy --read cti.pcap                a capture: tcpdump -i any -w cti.pcap port 5003
ssh root@xivo tcpdump -i any -U -w - port 5003 | ctispy --read -     live and passive: no client change
ctispy xivo-new --web                 a web view of the sessions: open the URL it prints
ctispy --read cti.pcap --web 8031     the same for a capture (ssh -L 8031:127.0.0.1:8031 root@box to see it)
An answer's header names its request and the reply time ("reply to login_id, 1.4 ms"), and says
ERROR when it reports one; requests never answered are listed at the session's end.
Then point the CTI client at port 50030 of this machine.
'''

SAVE_EXAMPLES = '''
ctisave xivo-new /tmp/cti-client /tmp/cti-server --strip timenow
ctisave xivo-old /tmp/old-client /tmp/old-server --strip timenow
vimdiff /tmp/old-server /tmp/cti-server
ctisave --read session.jsonl /tmp/cti-client /tmp/cti-server    from a ctispy --json-lines recording
The files hold credentials: they are created readable by their owner only. An existing file is
overwritten and keeps its mode; a symbolic link, FIFO or device at either path is refused.
'''

STAT_DESCRIPTION = '''Print a report about each CTI session when it ends: when it started, its client and server
and who closed it; messages by class and function; a timeline of messages; reply times; error
answers; requests never answered; the slowest answers and the biggest messages.'''

STAT_EXAMPLES = '''
ctistat xivo-new                      a report when the session ends
ctistat xivo-new --loop --json        one JSON report per session, one per line
ctistat xivo-new --json | jq .errors  the error answers, by request
ctistat --read session.jsonl          a report from a ctispy --json-lines recording
ctistat --read cti.pcap               a report per session of a capture, with retransmitted and missing bytes
'''


def spy_parser(argv=()):
    parser = base_parser('ctispy', 'Show the messages between a CTI client and server, live.', SPY_EXAMPLES, argv)
    display = parser.add_argument_group('display')
    style = display.add_mutually_exclusive_group()
    style.add_argument('--pretty-print', action='store_true',
                       help='show each message indented by 4, with sorted keys')
    style.add_argument('--raw', action='store_true',
                       help='show each chunk of bytes as received, without framing; control characters and '
                            'bytes that are not UTF-8 are shown escaped (\\x1b, \\xff), newlines kept')
    style.add_argument('--oneline', action='store_true',
                       help='show time, session tag, direction and message on one line, for grep: '
                            '13:01:02.125470 S>C {...}')
    style.add_argument('--json-lines', action='store_true',
                       help='write one JSON record per message, for jq, scripts and --read: '
                            '{"time", "session", "direction", "message" (or "text")}, an answer\'s with '
                            '"reply_to" {"class", "function", "ms"} (and "error"); times in ISO 8601 with '
                            'the UTC offset')
    display.add_argument('--time', choices=TIME_FORMS, default='clock', metavar='FORM',
                         help='how times are shown: clock (13:01:02.125470, the default), date (with the '
                              'date), epoch (seconds since 1970), since-start (since the session opened), '
                              'delta (since the previous message of the session)')
    display.add_argument('--slow', type=milliseconds, metavar='MS',
                         help='mark SLOW the answers that came more than MS milliseconds after their request')
    display.add_argument('--web', nargs='?', const='', metavar='[ADDR:]PORT',
                         help='also serve a web view of the sessions on http://ADDR:PORT (default 127.0.0.1:%d), '
                              'its URL with a token printed at the start; without --pretty-print, --oneline, --raw '
                              'or --json-lines the terminal stays quiet' % DEFAULT_WEB_PORT)
    sides = add_filter_options(parser).add_mutually_exclusive_group()
    sides.add_argument('--no-client', action='store_true', help='hide what the client sends')
    sides.add_argument('--no-server', action='store_true', help='hide what the server sends')
    add_relay_options(parser, '; each message is tagged with its session ([#3]) and a line notes where each '
                              'session starts (addresses) and ends (who closed, or the error)')
    return parser


def save_parser(argv=()):
    parser = base_parser('ctisave', 'Save each direction\'s messages to its own file, pretty-printed with '
                         'sorted keys, to compare sessions with vimdiff.', SAVE_EXAMPLES, argv)
    parser.add_argument('client_file', metavar='CLIENTFILE', help='where to save what the client sends')
    parser.add_argument('server_file', metavar='SERVERFILE', help='where to save what the server sends')
    add_filter_options(parser, 'saved')
    add_relay_options(parser)
    return parser


def stat_parser(argv=()):
    parser = base_parser('ctistat', STAT_DESCRIPTION, STAT_EXAMPLES, argv)
    parser.add_argument('--json', action='store_true',
                        help='print each report as one JSON document on one line, and nothing else on stdout '
                             '(the same names as the text report)')
    add_relay_options(parser)
    return parser


def message_filter(args):
    directions = [side for side, hidden in ((CLIENT, getattr(args, 'no_client', False)),
                                            (SERVER, getattr(args, 'no_server', False))) if not hidden]
    return MessageFilter(include=args.include, exclude=args.exclude, strip=args.strip, directions=directions)


def wants_colour(stream):
    return stream.isatty() and not os.environ.get('NO_COLOR')


# -- the tools --

class StartError(Exception):
    """A file or setting that cannot be used, found before the tool starts (one line, exit 1)."""


def standard_output(nothing_without_it):
    """stdout's binary stream, buffered; started with stdout closed (>&-), a StartError saying what cannot be
    done."""
    if sys.stdout is None:           # what Python makes of a file descriptor 1 closed at start
        raise StartError('stdout is closed: %s (redirect it to a file instead)' % nothing_without_it)
    stream = sys.stdout.buffer
    if isinstance(stream, io.RawIOBase):
        # PYTHONUNBUFFERED (or -u) leaves stdout's binary layer unbuffered: its write() may write only part of
        # what it is given (a full disk, a signal) and say so in its result, which the outputs do not read.  A
        # buffered writer writes it all or raises.
        stream = os.fdopen(stream.fileno(), 'wb', closefd=False)
    return stream


def spy_tool(argv):
    parser = spy_parser(argv)
    args = parse(parser, argv)
    if args.raw and (args.strip or args.include or args.exclude):
        parser.error('--raw shows bytes as received: --strip, --include and --exclude do not apply to it')
    if args.raw and args.slow is not None:
        parser.error('--raw shows bytes as received: --slow does not apply to it')
    if args.json_lines and args.time != 'clock':
        parser.error('--json-lines always writes times in ISO 8601 with the UTC offset: --time does not apply to it')
    chosen_form = args.pretty_print or args.raw or args.oneline or args.json_lines
    if args.web is not None and not chosen_form:
        output = None
    elif args.json_lines:
        output = JsonLinesOutput(standard_output('nowhere to show the messages'), loop=args.loop, slow_ms=args.slow)
    else:
        output = SpyOutput(standard_output('nowhere to show the messages'), pretty=args.pretty_print, raw=args.raw,
                           colour=wants_colour(sys.stdout), oneline=args.oneline, loop=args.loop, slow_ms=args.slow,
                           clock=Clock(args.time))
    if args.web is not None:
        store = web_view(parser, args)
        output = store if output is None else FanOut(output, store)
    return args, output, message_filter(args)


def web_view(parser, args):
    """--web: bind its port now (before anything else is touched), and return the store it serves."""
    from .web.server import WebAddressError, WebServer, parse_web_address   # here: http.server slows every start
    from .web.store import WebStore
    try:
        address = parse_web_address(args.web)
    except WebAddressError as error:
        parser.error('%s (HOST goes before --web, or give --web a port)' % error)
    store = WebStore(slow_ms=args.slow, strip=bool(args.strip))
    try:
        args.web_view = WebServer(store, address, Log('ctispy', args.verbose))
    except WebAddressError as error:
        raise StartError(str(error))
    store.describe('live', '', filters_text(args))
    return store


def filters_text(args):
    """The command line's filters, as options: '--include class=getlist --no-client'."""
    words = ['--%s %s=%s' % (option, key, value) for option in ('include', 'exclude')
             for key, value in getattr(args, option)]
    words += ['--strip %s' % field for field in args.strip]
    words += ['--%s' % side for side in ('no-client', 'no-server') if getattr(args, side.replace('-', '_'))]
    return ' '.join(words)


def save_tool(argv):
    parser = save_parser(argv)
    args = parse(parser, argv)
    for path, name in ((args.client_file, 'CLIENTFILE'), (args.server_file, 'SERVERFILE')):
        if not path:
            parser.error('%s is empty: give the path of the file to save into' % name)
    if same_file(args.client_file, args.server_file):
        parser.error('CLIENTFILE and SERVERFILE are the same file (%s): each direction needs its own'
                     % args.server_file)
    if args.loop:
        refuse_numbered_clash(parser, args.client_file, args.server_file)
    if args.read is not None:
        refuse_saving_over_input(parser, args)
    output = SaveOutput(args.client_file, args.server_file, warn=Log('ctisave').say, empty_late=bool(args.read))
    if args.loop:
        args.notes.extend(older_files_note(args.client_file, args.server_file))
    return args, output, message_filter(args)


def refuse_numbered_clash(parser, client_file, server_file):
    """--loop: one file being the other's numbered file (SERVERFILE being CLIENTFILE.2, say) would have session N
    overwrite what session 1 saved: a usage error now, not a failure at session N."""
    for (path, name), (other, other_name) in (((server_file, 'SERVERFILE'), (client_file, 'CLIENTFILE')),
                                              ((client_file, 'CLIENTFILE'), (server_file, 'SERVERFILE'))):
        number = numbered_file_of(path, other)
        if number is not None:
            parser.error('%s (%s) is %s.%d, which --loop writes for session %d: give the two files names that '
                         'do not clash' % (name, path, other_name, number, number))


def refuse_saving_over_input(parser, args):
    """ctisave --read: a save path, or a numbered file of one (which a recording of several sessions writes into),
    that is the recording or capture being read (--read FILE, or stdin redirected from it) would empty it before
    it is read: a usage error, nothing touched."""
    if args.read == '-':
        try:
            read = os.fstat(0)
        except OSError:
            return                              # stdin closed: said when it is read
        if not stat.S_ISREG(read.st_mode):
            return                              # a pipe or a terminal is no file of ours

        def is_input(path):
            try:
                found = os.stat(path)
            except OSError:
                return False
            return (found.st_dev, found.st_ino) == (read.st_dev, read.st_ino)
        input_name = 'stdin'
    else:
        def is_input(path):
            return same_file(path, args.read)
        input_name = args.read
    for path, name in ((args.client_file, 'CLIENTFILE'), (args.server_file, 'SERVERFILE')):
        if is_input(path):
            parser.error('%s (%s) is the file that --read reads (%s): saving would overwrite it; give another path'
                         % (name, path, input_name))
        for numbered in numbered_files(path):
            if is_input(numbered):
                number = numbered.rsplit('.', 1)[1]
                parser.error('%s.%s (%s) is the file that --read reads (%s): its session %s would be saved into '
                             'it; give %s another name' % (name, number, numbered, input_name, number, name))


def older_files_note(client_file, server_file, most=6):
    """ctisave --loop: a line naming the numbered files of an earlier run (CLIENTFILE.N, SERVERFILE.N), which
    this run's Nth session overwrites and which stay as they are if it does not come; none if there are none."""
    found = numbered_files(client_file) + numbered_files(server_file)
    if not found:
        return []
    named = ', '.join(found[:most]) + (' and %d more' % (len(found) - most) if len(found) > most else '')
    return ['note: numbered files from an earlier run are there: %s; session N of this run overwrites '
            'the .N files, and those of sessions that do not come are left as they are' % named]


def stat_tool(argv):
    parser = stat_parser(argv)
    args = parse(parser, argv)
    return args, StatOutput(standard_output('nowhere to print the reports'), as_json=args.json), MessageFilter()


TOOLS = {'ctispy': spy_tool, 'ctisave': save_tool, 'ctistat': stat_tool}


def main(prog, argv=None):
    """Run one of the tools; return its exit status (0 when stopped by Ctrl-C, SIGTERM or SIGHUP)."""
    signals = StopSignals()
    log = Log(prog)
    args = None
    try:
        signals.install()           # a Ctrl-C that came during the start-up stops the tool here
        args, output, chosen = TOOLS[prog](sys.argv[1:] if argv is None else argv)
        log.verbose = args.verbose
        web = args.web_view
        if web is not None:
            start_web_view(web, log)
        if args.read is None:
            return Proxy(args, output, chosen, log, signals).run()
        for warning in args.read_warnings:
            log.say(warning)
        status = read_input(args, output, chosen, log)
        if web is not None and web.store.has_input():
            serve_until_stopped(web, log, signals, read_whole=status == 0)
        return status
    except StartError as error:
        log.error(str(error))
        return 1
    except KeyboardInterrupt:
        return 0          # stopped before it had anything to finish
    finally:
        signals.ignore()
        if args is not None and args.web_view is not None:
            args.web_view.stop()


def start_web_view(web, log):
    """Serve the web view (on a thread that leaves the stop signals to the main one), and say where."""
    with stop_signals_blocked():
        web.start()
    log.say('web view on %s' % web.url)
    warning = web.exposed_warning()
    if warning:
        log.say(warning)


def serve_until_stopped(web, log, signals, read_whole):
    """--read --web, the input read (or up to bad input, said already): say so, and serve until Ctrl-C or
    SIGTERM."""
    web.store.read_to_the_end()
    # Ready for the Ctrl-C before saying to press it: one that came between the line and this would be a
    # KeyboardInterrupt, which ends the tool as stopped before it had anything to finish (exit 0, not the input's 1).
    signals.wait_for_requests()
    done = 'read to the end' if read_whole else 'what came before is read'
    log.say('%s; the web view stays on %s until Ctrl-C' % (done, web.url))
    signals.wait_until(lambda: False)


def read_input(args, output, chosen_filter, log):
    """--read: run a recording or a capture through the tool instead of live traffic, as it is read.

    What it is, its first bytes tell: a pcap or pcapng capture, else a JSON-lines recording.  Bad
    input ends the run after what came before it was shown (exit 1); a recording or capture cut short
    at its end is a warning (exit 0)."""
    name = 'stdin' if args.read == '-' else args.read
    try:
        stream = open_input(args.read)
    except OSError as error:
        log.error('cannot read %s: %s' % (name, describe_error(error)))
        return 1
    with stream:
        try:
            stream = InputStream(stream, name)
            head = stream.read(MAGIC_SIZE)
            if not head:                # a pipe whose writer failed (ssh, tcpdump) looks like this
                log.error('%s is empty: no recording or capture in it' % name)
                return 1
            is_capture = capture_format(head) is not None
            if not is_capture and getattr(args, 'raw', False):
                log.error('--raw shows bytes as received: a recording holds messages, not bytes (a capture '
                          'holds bytes: --raw reads one)')
                return 2
            output.start()              # the input is open: now files may be touched
            if args.web_view is not None:
                args.web_view.store.describe('capture' if is_capture else 'recording',
                                             'reading %s' % name)
            analysis = Analysis(output, chosen_filter, args.max_message_size)
            if is_capture:
                warnings = read_capture(analysis, stream, head, name, args, log)
            else:
                warnings = replay_recording(analysis, text_stream(stream, head), name)
        except (RecordingError, InputError, OutputError) as error:
            log.error(str(error))
            return 1
        except (CaptureError, NoTraffic) as error:
            log.error('%s: %s' % (name, error))
            return 1
        except BrokenPipeError:
            _silence_stdout()
            return 0
        except OSError as error:        # read errors are InputErrors: this is stdout's
            log.error('cannot write the output: %s' % describe_error(error))
            _silence_stdout()
            return 1
    for warning in warnings:
        log.say('warning: %s' % warning)
    return 0


def replay_recording(analysis, stream, name):
    """Replay a recording (text), record by record; return the warnings to say.  A file is read twice
    (first to learn where each session ends), a pipe once."""
    ends = None
    if stream.seekable():
        ends = last_records(read_lines(stream, name), name)
        stream.seek(0)
    run = Replay(analysis, ends)
    warnings = []
    try:
        run.run(read_records(read_lines(stream, name), name))
    except IncompleteRecording as warning:
        warnings.append(str(warning))
    if run.went_back:
        warnings.append('%s, line %d: a time earlier than the record before it in its session (%d such record%s); '
                        'taken as that time' % (name, run.first_went_back, run.went_back,
                                                '' if run.went_back == 1 else 's'))
    return warnings


def read_capture(analysis, stream, head, name, args, log):
    """Read a capture, packet by packet; return the warnings to say."""
    source = CaptureSource(analysis, args.port, log.say, args.capture_idle,
                           capture_open_most(analysis.output.files_per_session))
    source.run(stream, head)
    warnings = [text for text in [source.tool_ended_text()] if text]
    if source.cut_at is not None:
        warnings.append('%s ends in the middle of a packet (at byte %d; was tcpdump stopped while writing?): '
                        'everything before it was read' % (name, source.cut_at))
    return warnings


def capture_open_most(files_per_session, spare=64):
    """The most sessions of a capture open at once: MAX_OPEN, or fewer if their files (ctisave's) would use up
    the file descriptors the process may open (keeping `spare` for the rest)."""
    if not files_per_session:
        return MAX_OPEN
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return MAX_OPEN
    if limit == resource.RLIM_INFINITY:
        return MAX_OPEN
    return max(1, min(MAX_OPEN, (limit - spare) // files_per_session))


class Proxy:
    """One run of a tool: listen, relay sessions into the analysis, and stop cleanly."""

    def __init__(self, args, output, chosen_filter, log, signals):
        self.args = args
        self.log = log
        self.signals = signals
        self.stopping = False
        self.output_failed = False
        self.analyzer = Analyzer(output, chosen_filter, args.max_message_size, BUFFER_SIZE,
                                 on_output_closed=self._output_closed)
        self.analyzer.on_finished = signals.ring

    def run(self):
        args, log = self.args, self.log
        self.signals.wait_for_requests()    # from here on a stop signal is a request that the waits below see
        started = self._start()
        if started is None:
            return 0                        # asked to stop while starting: nothing was touched
        upstream, listen, server = started
        status = None
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            with stop_signals_blocked():
                self.analyzer.start()
            listening = 'listening on %s%s; relaying each client to %s%s' % (
                listen.describe(server.port), ' (TLS)' if args.listen_tls else '',
                upstream, ' (TLS)' if args.tls else '')
            log.say(listening)
            if args.web_view is not None:
                args.web_view.store.describe('live', listening)
            for warning in args.tls_options.warnings:
                log.say(warning)
            for note in args.notes:
                log.say(note)
            status = self._serve(server)
        finally:
            self.stopping = True            # the output's end need not signal us any more
            complete = self._stop(server, signalled=status is None)
            self.signals.settle()           # a stop signal from now on: a repeat, or (later) an end at once
        if self.output_failed:
            status = 1
        if not complete:
            log.error('stopped before all the traffic was shown or saved: the output is incomplete')
            os._exit(status or 0)           # the analysis thread may be stuck writing to stdout: don't wait
        if self.analyzer.output_closed:
            _silence_stdout()
        return status or 0

    def _start(self):
        """Find the server, bind the listening port, refuse to relay to the tool itself, and only then let
        the output open its files; return (upstream, listen, server), None if asked to stop meanwhile, or raise
        StartError naming what failed."""
        args = self.args
        upstream = Upstream(args.host, args.port)
        try:
            upstream.check_resolves()
        except (OSError, UnicodeError) as error:
            raise StartError('cannot find server host %r: %s' % (args.host, describe_error(error)))
        try:
            listen = ListenAddress(args.listen_addr, args.listen_port)
        except (OSError, UnicodeError) as error:
            raise StartError('cannot use listen address %r: %s' % (args.listen_addr, describe_error(error)))
        try:
            server = RelayServer(listen, upstream, self.analyzer, self.log, args.tls_options, self.signals)
        except OSError as error:
            raise StartError('cannot listen on %s: %s' % (listen.describe(), describe_error(error)))
        try:
            if server.relays_to_itself():
                raise StartError('the server %s is the tool itself, which listens on %s: each client would be '
                                 'relayed back to the tool' % (upstream, listen.describe(server.port)))
            if self.signals.requested:
                server.server_close()
                return None
            self.analyzer.output.start()       # only now may files be touched: the tool can start
        except OutputError as error:
            server.server_close()
            raise StartError(str(error))
        except StartError:
            server.server_close()
            raise
        return upstream, listen, server

    def _serve(self, server):
        """Relay clients until a stop is asked (--loop), or one client to the end of its session; return the
        exit status, None when asked to stop."""
        server.timeout = 0                  # handle_request() takes the client that wait() saw, never waits
        while not self.signals.requested:
            accepted = server.accepted
            if self.signals.wait([server.fileno()]):
                server.handle_request()
            if server.accepted == accepted:
                continue                    # a session ended, a stop signal came, or the client went away
            if not self.args.loop:
                server.server_close()       # one session only: accept nobody else
                if not self.signals.wait_until(server.sessions_ended):
                    return None
                return 1 if server.failures else 0
        return None

    def _output_closed(self, reason):
        """The output cannot go on (reason None: stdout's reader went away): stop as Ctrl-C does
        (a real signal wakes the main thread from any wait), unless the tool is stopping already."""
        if reason is not None:
            self.log.error(reason)
            self.output_failed = True
        if not self.stopping:
            os.kill(os.getpid(), signal.SIGINT)

    def _stop(self, server, signalled):
        """Close every session, then let the output catch up: as long as it takes when the tool ends on its own
        (unless a stop is asked meanwhile), STOP_GRACE seconds after a stop request; return whether all the
        traffic reached it."""
        server.server_close()
        self.analyzer.tool_stopping()           # before the sessions' ends: the tool closes them, not a side
        server.abort_sessions()
        ended = server.wait_relaying_sessions(SESSIONS_BOUND)
        if not signalled:
            self.analyzer.end()
            self.signals.wait_until(lambda: self.analyzer.finished)
        caught_up = self.analyzer.finish(STOP_GRACE)
        return ended and caught_up


def _silence_stdout():
    """stdout's reader went away: drop what is left, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
