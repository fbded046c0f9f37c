"""The exit codes of the `palfrey` command and of its worker processes (SPEC §1), and the
one way a fatal problem is reported before exiting."""

from __future__ import annotations

import sys

EXIT_OK = 0
#: The app cannot be imported.
EXIT_APP_IMPORT = 1
#: A listener cannot be bound.
EXIT_LISTENER = 1
#: Workers crash-looped and the supervisor gave up.
EXIT_CRASH_LOOP = 1
#: A configuration problem (including TLS files and missing backends).
EXIT_CONFIG = 2
#: Lifespan startup failed.
EXIT_STARTUP = 3


def fail(message: str, code: int) -> int:
    """Report `message` on stderr as the `palfrey` command does; return `code`."""
    print(f"palfrey: {message}", file=sys.stderr)
    return code
