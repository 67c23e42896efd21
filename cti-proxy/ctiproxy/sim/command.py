"""ctisim's command line: the options of its commands, and the run of each."""

import argparse
import getpass
import signal
import sys
import textwrap

from .. import __version__
from ..launch import release_stop_signals
from ..options import HelpFormatter, listen_port, port_number
from ..relay import ListenAddress, Log, describe_error
from .client import ProtocolError, SimulatedClient
from .demo import SHORT_DISPLAY, run_demo
from .protocol import (DEFAULT_EVENT_INTERVAL, DEFAULT_PORT, DEFAULT_PROXY_PORT, DEFAULT_TLS_PORT, DEFAULT_USERS,
                       TIMEOUT)
from ..recording import RecordingError
from .recorded import CAPTURE_PORT, IDENTIFYING_FIELDS, RecordingProblem, load_session
from .replay_client import (MARK_THRESHOLD, PasswordNeeded, ReplayClient, needs_password,
                            summary)
from .replay_server import UNKNOWN_REQUEST, ReplayServer
from .server import SimulatorServer
from .tls import CertificateError, certificate_for_run, client_context, server_context


def number_in(text, convert, lowest, highest, what):
    """text as a number (convert: int or float) from lowest to highest; else an ArgumentTypeError: 'not WHAT'."""
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not lowest <= value <= highest:
        raise argparse.ArgumentTypeError('not %s: %r' % (what, text))
    return value


def positive_int(text):
    """--users: 1 to 100000."""
    return number_in(text, int, 1, 100000, 'a number from 1 to 100000')


def seconds(text):
    """--events, --timeout: 0 to 86400 seconds."""
    return number_in(text, float, 0, 86400, 'a number of seconds (0 to 86400)')


def speed_factor(text):
    """--speed: a factor of 0 to 1000 on the recorded gaps."""
    return number_in(text, float, 0, 1000, 'a factor from 0 to 1000')


def session_number(text):
    """--session: a whole number from 1 up."""
    return number_in(text, int, 1, 2 ** 62, 'a session number (1 or more)')


def examples(text):
    """The examples ending a --help, indented."""
    return 'examples:\n' + '\n'.join('  ' + line for line in text.strip().splitlines())


MAIN_EXAMPLES = '''
ctisim demo                           server, ctispy and client: a whole session on the terminal
ctisim demo --starttls                the same with STARTTLS, which ctispy sees through
ctisim server --port 5003 --users 50  a simulated CTI server for a real CTI client or the tools
ctisim client 127.0.0.1               one client session through a tool listening on port 50030
'''

SERVER_EXAMPLES = '''
ctisim server                                   listen on port 5003 of all interfaces
ctisim server --port 0 --listen-addr 127.0.0.1  a free port on loopback, said on start
ctisim server --users 200 --events 2            200 users; a presence change every 2 seconds
ctisim server --tls                             TLS on port 5013, with a certificate made for the run
ctisim server --starttls --cert c.pem --key c.key   STARTTLS offered on port 5003, with this certificate
ctisim server --replay session.jsonl             a recorded XiVO: the recording's answers to any client
ctisim server --replay s.jsonl --session 2 --speed 0    its second session, unasked messages at once
ctisim server --replay cti.pcap --capture-port 15003   a capture of a XiVO on port 15003
Then: ctispy 127.0.0.1 --port 5003, and a CTI client (or ctisim client) on port 50030.
The certificate made for a run (by the openssl command) is said on start, for --tls-ca; it is removed
when ctisim ends.
'''

CLIENT_EXAMPLES = '''
ctisim client 127.0.0.1                through a tool listening on port 50030 (ctispy, ctisave, ctistat)
ctisim client 127.0.0.1 --port 5003    straight to a (simulated) server
ctisim client 127.0.0.1 --starttls --tls-ca tool.crt    STARTTLS through a tool seeing through it
ctisim client 127.0.0.1 --port 5013 --tls --tls-no-verify
ctisim client xivo-new --port 5003 --replay old.jsonl --password secret   the recorded client's requests
ctisim client xivo-new --port 5003 --replay old.jsonl --speed 0           each as soon as its answers came
'''

