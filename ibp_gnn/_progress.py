"""One progress bar for the package: tqdm, redrawn at most every 30 s when
stderr is not a terminal (SLURM/CI logs), so a log holds a line per half
minute instead of one per batch."""
from __future__ import annotations

import sys

NON_TTY_INTERVAL_S = 30.0


def progress_bar(**kwargs):
    from tqdm.auto import tqdm

    if not _is_tty(sys.stderr):
        kwargs.setdefault("mininterval", NON_TTY_INTERVAL_S)
    return tqdm(**kwargs)


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False
