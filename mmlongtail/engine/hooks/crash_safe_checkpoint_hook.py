"""Checkpoints that survive a kill at any moment, and an exact resume.

mmengine's ``CheckpointHook`` removes the oldest checkpoint *before* it writes
the new one, writes in place, and then points ``last_checkpoint`` at a file
that may be truncated; with ``max_keep_ckpts=1`` a kill during the write
leaves nothing to resume from. It also stores no random generator state, so a
resumed run draws differently (proposal sampling, augmentation in the main
process) from the run it continues.

:class:`CrashSafeCheckpointHook` takes the same arguments and writes the
same file names, in an order where every moment leaves a usable checkpoint:

1. the checkpoint goes to a temporary file in the same folder, is flushed,
   fsynced and renamed over its final name (the folder is fsynced too);
2. ``last_checkpoint`` is replaced the same way;
3. only then are checkpoints beyond ``max_keep_ckpts`` removed. The list of
   kept steps stored in the checkpoint still names them, so a resume after a
   kill between 2 and 3 finishes the removal.

Before 1, every rank checks its model's weights and buffers (the losses'
statistics) and the optimizer state for NaN or infinity
(:mod:`~mmlongtail.engine.nonfinite`); if any rank finds one, nothing is
written and every rank raises :class:`~mmlongtail.engine.nonfinite.
NonFiniteError` naming the tensor, so a good checkpoint is never replaced by
a poisoned one. A failing write (a full disk, an I/O error) at any of 1-3
raises an ``OSError`` naming the file, the step and the errno
(:class:`~mmlongtail.utils.atomic_io.AtomicWriteError` for 1 and 2), with
the previous checkpoint and ``last_checkpoint`` intact and no temporary file
left; in a distributed run rank 0 tells the other ranks, which raise too
instead of waiting for it.

Every checkpoint it writes holds ``rng_states``: one
:func:`~mmlongtail.utils.rng_state.get_rng_state` per rank, gathered from
all ranks (``all_gather_object``) just before rank 0 writes. On resume each
rank restores its own entry immediately before the first batch after the
resume is drawn: in epoch loops at ``before_train_epoch``; in iteration
loops after mmengine has replayed the batches already trained (the replay
runs the data pipeline, so restoring earlier would be consumed by it).
Validation runs between a save and the next batch in an uninterrupted run
but not in a resumed one, so the hook gives validation its own copy of the
generators (saved at ``before_val``, put back at ``after_val``).

Resume (``resume=True``): rank 0 checks the checkpoint with
:func:`~mmlongtail.engine.checkpoint_io.check_checkpoint` before mmengine
loads it. A damaged file given as a path is an error naming the file and
what is wrong; in auto mode the newest intact checkpoint is used instead and
the log says which and why.
"""
import os.path as osp
from collections import deque
from typing import Any, Callable, Iterator, List, Optional, Tuple

from mmengine.dist import (all_gather_object, broadcast_object_list,
                           get_dist_info, is_main_process)
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook

from mmlongtail.engine.checkpoint_io import (ATOMIC_BACKEND, POINTER_FILE,
                                             CheckpointError,
                                             check_checkpoint, checkpoint_dir,
                                             choose_resume_checkpoint,
                                             read_pointer)
from mmlongtail.engine.nonfinite import (NonFiniteError, agree_across_ranks,
                                         any_nonfinite, first_nonfinite,
                                         state_tensors)
from mmlongtail.registry import HOOKS
from mmlongtail.utils.atomic_io import atomic_write, remove_stale_temporaries
from mmlongtail.utils.model import unwrap_model
from mmlongtail.utils.rng_state import get_rng_state, set_rng_state

#: The checkpoint key that holds the per-rank generator states (a list
#: indexed by rank).
RNG_KEY = 'rng_states'


class _RestoreAfterReplay:
    """Wraps an iteration loop's batch iterator: lets ``replay`` batches
    through, then calls ``restore`` once, right before the next batch."""

    def __init__(self, iterator: Iterator, replay: int,
                 restore: Callable[[], None]) -> None:
        self._iterator = iterator
        self._replay = replay
        self._restore: Optional[Callable[[], None]] = restore

    def __iter__(self) -> '_RestoreAfterReplay':
        return self

    def __next__(self) -> Any:
        if self._replay > 0:
            self._replay -= 1
        elif self._restore is not None:
            restore, self._restore = self._restore, None
            restore()
        return next(self._iterator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)


