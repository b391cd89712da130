"""`python -m engine.cli` is the `ferry` command."""

import signal
import sys

try:
    from engine.cli.app import main
except KeyboardInterrupt:  # Ctrl-C while ferry starts: one line, as later (a second one ignored)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stderr.write("error: interrupted (Ctrl-C): nothing was changed\n")
    sys.exit(130)

main()
