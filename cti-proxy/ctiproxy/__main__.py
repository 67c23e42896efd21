"""python3 -m ctiproxy TOOL [ARGUMENTS]: run ctispy, ctisave, ctistat or ctisim (TOOL: spy, save,
stat or sim).  Parses on Python 2.7 and 3.5 too: see launch.py."""

import sys

from ctiproxy.launch import run_module

if __name__ == '__main__':
    run_module(sys.argv[1:])
