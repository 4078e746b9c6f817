"""Run the streamer's command line."""

import logging
import os
import sys

from streamer.cli import main

if __name__ == "__main__":
    code = main()
    # Everything is closed and flushed once main returns; TensorFlow's own teardown at
    # interpreter exit takes over a second more, which a SIGTERM's deadline cannot spare.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
