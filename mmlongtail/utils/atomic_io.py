"""Write a file so that a crash leaves either the old file or the new one.

:func:`atomic_write` writes to a temporary file in the target's folder,
flushes and fsyncs it, renames it over the target (``os.replace``, atomic on
POSIX within one file system) and fsyncs the folder so that the rename
itself is on disk. A process killed at any moment leaves the target as it
was before or complete, never truncated; at worst a temporary file
(:func:`is_temporary`) stays behind, which :func:`remove_stale_temporaries`
cleans up.

Fault injection (tests only): when the environment variable named by
:data:`KILL_DURING_WRITE_ENV` holds a file name, the process writing a file
of that name sends itself SIGKILL after half of the bytes are on disk. The
test suite uses it to crash a training run in the middle of a checkpoint
write; nothing sets it otherwise.
"""
import os
import os.path as osp
import re
import signal
from typing import List, Union

#: Tests set this to a file name (e.g. ``epoch_2.pth``) to be killed while
#: writing it (see the module doc).
KILL_DURING_WRITE_ENV = 'MMLONGTAIL_TEST_KILL_DURING_WRITE'

_TMP_RE = re.compile(r'^\.(?P<name>.+)\.tmp-\d+$')


def temporary_name(path: str) -> str:
    """The temporary file :func:`atomic_write` uses for ``path``: hidden, in
    the same folder, unique to this process."""
    folder, name = osp.split(osp.abspath(path))
    return osp.join(folder, f'.{name}.tmp-{os.getpid()}')


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write`'s temporaries."""
    return _TMP_RE.match(osp.basename(name)) is not None


def fsync_dir(folder: str) -> None:
    """Flush a folder's entries (a rename, a removal) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: Union[bytes, str]) -> None:
    """Replace ``path`` by ``data`` atomically and durably.

    Args:
        path (str): The file to (over)write. Its folder is created if
            missing.
        data (bytes | str): The whole content; ``str`` is written as UTF-8.

    Raises:
        OSError: From the file system; the target is then unchanged and the
            temporary file removed.
    """
    if isinstance(data, str):
        data = data.encode('utf-8')
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, 'wb') as f:
            if os.environ.get(KILL_DURING_WRITE_ENV) == osp.basename(path):
                f.write(data[:len(data) // 2])  # the test-only fault point
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Remove the temporaries that killed writers left in ``folder``.

    Only call this while no other process writes into ``folder``.

    Returns:
        list[str]: The paths removed.
    """
    removed = []
    if not osp.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        path = osp.join(folder, name)
        if is_temporary(name) and osp.isfile(path):
            os.remove(path)
            removed.append(path)
    if removed:
        fsync_dir(folder)
    return removed
