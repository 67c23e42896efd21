"""cti-proxy: see, save and measure what a XiVO CTI client and server say to each other."""

__version__ = '0.1.0'
