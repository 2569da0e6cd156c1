"""The byte-count progress bar long transfers show (deploy, flash): drawn only
when stderr is a terminal, so scripts and --json output stay clean."""

from __future__ import annotations

import sys


def byte_progress(description: str):
    """A factory total -> advance, or None when stderr is not a terminal.
    advance(n) adds n bytes; advance(None) ends the bar."""
    if not sys.stderr.isatty():
        return None
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    def make(total):
        p = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                     TransferSpeedColumn(), transient=True)
        p.start()
        task = p.add_task(description, total=total)

        def advance(n):
            if n is None:
                p.stop()
            else:
                p.update(task, advance=n)
        return advance
    return make
