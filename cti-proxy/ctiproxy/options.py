"""Option values and help layout shared by every tool's command line (cli.py and the simulator's)."""

import argparse


def port_number(text, lowest=1):
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError('not a port number: %r (%d to 65535)' % (text, lowest))
    return port


def key_value(text):
    """KEY=VALUE (--include, --exclude, and a word of the web view's match query): (KEY, VALUE)."""
    key, equals, value = text.partition('=')
    if not equals or not key:
        raise argparse.ArgumentTypeError('expected KEY=VALUE, got %r' % text)
    return key, value


def listen_port(text):
    return port_number(text, lowest=0)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in --help as written."""
