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


def key_path(text):
    """A key path (--strip FIELD, the KEY of KEY=VALUE): keys joined by dots, none of them empty."""
    if not text or '' in text.split('.'):
        raise argparse.ArgumentTypeError('not a key path: %r (an empty key)' % text)
    return text


def key_value(text):
    """KEY=VALUE (--include, --exclude, and a word of the web view's match query): (KEY, VALUE)."""
    key, equals, value = text.partition('=')
    if not equals or not key:
        raise argparse.ArgumentTypeError('expected KEY=VALUE, got %r' % text)
    try:
        return key_path(key), value
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError('%s in %r' % (error, text))


def listen_port(text):
    return port_number(text, lowest=0)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in --help as written."""