DEMO_EXAMPLES = '''
ctisim demo                            one line per message, the lists' contents left out: one screen
ctisim demo --pretty-print             the whole session, each message indented (any ctispy display option)
ctisim demo --oneline --time delta     every message on one line, with the time since the one before
ctisim demo --users 20
ctisim demo --starttls                 needs the openssl command, to make a certificate for the run
make demo ARGS=--pretty-print          the same through make
'''


def parser():
    """The options of ctisim and of its three commands."""
    main_parser = argparse.ArgumentParser(
        prog='ctisim', formatter_class=HelpFormatter, epilog=examples(MAIN_EXAMPLES),
        description='A simulated XiVO CTI server and client, to try cti-proxy without a XiVO.')
    main_parser.add_argument('--version', action='version', version='%(prog)s (cti-proxy) ' + __version__)
    commands = main_parser.add_subparsers(dest='command', metavar='COMMAND', title='commands')
    commands.required = True

    server = commands.add_parser('server', help='run a simulated CTI server until Ctrl-C',
                                 description='Run a simulated CTI server, several clients at once, until Ctrl-C.',
                                 formatter_class=HelpFormatter, epilog=examples(SERVER_EXAMPLES))
    server.add_argument('--port', type=listen_port,
                        help='the port to listen on (default: %d, or %d with --tls; 0 picks a free one, said on '
                             'start)' % (DEFAULT_PORT, DEFAULT_TLS_PORT))
    server.add_argument('--listen-addr', metavar='ADDR',
                        help='the address to listen on (default: all interfaces, IPv4 and IPv6)')
    add_users_option(server)
    server.add_argument('--events', type=seconds, default=DEFAULT_EVENT_INTERVAL, metavar='SECONDS',
                        help='after login, a presence change every SECONDS (default: %(default)g; 0: never)')
    server.add_argument('-v', '--verbose', action='store_true', help='report connections on stderr')
    add_server_tls_options(server)
    add_server_replay_options(server)

    client = commands.add_parser('client', help='play one CTI client session against HOST',
                                 description='Play one CTI client session: log in, read the lists, dial,\n'
                                             'hang up, search the directory, send a keepalive, quit.',
                                 formatter_class=HelpFormatter, epilog=examples(CLIENT_EXAMPLES))
    client.add_argument('host', metavar='HOST', help='the CTI server, or a tool in front of it')
    client.add_argument('--port', type=port_number, default=DEFAULT_PROXY_PORT,
                        help='its port (default: %(default)s, where the tools listen)')
    add_client_tls_options(client)
    add_client_replay_options(client)

    demo = commands.add_parser('demo', usage='%(prog)s [-h] [--users N] [--starttls] [CTISPY OPTIONS ...]',
                               help='a simulated server and client with ctispy in between',
                               description='Start a simulated server on loopback, ctispy in front of it, and a '
                                           'simulated client\nthrough ctispy: ctispy shows the session. Other '
                                           'options go to ctispy, in place of\nthe default: %s (one screen).'
                                           % ' '.join(SHORT_DISPLAY),
                               formatter_class=HelpFormatter, epilog=examples(DEMO_EXAMPLES))
    add_users_option(demo)
    demo.add_argument('--starttls', action='store_true',
                      help='the server offers STARTTLS, ctispy sees through it and the client takes it, with a '
                           'certificate made for the run (by the openssl command)')
    return main_parser


REPLAY_MATCHING = (
    'A request is answered with the recorded answer to a request of the same class with the same %s (a field '
    'absent from both is the same); login_id, login_pass and login_capas match by class alone, so any '
    'credentials log in. The oldest unused answer comes first, then the latest again; its replyid becomes the '
    'request\'s commandid and its timenow now. A request with no recorded answer gets an error answer ("%s") '
    'and is listed on stderr.' % (', '.join(IDENTIFYING_FIELDS), UNKNOWN_REQUEST))


