"""Write a file so that a crash leaves either the old file or the new one.

:func:`atomic_write` writes to a temporary file in the target's folder,
flushes and fsyncs it, renames it over the target (``os.replace``, atomic on
POSIX within one file system) and fsyncs the folder so that the rename
itself is on disk. A process killed at any moment leaves the target as it
was before or complete, never truncated; at worst a temporary file
(:func:`is_temporary`) stays behind, which :func:`remove_stale_temporaries`
cleans up.

A failing step (a full disk, ``ENOSPC``; an I/O error, ``EIO``) raises
:class:`AtomicWriteError`, an ``OSError`` with the step's ``errno`` that
names the target and the step; the target is then unchanged and the
temporary file removed.

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


class AtomicWriteError(OSError):
    """A step of :func:`atomic_write` failed (a full disk, an I/O error).

    An ``OSError`` with the failing call's ``errno`` (``errno.ENOSPC``,
    ``errno.EIO``, ...), so callers that test ``e.errno`` keep working; its
    message names the target, the step and what was left.

    Attributes:
        path (str): The file being written.
        step (str): One of :data:`WRITE_STEPS`.
        temporary (str): The temporary file of the write.
    """

    def __init__(self, path: str, step: str, temporary: str,
                 cause: OSError, left: str) -> None:
        self.path = path
        self.step = step
        self.temporary = temporary
        self._init_args = (path, step, temporary, cause, left)
        reason = cause.strerror or str(cause)
        super().__init__(
            cause.errno,
            f'writing {path} failed at step {step!r} ({reason}); {left}',
            temporary)

    def __reduce__(self):
        # rebuilt from its own arguments where it crosses processes
        return type(self), self._init_args


#: The steps of :func:`atomic_write`, in order; :class:`AtomicWriteError`
#: names the one that failed.
WRITE_STEPS = ('create', 'write', 'fsync', 'close', 'replace', 'fsync-dir')


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (it may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write(path: str, data: Union[bytes, str]) -> None:
    """Replace ``path`` by ``data`` atomically and durably.

    The steps (:data:`WRITE_STEPS`): create the temporary file, write every
    byte, fsync it, close it, rename it over ``path``, fsync the folder.

    Args:
        path (str): The file to (over)write. Its folder is created if
            missing.
        data (bytes | str): The whole content; ``str`` is written as UTF-8.

    Raises:
        AtomicWriteError: When a step fails (an ``OSError`` with that
            step's ``errno``). Up to the rename, ``path`` is unchanged and
            the temporary file is removed. When only the last step fails,
            ``path`` already holds the complete new content, whose rename
            may not survive a power loss.
    """
    if isinstance(data, str):
        data = data.encode('utf-8')
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(path)
    kill = os.environ.get(KILL_DURING_WRITE_ENV) == osp.basename(path)
    step, fd = 'create', -1
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        step = 'write'
        if kill:
            _write_all(fd, data[:len(data) // 2])  # the test-only fault point
            os.fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        _write_all(fd, data)
        step = 'fsync'
        os.fsync(fd)
        step = 'close'
        closing, fd = fd, -1  # a failed close releases the fd as well
        os.close(closing)
        step = 'replace'
        os.replace(tmp, path)
    except BaseException as e:
        left = _discard(fd, tmp, path)
        if isinstance(e, OSError):
            raise AtomicWriteError(path, step, tmp, e, left) from e
        raise
    try:
        fsync_dir(folder)
    except OSError as e:
        raise AtomicWriteError(
            path, 'fsync-dir', tmp, e,
            f'{path} holds the complete new content, but its rename may not '
            'survive a power loss') from e


def _discard(fd: int, tmp: str, path: str) -> str:
    """Close and remove a failed write's temporary file; say what is left
    (never raises: the write's own error is the one to report)."""
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass  # the fd is released even when close reports an error
    try:
        if osp.lexists(tmp):
            os.remove(tmp)
    except OSError as e:
        return (f'{path} is unchanged, but its temporary file {tmp} could '
                f'not be removed ({e.strerror or e}): remove it by hand')
    return f'{path} is unchanged and no temporary file is left'


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
