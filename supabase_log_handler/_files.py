"""Files and directories the package creates: private to the user, whatever the umask.

The spool and the local store hold log rows, which can be sensitive even after
masking; nobody but the user who ran the job should read them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as mode 0700; an existing directory is left as is."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def create_private_file(path: Path) -> None:
    """Create an empty file of mode 0600 if it does not exist yet."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