CLIENT_REPLAY = (
    'Each request goes out as recorded (commandid kept) once the answers the recorded client had when it sent it '
    'have come (or --timeout passed), after the recorded gap. STARTTLS is taken with --starttls, not from the '
    'recording. Reply times differing from the recorded ones by more than %d ms are marked.'
    % round(MARK_THRESHOLD * 1000))


def add_server_replay_options(server):
    """--replay FILE and its options, for ctisim server."""
    group = add_replay_group(server, 'replay (a recorded XiVO)', REPLAY_MATCHING,
                             'play the server of a recording (ctispy --json-lines) or a capture (pcap, pcapng: its '
                             'sessions to --capture-port) to each client instead of the simulated system: its banner, '
                             'its answers, and the messages it sent unasked after each request, at their recorded gaps',
                             'the answers and unasked messages come at their recorded gaps times X')
    group.add_argument('--no-starttls', action='store_true',
                       help='do not offer STARTTLS, even if the recorded server did')


def add_client_replay_options(client):
    """--replay FILE and its options, for ctisim client."""
    group = add_replay_group(client, 'replay (a recorded client)', CLIENT_REPLAY,
                             'play the client of a recording (ctispy --json-lines) or a capture (its sessions to '
                             '--capture-port) instead of the simulated session, '
                             'then print a summary: requests sent, answered, not answered, answered with an error, '
                             'and each reply time next to the recorded one',
                             'each request goes out after its recorded gap times X')
    group.add_argument('--password', metavar='PASSWORD',
                       help='the password of the recorded login: for a recorded hashedpassword (computed with the '
                            'new session id; asked on the terminal if not given) or instead of a recorded password')
    group.add_argument('--timeout', type=seconds, metavar='SECONDS',
                       help='how long to wait for the answers a request waits for (default: %g)' % TIMEOUT)


def add_replay_group(command, title, description, replay_help, speed_help):
    """The group of --replay FILE, --session and --speed; return it."""
    group = command.add_argument_group(title, textwrap.fill(description, 78))
    group.add_argument('--replay', metavar='FILE', help=replay_help)
    group.add_argument('--session', type=session_number, metavar='N',
                       help='the session of the recording to replay (default: its first)')
    group.add_argument('--capture-port', type=port_number, metavar='PORT',
                       help='a capture\'s sessions are its TCP connections to this port, as with the tools\' '
                            '--read and --port (default: %d)' % CAPTURE_PORT)
    group.add_argument('--speed', type=speed_factor, metavar='X',
                       help='%s (default: 1, as recorded; 0.5: twice as fast; 0: at once)' % speed_help)
    return group


def check_replay_options(command, args):
    """Usage errors: the replay's options without --replay, --starttls with --no-starttls."""
    if getattr(args, 'replay', None) is None:
        needing = [name for name in ('session', 'capture_port', 'speed', 'no_starttls', 'password', 'timeout')
                   if getattr(args, name, None) is not None and getattr(args, name) is not False]
        if needing:
            command.error('--%s needs --replay' % needing[0].replace('_', '-'))
    if getattr(args, 'no_starttls', False) and getattr(args, 'starttls', False):
        command.error('--starttls and --no-starttls: give one')
    if getattr(args, 'speed', None) is None:
        args.speed = 1.0


def add_tls_mode(command, tls_help, starttls_help):
    """The encryption group of a command, with --tls and --starttls (one or the other); return the group."""
    group = command.add_argument_group('encryption')
    mode = group.add_mutually_exclusive_group()
    mode.add_argument('--tls', action='store_true', help=tls_help)
    mode.add_argument('--starttls', action='store_true', help=starttls_help)
    return group


def add_server_tls_options(server):
    """--tls or --starttls, and --cert and --key, for ctisim server."""
    group = add_tls_mode(server, 'TLS from the first byte, as a XiVO on port 5013',
                         'offer STARTTLS after the banner; a client that takes it continues in TLS')
    group.add_argument('--cert', metavar='FILE',
                       help='the server\'s certificate (PEM) (default: one made for the run by the openssl '
                            'command, for localhost, 127.0.0.1 and ::1; its path is said on start)')
    group.add_argument('--key', metavar='FILE', help='the private key (PEM) of --cert')


