"""The test suite.  `make test` (tests/run.py), `python3 -m unittest discover -s tests` and
`python3 -m pytest`, run from the checkout, all run it.

Every test module imports this package before ctiproxy (`from tests.harness import ...`, or
`import tests`): it puts cti-proxy/ first on sys.path, so that the tests import the checkout's
ctiproxy whichever runner imported them, and even when another copy is installed.
"""

import os
import sys

CTI_PROXY_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'cti-proxy')
if CTI_PROXY_DIR not in sys.path:
    sys.path.insert(0, CTI_PROXY_DIR)
