"""`python -m ecolink.front.worker CONFIG-JSON`: one more front process."""

import sys

from ecolink.front.server import worker_main

if __name__ == "__main__":
    raise SystemExit(worker_main(sys.argv[1:]))
