"""``python -m gateway._reachable PATH``: can another user enter PATH and read it?

When the gateway runs as root, sandboxed actions run as an unprivileged uid
that must be able to enter the installation and the deployment (its virtual
environment, the gateway root, a SQLite database of a ``sql`` action). This
checks what that uid needs: every folder from ``/`` down to PATH searchable
by others, and PATH itself readable. Exit 0 when it is, 1 with the first
folder that is not. Used by ``just test`` and ``gateway doctor``. Imports
nothing of the gateway.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

__all__ = ["first_unreachable"]


def first_unreachable(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other users cannot enter, or None."""
    target = path.resolve()
    for folder in (*reversed(target.parents), target):
        mode = folder.stat().st_mode
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return folder
        if folder == target and not mode & stat.S_IROTH:
            return folder
    return None


def main(argv: list[str]) -> int:
    """Check each path in ``argv`` (default ``.``); print the first blocker."""
    for arg in argv or ["."]:
        blocker = first_unreachable(Path(arg))
        if blocker is not None:
            sys.stderr.write(f"{arg}: {blocker} cannot be entered by other users\n")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