def add_client_tls_options(client):
    """--tls or --starttls, and how to check the server's certificate, for ctisim client."""
    group = add_tls_mode(client, 'TLS from the first byte (port 5013 of a XiVO)',
                         'expect the server\'s STARTTLS offer after its banner, and take it')
    check = group.add_mutually_exclusive_group()
    check.add_argument('--tls-ca', metavar='FILE', help='trust this certificate or CA (default: the system\'s CAs)')
    check.add_argument('--tls-no-verify', action='store_true', help='do not check the server\'s certificate')


def check_tls_options(command, args):
    """Usage errors: TLS options without --tls or --starttls, --cert without --key."""
    encrypted = getattr(args, 'tls', False) or getattr(args, 'starttls', False)
    needing = [name for name in ('cert', 'key', 'tls_ca', 'tls_no_verify') if getattr(args, name, None)]
    if needing and not encrypted:
        command.error('--%s needs --tls or --starttls' % needing[0].replace('_', '-'))
    if bool(getattr(args, 'cert', None)) != bool(getattr(args, 'key', None)):
        command.error('--cert and --key go together')


def add_users_option(command):
    """--users, for server and demo."""
    command.add_argument('--users', type=positive_int, default=DEFAULT_USERS, metavar='N',
                         help='N users, phones and agents, and a queue for every 4 users (default: %(default)s)')


def load_recording(args, log):
    """The session that --replay names, or None after saying (one line) why it cannot be replayed."""
    try:
        return load_session(args.replay, args.session, capture_port=args.capture_port or CAPTURE_PORT)
    except (RecordingProblem, RecordingError) as error:
        log.error(str(error))
    except OSError as error:
        log.error('cannot read %s: %s' % (args.replay, describe_error(error)))
    return None


def run_server(args, log):
    """Serve until Ctrl-C or SIGTERM; with --tls or --starttls, with --cert and --key or a certificate made
    for the run; with --replay, the recorded server (STARTTLS offered if it was, unless --no-starttls)."""
    if args.replay is not None:
        args.recorded = load_recording(args, log)
        if args.recorded is None:
            return 1
        args.starttls = args.starttls or (args.recorded.offered_starttls and not args.no_starttls and not args.tls)
    if args.port is None:
        args.port = DEFAULT_TLS_PORT if args.tls else DEFAULT_PORT
    if not (args.tls or args.starttls):
        return serve(args, log)
    with certificate_for_run(args.cert, args.key) as (cert, key, made):
        return serve(args, log, server_context(cert, key), cert if made else None)


def serve(args, log, tls_context=None, made_cert=None):
    """Serve until Ctrl-C or SIGTERM (made_cert: the path of a certificate made for the run, to say)."""
    try:
        listen = ListenAddress(args.listen_addr, args.port)
    except (OSError, UnicodeError) as error:
        log.error('cannot use listen address %r: %s' % (args.listen_addr, describe_error(error)))
        return 1
    try:
        server = new_server(args, listen, log, tls_context)
    except OSError as error:
        log.error('cannot listen on %s: %s' % (listen.describe(), describe_error(error)))
        return 1
    encryption = '; TLS' if args.tls else '; STARTTLS offered' if args.starttls else ''
    if args.replay is not None:
        log.error('recorded CTI server (session %d of %s, %d requests) listening on %s%s' % (
            args.recorded.number, args.replay, len(args.recorded.exchanges), listen.describe(server.port), encryption))
    else:
        log.error('simulated CTI server listening on %s; %d users%s'
                  % (listen.describe(server.port), args.users, encryption))
    if made_cert is not None:
        log.error('certificate made for this run: %s (trust it with --tls-ca; removed when ctisim ends)' % made_cert)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    return 0


