"""What every entry point does with an expected error: one line naming the problem, exit 2.

Expected errors are bad input: a dataset, run folder, model file or config value that
cannot be used. They are never shown as a traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

USAGE_ERROR = 2


def fail(exc: BaseException | str) -> NoReturn:
    """Print `error: <message>` on stderr and exit with status 2."""
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)
