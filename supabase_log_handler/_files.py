"""Files and directories the package creates: private to the user, whatever the umask.

The spool and the local store hold log rows, which can be sensitive even after
masking; nobody but the user who ran the job should read them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents as mode 0700; an existing directory is left as is.

    Each missing directory is made here, one by one: ``mkdir(parents=True)`` would give
    the parents the umask's mode (0755 under the usual 022), so the package's own data
    directory, made as the parent of the spool, would be readable by everyone.
    """
    if path.is_dir():
        return
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by another process: theirs, left as is
            continue
        os.chmod(directory, 0o700)  # the umask may have cut the mode


def create_private_file(path: Path) -> None:
    """Create an empty file of mode 0600 if it does not exist yet."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
