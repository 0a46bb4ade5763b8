"""Checkpoint files: atomic saving, integrity checks, and which one to resume.

* :class:`AtomicLocalBackend` is an mmengine file backend (registered under
  :data:`ATOMIC_BACKEND`) whose ``put`` is :func:`~mmlongtail.utils.
  atomic_io.atomic_write`. :class:`~mmlongtail.engine.CrashSafeCheckpointHook`
  hands it to ``Runner.save_checkpoint`` through ``backend_args``, so the
  runner builds the checkpoint as usual and the bytes land atomically.
* :func:`check_checkpoint` says whether a file is a complete, loadable runner
  checkpoint, and if not, what is wrong with it.
* :func:`choose_resume_checkpoint` picks the checkpoint an auto-resume starts
  from: the one ``last_checkpoint`` names if it is intact, otherwise the
  newest intact one, with the reason. :func:`resume_candidates` lists the
  files it would try, without opening them.
"""
import os
import os.path as osp
import re
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.fileio import LocalBackend, register_backend

from mmlongtail.utils.atomic_io import atomic_write

#: The name ``backend_args=dict(backend=ATOMIC_BACKEND)`` selects.
ATOMIC_BACKEND = 'mmlongtail_atomic_local'

#: The file mmengine's CheckpointHook writes into the work dir, holding the
#: path of the newest checkpoint.
POINTER_FILE = 'last_checkpoint'


class AtomicLocalBackend(LocalBackend):
    """mmengine's local-disk backend with atomic, fsynced writes."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(str(filepath), obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from.

    Attributes:
        path (str): The file.
        reason (str): What is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f'checkpoint {path} is unusable: {reason}')


def check_checkpoint(path: str, runner: bool = True) -> Dict[str, Any]:
    """Check that ``path`` is a complete checkpoint and return its ``meta``.

    Checks, in order: the file exists and is not empty; it is a complete zip
    archive (torch's format; a write cut short has no central directory);
    every member passes its CRC-32 check; it unpickles with
    ``weights_only=True`` (tensors are memory-mapped, not read); and it
    holds ``meta`` (with ``epoch`` and ``iter``) and ``state_dict``.

    Args:
        path (str): The file.
        runner (bool): Require a runner checkpoint, as a resume does (the
            last check above). With False, for a checkpoint to evaluate or
            initialise from, the file only has to hold model weights (a dict
            of tensors, or one under ``state_dict``), and a file in torch's
            format before 1.6 (not a zip archive) is accepted when it loads.
            Defaults to True.

    Returns:
        dict: The checkpoint's ``meta`` (``{}`` when ``runner`` is False and
        the file has none).

    Raises:
        CheckpointError: Naming the file and what is wrong.
    """
    if not osp.isfile(path):
        raise CheckpointError(path, 'the file does not exist')
    size = osp.getsize(path)
    if size == 0:
        raise CheckpointError(path, 'the file is empty (0 bytes)')
    if zipfile.is_zipfile(path):
        ckpt = _load_zip_checkpoint(path)
    else:
        truncated = (f'not a complete checkpoint archive ({size} bytes, no '
                     'zip central directory): the file is truncated, most '
                     'likely by a write that was interrupted')
        with open(path, 'rb') as f:
            zip_start = f.read(2) == b'PK'
        if runner or zip_start:
            raise CheckpointError(path, truncated)
        try:  # torch's format before 1.6 (a pickle, not a zip archive)
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:  # torch raises many types for a bad pickle
            raise CheckpointError(
                path, f'{truncated} (loading it as an old-format torch file '
                f'fails too: {type(e).__name__}: {e})') from e
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if not runner:
        weights = ckpt.get('state_dict', ckpt) if isinstance(ckpt,
                                                             dict) else None
        if not isinstance(weights, dict) or not any(
                torch.is_tensor(v) for v in weights.values()):
            raise CheckpointError(
                path, 'holds no model weights (a dict of tensors, or one '
                'under state_dict)')
        return meta if isinstance(meta, dict) else {}
    if not isinstance(meta, dict) or 'state_dict' not in ckpt or not {
            'epoch', 'iter'} <= set(meta):
        raise CheckpointError(
            path, 'not a runner checkpoint (it needs meta.epoch, meta.iter '
            'and state_dict)')
    return meta


def _load_zip_checkpoint(path: str) -> Any:
    """Load a zip-format checkpoint after checking every member's CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CheckpointError(path, f'damaged zip archive ({e})') from e
    if bad is not None:
        raise CheckpointError(
            path, f'record {bad!r} fails its CRC-32 check: the file was '
            'changed or damaged after it was written')
    try:
        return torch.load(path, map_location='cpu', weights_only=True,
                          mmap=True)
    except Exception as e:  # torch raises many types for a bad pickle
        raise CheckpointError(
            path, 'cannot be loaded with weights_only=True '
            f'({type(e).__name__}: {e})') from e


