"""cti-proxy: see, save and measure what a XiVO CTI client and server say to each other."""

# Parses on Python 2.7 and 3.5 too, as launch.py must: the launchers import this package first.

__version__ = '0.1.0'