@HOOKS.register_module()
class CrashSafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook``, made crash-safe (see the module doc).

    Takes every argument of ``mmengine.hooks.CheckpointHook`` with the same
    meaning and defaults, and writes the same files (``epoch_{}.pth`` /
    ``iter_{}.pth``, ``best_*``, ``last_checkpoint``). Writes are atomic when
    checkpoints go to the local disk, i.e. unless ``backend_args`` or
    ``file_client_args`` select another storage (object stores replace a
    whole object at once anyway).

    Example:
        >>> default_hooks = dict(checkpoint=dict(
        ...     type='mmlongtail.CrashSafeCheckpointHook', interval=1,
        ...     max_keep_ckpts=1))
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.atomic = (self.backend_args is None
                       and self.file_client_args is None
                       and (self.out_dir is None or isinstance(
                           get_file_backend(str(self.out_dir)),
                           LocalBackend)))
        if self.atomic:
            # mmengine's hook passes backend_args to Runner.save_checkpoint
            # for regular and best checkpoints alike
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        self._pending_rng: Optional[List[dict]] = None
        self._val_rng: Optional[dict] = None
        self._resumed_rng: Optional[dict] = None
        self._resuming = False

    # ------------------------------------------------------------ resume --
    def checkpoint_dir(self, work_dir: str) -> str:
        """Where this hook writes checkpoints for ``work_dir`` (mmengine's
        rule; ``self.out_dir`` is resolved only at ``before_train``)."""
        return checkpoint_dir(
            work_dir, None if self.out_dir is None else str(self.out_dir))

    def checkpoint_to_resume(
            self, work_dir: str,
            load_from: Optional[str] = None) -> Tuple[Optional[str],
                                                      List[str], dict]:
        """The checkpoint a resume in ``work_dir`` starts from.

        Args:
            work_dir (str): The run's work dir.
            load_from (str, optional): The checkpoint given to resume from;
                None for the newest (auto mode).

        Returns:
            tuple: ``(path, notes, meta)`` as
            :func:`~mmlongtail.engine.checkpoint_io.choose_resume_checkpoint`
            gives them; ``path`` is None when there is nothing to resume.

        Raises:
            CheckpointError: When ``load_from`` is damaged, or in auto mode
                when no checkpoint is usable.
        """
        if load_from is None:
            return choose_resume_checkpoint(work_dir,
                                            self.checkpoint_dir(work_dir),
                                            self.filename_tmpl)
        if '://' in load_from:  # remote: mmengine's loader reports problems
            return load_from, [], {}
        return load_from, [], check_checkpoint(load_from)

    def before_run(self, runner) -> None:
        """Check the checkpoint a resume will load (rank 0), fall back to the
        newest intact one in auto mode, and tell every rank."""
        # mmengine's Runner.load_or_resume reads these two attributes after
        # before_run; setting _load_from makes it resume from that file.
        if not getattr(runner, '_resume', False):
            return
        self._resuming = True
        result: List[Any] = [None, [], None, None]
        if is_main_process():
            try:
                path, notes, meta = self.checkpoint_to_resume(
                    runner.work_dir, runner._load_from)
                result = [path, notes, None, meta.get('seed')]
            except CheckpointError as e:
                result[2] = (e.path, e.reason)
        broadcast_object_list(result, src=0)
        path, notes, error, seed = result
        if error is not None:
            raise CheckpointError(*error)
        if path is None:
            runner.logger.info(
                f'Resume: no checkpoint in '
                f'{self.checkpoint_dir(runner.work_dir)}; training from the '
                'start.')
            return
        if notes:
            runner.logger.warning(
                f'Resume: using {path}, the newest intact checkpoint, '
                'because ' + '; '.join(notes))
        else:
            runner.logger.info(f'Resume: {path} checked, complete.')
        runner._load_from = path
        if seed is not None and seed != runner.seed:
            runner.logger.warning(
                f'Resume: {path} was trained with seed {seed}, but this run '
                f'built its sampler and dataloader with seed {runner.seed} '
                '(the config sets no randomness.seed), so the data order '
                'after the resume differs from the interrupted run. '
                'tools/train.py takes the seed from the checkpoint; a Runner '
                'built otherwise should set randomness.seed.')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep this rank's generator states from a checkpoint being
        resumed (not from ``load_from`` without resume)."""
        if not self._resuming:
            return
        rank, world_size = get_dist_info()
        states = checkpoint.get(RNG_KEY)
        if states is None:
            runner.logger.warning(
                'Resume: the checkpoint holds no random generator state '
                '(not written by mmlongtail.CrashSafeCheckpointHook); '
                'randomness after the resume starts from the seed, so the '
                'resumed run will not repeat the interrupted one exactly.')
        elif len(states) != world_size:
            runner.logger.warning(
                f'Resume: the checkpoint holds the generator states of '
                f'{len(states)} processes but {world_size} are running; '
                'states not restored, so the resumed run will not repeat the '
                'interrupted one exactly.')
        else:
            self._resumed_rng = states[rank]

    def _restore_rng(self, runner) -> None:
        state, self._resumed_rng = self._resumed_rng, None
        if state is None:
            return
        for problem in set_rng_state(state):
            runner.logger.warning(f'Resume: {problem}')
        runner.logger.info('Resume: random generator states restored.')

    def before_train(self, runner) -> None:
        super().before_train(runner)  # resolves out_dir, applies keep list
        if self.atomic and is_main_process():
            folders = {str(self.out_dir), runner.work_dir}
            for folder in sorted(folders):
                for path in remove_stale_temporaries(folder):
                    runner.logger.info(
                        f'Removed {path}, left by a write that was killed.')

    def before_train_epoch(self, runner) -> None:
        if self._resumed_rng is None:
            return
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator') and runner.iter > 0:
            # IterBasedTrainLoop replays runner.iter batches after this hook
            loop.dataloader_iterator = _RestoreAfterReplay(
                loop.dataloader_iterator, runner.iter,
                lambda: self._restore_rng(runner))
        else:
            self._restore_rng(runner)

    # --------------------------------------------------------- validation --
    def before_val(self, runner) -> None:
        """Validation draws from the global generators; give it a copy."""
        self._val_rng = get_rng_state()

    def after_val(self, runner) -> None:
        state, self._val_rng = self._val_rng, None
        if state is not None:
            set_rng_state(state)

    # ------------------------------------------------------------- saving --
    def _gather_rng(self) -> List[dict]:
        """Every rank's generator states, as they stand outside validation
        (collective: all ranks call it)."""
        local = self._val_rng if self._val_rng is not None \
            else get_rng_state()
        return all_gather_object(local)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Add the gathered generator states to the checkpoint (rank 0)."""
        states = self._pending_rng
        if states is None and runner.world_size == 1:
            states = [self._val_rng or get_rng_state()]
        if states is not None:
            checkpoint[RNG_KEY] = states

    def _refuse_nonfinite(self, runner, filename: str) -> None:
        """Raise on every rank, before anything is written, when any
        rank's weights, buffers or optimizer state hold a NaN or an infinity
        (collective: all ranks call it)."""
        model = unwrap_model(runner.model)
        optim = getattr(runner, 'optim_wrapper', None)

        def tensors():
            yield from state_tensors(model.state_dict())
            if self.save_optimizer and optim is not None and hasattr(
                    optim, 'state_dict'):
                yield from state_tensors(optim.state_dict(), 'optimizer')

        findings = agree_across_ranks(
            any_nonfinite(t for _, t in tensors()),
            lambda: first_nonfinite(tensors()))
        if findings:
            previous = self.last_ckpt or 'no checkpoint yet'
            raise NonFiniteError(
                f'Refusing to write checkpoint {filename} at epoch '
                f'{runner.epoch}, iteration {runner.iter}: '
                f'{"; ".join(findings)}. Nothing was written: the last '
                f'checkpoint ({previous}) and last_checkpoint are unchanged; '
                'resume from it. mmlongtail.NonFiniteGuardHook (on in '
                'configs/_base_/default_runtime.py) names the step where a '
                'non-finite value first appears.', findings)

    def _share_save_error(self, error: Optional[BaseException]) -> None:
        """Rank 0 writes; in a distributed run it tells the other ranks
        whether that failed, so that they raise too rather than wait for it
        at the next collective (collective: all ranks call it)."""
        if get_dist_info()[1] == 1:
            if error is not None:
                raise error
            return
        message = [None if error is None else
                   (getattr(error, 'errno', None), str(error))]
        broadcast_object_list(message, src=0)
        if error is not None:
            raise error
        if message[0] is not None:
            raise OSError(message[0][0], 'saving a checkpoint failed on rank '
                          f'0: {message[0][1]}')

    def _save_best_checkpoint(self, runner, metrics) -> None:
        if not self.save_best:
            return
        self._refuse_nonfinite(runner, 'the best checkpoint')
        self._pending_rng = self._gather_rng()
        error = None
        try:
            super()._save_best_checkpoint(runner, metrics)
        except OSError as e:
            error = e
        finally:
            self._pending_rng = None
        self._share_save_error(error)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """Save ``step``, point ``last_checkpoint`` at it, then remove the
        checkpoints beyond ``max_keep_ckpts`` (in that order)."""
        filename = self.filename_tmpl.format(step)
        self._refuse_nonfinite(runner, filename)
        previous = self.last_ckpt
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        doomed: List[int] = []
        kept: List[int] = []
        if self.max_keep_ckpts > 0:
            kept = list(self.keep_ckpt_ids)
            if not kept or kept[-1] != step:
                kept.append(step)
            doomed = kept[:-self.max_keep_ckpts]
            # stored with the doomed steps: a resume after a kill before
            # their removal removes them (mmengine's before_train)
            runner.message_hub.update_info('keep_ckpt_ids', kept)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        self._pending_rng = self._gather_rng()
        error: Optional[OSError] = None
        try:
            runner.save_checkpoint(
                self.out_dir,
                filename,
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
        except OSError as e:  # rank 0 only: the others do not write
            error = e
            self.last_ckpt = previous
            runner.message_hub.update_info('last_ckpt', previous)
            if self.max_keep_ckpts > 0:
                runner.message_hub.update_info('keep_ckpt_ids',
                                               list(self.keep_ckpt_ids))
        finally:
            self._pending_rng = None
        if error is None:
            if self.max_keep_ckpts > 0:
                kept = kept[len(doomed):]
                self.keep_ckpt_ids = deque(kept, self.max_keep_ckpts)
                runner.message_hub.update_info('keep_ckpt_ids', kept)
            if is_main_process():
                try:
                    self._point_and_remove(runner, doomed)
                except OSError as e:
                    error = e
        if error is not None and is_main_process():
            runner.logger.error(
                f'Saving {filename} failed: {error}. last_checkpoint names '
                f'{read_pointer(runner.work_dir) or "nothing"}; resume from '
                'it once the disk is fixed.')
        self._share_save_error(error)

    def _point_and_remove(self, runner, doomed: List[int]) -> None:
        """Point ``last_checkpoint`` at ``self.last_ckpt``, then remove the
        ``doomed`` steps (rank 0)."""
        pointer = osp.join(runner.work_dir, POINTER_FILE)
        if self.atomic:
            atomic_write(pointer, self.last_ckpt)
        else:
            with open(pointer, 'w') as f:
                f.write(self.last_ckpt)
        for old in doomed:
            path = self.file_backend.join_path(self.out_dir,
                                               self.filename_tmpl.format(old))
            try:
                if self.file_backend.isfile(path):
                    self.file_backend.remove(path)
                elif self.file_backend.isdir(path):  # deepspeed checkpoints
                    self.file_backend.rmtree(path)
            except OSError as e:
                raise OSError(
                    e.errno,
                    f'removing {path}, beyond max_keep_ckpts='
                    f'{self.max_keep_ckpts}, failed at step \'remove-old\' '
                    f'({e.strerror or e}); {self.last_ckpt} and '
                    'last_checkpoint naming it are complete; a resume '
                    'finishes the removal', path) from e