def checkpoint_steps(folder: str, filename_tmpl: str) -> List[Tuple[int, str]]:
    """The checkpoints named by ``filename_tmpl`` in ``folder``.

    Args:
        folder (str): Where the checkpoints are.
        filename_tmpl (str): With one ``{}`` for the epoch or iteration, as
            mmengine's ``CheckpointHook`` takes it (``'epoch_{}.pth'``).

    Returns:
        list[tuple[int, str]]: ``(step, path)``, newest (largest step) first.
    """
    if filename_tmpl.count('{}') != 1:
        raise ValueError('filename_tmpl must contain exactly one "{}", got '
                         f'{filename_tmpl!r}')
    pattern = re.compile('^' + re.escape(filename_tmpl).replace(
        re.escape('{}'), r'(\d+)') + '$')
    found = []
    if osp.isdir(folder):
        for name in os.listdir(folder):
            m = pattern.match(name)
            if m and osp.isfile(osp.join(folder, name)):
                found.append((int(m.group(1)), osp.join(folder, name)))
    return sorted(found, reverse=True)


def checkpoint_dir(work_dir: str, out_dir: Optional[str] = None) -> str:
    """Where mmengine's ``CheckpointHook`` puts checkpoints: ``work_dir``, or
    ``out_dir/<last folder of work_dir>`` when ``out_dir`` is another
    folder."""
    if out_dir is None or out_dir == work_dir:
        return work_dir
    return osp.join(out_dir, osp.basename(work_dir.rstrip(osp.sep)))


def read_pointer(work_dir: str) -> Optional[str]:
    """The checkpoint path ``<work_dir>/last_checkpoint`` names, or None."""
    pointer = osp.join(work_dir, POINTER_FILE)
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        return f.read().strip() or None


def resume_candidates(work_dir: str, ckpt_dir: str,
                      filename_tmpl: str) -> List[str]:
    """The files an auto-resume in ``work_dir`` would try, in order.

    Nothing is opened or checked (the list is cheap to ask for; see
    :func:`choose_resume_checkpoint` for the pick): first the file
    ``<work_dir>/last_checkpoint`` names, then the checkpoints in
    ``ckpt_dir`` named by ``filename_tmpl``, newest first.

    Args:
        work_dir (str): The run's work dir (where ``last_checkpoint`` is).
        ckpt_dir (str): Where the checkpoints are (:func:`checkpoint_dir`).
        filename_tmpl (str): See :func:`checkpoint_steps`.

    Returns:
        list[str]: Empty when there is nothing to resume (a fresh run).
    """
    candidates = [p for _, p in checkpoint_steps(ckpt_dir, filename_tmpl)]
    pointed = read_pointer(work_dir)
    if pointed is None:
        return candidates
    return [pointed] + [
        p for p in candidates if osp.abspath(p) != osp.abspath(pointed)
    ]


def choose_resume_checkpoint(
        work_dir: str, ckpt_dir: str, filename_tmpl: str
) -> Tuple[Optional[str], List[str], Dict[str, Any]]:
    """The checkpoint an auto-resume should start from.

    The one ``<work_dir>/last_checkpoint`` names, if :func:`check_checkpoint`
    accepts it. Otherwise the newest checkpoint in ``ckpt_dir`` (by the step
    in its ``filename_tmpl`` name) that it accepts.

    Returns:
        tuple: ``(path, notes, meta)``. ``path`` is None when there is
        nothing to resume from (no pointer and no checkpoint: a fresh run).
        ``notes`` says why another file than the pointer's was chosen (empty
        when the pointer's file was used or there is nothing). ``meta`` is
        the chosen checkpoint's (``{}`` without one).

    Raises:
        CheckpointError: When checkpoints exist but none is usable; its
            message lists every file and what is wrong with it.
    """
    candidates = resume_candidates(work_dir, ckpt_dir, filename_tmpl)
    pointed = read_pointer(work_dir)
    notes, problems = [], []
    if pointed is None and candidates:
        notes.append(f'{osp.join(work_dir, POINTER_FILE)} is missing')
    for path in candidates:
        try:
            meta = check_checkpoint(path)
        except CheckpointError as e:
            problems.append(str(e))
            notes.append(str(e))
            continue
        return path, notes if path != pointed else [], meta
    if problems:
        raise CheckpointError(
            pointed or ckpt_dir, 'no usable checkpoint to resume from:\n  ' +
            '\n  '.join(problems))
    return None, [], {}