def new_server(args, listen, log, tls_context):
    """The simulated server, or with --replay the recorded one, listening."""
    if args.replay is not None:
        return ReplayServer(listen, args.recorded, speed=args.speed, log=log, tls_context=tls_context,
                            starttls=args.starttls)
    return SimulatorServer(listen, users=args.users, event_interval=args.events or None, log=log,
                           tls_context=tls_context, starttls=args.starttls)


def run_client(args, log):
    """One client session; a one-line summary on stderr.  With --replay, the recorded client's requests and a
    summary of the replay on stdout."""
    context = client_context(args.tls_ca, not args.tls_no_verify) if args.tls or args.starttls else None
    if args.replay is not None:
        return replay_client(args, log, context)
    requests, unsolicited = SimulatedClient(args.host, args.port, tls_context=context, starttls=args.starttls).run()
    log.error('session done: %d requests answered, %d messages from the server unasked'
              % (requests, unsolicited))
    return 0


def replay_client(args, log, context):
    """ctisim client --replay: play the recorded requests, print the summary; exit 1 if the server closed first."""
    recorded = load_recording(args, log)
    if recorded is None:
        return 1
    password = args.password
    if password is None and needs_password(recorded) and sys.stdin is not None and sys.stdin.isatty():
        password = getpass.getpass('ctisim: password of the recorded login (for its hashedpassword): ')
    try:
        client = ReplayClient(recorded, args.host, args.port, password=password, speed=args.speed,
                              timeout=TIMEOUT if args.timeout is None else args.timeout, tls_context=context,
                              starttls=args.starttls)
    except PasswordNeeded as error:
        log.error(str(error))
        return 1
    outcomes = client.run()
    where = '%s:%d' % (args.host, args.port)
    sys.stdout.write(''.join(line + '\n' for line in summary(outcomes, args.replay, recorded.number, where)))
    sys.stdout.flush()
    if client.server_closed:
        log.error('the server closed the connection in the middle of the replay')
        return 1
    return 0


COMMANDS = {'server': run_server, 'client': run_client, 'demo': run_demo}


# ctispy's options that choose the session rather than how it is shown: the demo's ctispy relays one session
# of its own, in clear text or with --starttls (--loop would have it wait for more, --read read a file instead).
NOT_DISPLAY_OPTIONS = ('--read', '--capture-idle', '--port', '--listen-port', '--listen-addr', '--loop', '--tls',
                       '--tls-ca', '--tls-no-verify', '--listen-tls', '--cert', '--key', '--no-starttls')


def refuse_session_options(parser, spy_options):
    """ctisim demo: a usage error for a ctispy option that is not about the display."""
    for option in spy_options:
        if option.split('=', 1)[0] in NOT_DISPLAY_OPTIONS:
            parser.error('demo: %s is not a display option: the demo\'s ctispy relays one session of its own '
                         '(--starttls for STARTTLS)' % option.split('=', 1)[0])


def main(argv=None):
    """Run ctisim; return its exit status."""
    # Ctrl-C stops it even when started with SIGINT ignored (a script's background job); one that came during
    # the start-up stops it now (KeyboardInterrupt: launch.run's exit status).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    release_stop_signals()
    main_parser = parser()
    args, extra = main_parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if extra and (args.command != 'demo' or not extra[0].startswith('-')):
        main_parser.error('unrecognized arguments: %s' % ' '.join(extra))
    args.spy_options = extra          # ctisim demo: ctispy's display options, in place of the short display
    refuse_session_options(main_parser, extra)
    check_tls_options(main_parser, args)
    check_replay_options(main_parser, args)
    log = Log('ctisim', verbose=getattr(args, 'verbose', False))
    try:
        return COMMANDS[args.command](args, log)
    except (ProtocolError, CertificateError) as error:
        log.error(str(error))
    except OSError as error:
        where = ' to %s:%d' % (args.host, args.port) if args.command == 'client' else ''
        log.error('connection%s failed: %s' % (where, describe_error(error)))
    except KeyboardInterrupt:
        return 130
    return 1
