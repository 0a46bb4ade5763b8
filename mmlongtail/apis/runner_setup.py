"""Turn a config plus command-line choices into a Runner config.

The tools stay thin: they parse arguments and call these functions.
"""
import datetime
import logging
import os
import os.path as osp
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log


def apply_device_defaults(cfg: Config) -> Config:
    """Make a GPU config run on a machine without CUDA.

    * ``torch.distributed`` uses gloo (configs say ``nccl``, the right choice
      on GPUs, which cannot run on a CPU-only machine);
    * with a launcher, the model is wrapped by
      :class:`mmlongtail.engine.CPUDistributedDataParallel`: mmengine's
      default DDP wrapper passes ``device_ids``, which torch refuses for a
      CPU module. The config's ``find_unused_parameters`` is carried over.
    """
    if not torch.cuda.is_available():
        env = cfg.setdefault('env_cfg', {})
        dist_cfg = env.setdefault('dist_cfg', {})
        if dist_cfg.get('backend', 'nccl') == 'nccl':
            dist_cfg['backend'] = 'gloo'
        if cfg.get('launcher', 'none') != 'none':
            wrapper = cfg.get('model_wrapper_cfg', None)
            if wrapper is None:
                cfg.model_wrapper_cfg = dict(
                    type='mmlongtail.CPUDistributedDataParallel',
                    broadcast_buffers=False,
                    find_unused_parameters=cfg.get('find_unused_parameters',
                                                   False))
            elif wrapper.get('type', 'MMDistributedDataParallel') in (
                    'MMDistributedDataParallel', 'DistributedDataParallel'):
                wrapper['type'] = 'mmlongtail.CPUDistributedDataParallel'
    return cfg


def init_cpu_distributed(cfg: Config) -> bool:
    """Join the torchrun process group on a machine without CUDA.

    mmengine's ``init_dist`` for the ``pytorch`` launcher calls
    ``torch.cuda.set_device`` first, which fails on a CPU-only machine. When
    there is no CUDA and ``cfg.launcher == 'pytorch'``, this initializes the
    group itself from torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``) with ``env_cfg.dist_cfg``; the Runner
    then finds it initialized and skips ``init_dist``. Call it before
    ``Runner.from_cfg`` (``tools/train.py`` does).

    Returns:
        bool: Whether a process group was initialized here.
    """
    if (torch.cuda.is_available() or cfg.get('launcher', 'none') != 'pytorch'
            or not dist.is_available() or dist.is_initialized()):
        return False
    kwargs = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = kwargs.pop('backend', 'gloo')
    if 'timeout' in kwargs:
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
    dist.init_process_group(
        backend=backend,
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        **kwargs)
    return True


def close_distributed() -> None:
    """Leave the process group at the end of a run that finished normally.

    Every process waits for the others (a barrier), then destroys the group.
    A process that exits with its group alive may abort at interpreter exit
    with ``terminate called without an active exception`` (SIGABRT): with
    torch 2.13 and gloo, 4 of 24 exits of a two-process script that
    all-reduces and leaves did so here, none of 20 that destroyed the group
    first. ``tools/train.py`` and ``tools/test.py`` call this after the run;
    on an error they do not (a barrier would wait for processes that may be
    gone). A no-op without a process group.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()


def enable_amp(cfg: Config) -> Config:
    """Switch the optimizer wrapper to mixed precision (fp16 on CUDA).

    Uses mmengine's ``AmpOptimWrapper`` (fp16 autocast, dynamic loss
    scaling). The long-tail losses are safe under autocast and keep their
    statistics in float32 (``tests/test_amp.py``).

    Raises:
        RuntimeError: On a machine without CUDA. CPU autocast (bf16) cannot
            run a detector: mmcv's CPU kernels (``nms``, ``RoIAlign``) accept
            only float32 and fail on the bf16 features autocast produces.
    """
    if not torch.cuda.is_available():
        raise RuntimeError(
            '--amp needs a CUDA device: on the CPU, autocast runs in bf16 '
            'and mmcv\'s CPU kernels (nms, RoIAlign) support float32 only. '
            'Run without --amp on this machine.')
    optim = cfg.optim_wrapper
    if optim.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
        print_log('AMP is already enabled in the config', logger='current')
    else:
        optim['type'] = 'AmpOptimWrapper'
        optim.setdefault('loss_scale', 'dynamic')
    return cfg


#: Set by torchrun in every worker: how many times its agent has restarted
#: the worker group (``0`` on the first start) and how many times it may.
RESTART_COUNT_ENV = 'TORCHELASTIC_RESTART_COUNT'
MAX_RESTARTS_ENV = 'TORCHELASTIC_MAX_RESTARTS'


def elastic_restarts() -> Tuple[int, int]:
    """``(restart, max_restarts)`` of this process's torchrun worker group.

    Read from torchrun's environment (:data:`RESTART_COUNT_ENV`,
    :data:`MAX_RESTARTS_ENV`); ``(0, 0)`` outside torchrun.

    Raises:
        ValueError: When either variable is set but is not an integer >= 0.
    """
    values = []
    for name in (RESTART_COUNT_ENV, MAX_RESTARTS_ENV):
        value = os.environ.get(name, '0')
        if not value.isdigit():
            raise ValueError(f'{name}={value!r}: torchrun sets it to an '
                             'integer >= 0; unset it or launch through '
                             'tools/dist_train.sh')
        values.append(int(value))
    return values[0], values[1]


def _checkpoint_hook(cfg: Config):
    """The config's checkpoint hook, built (None when it has none)."""
    import copy

    from mmengine.registry import HOOKS
    hook_cfg = cfg.get('default_hooks', {}).get('checkpoint', None)
    return HOOKS.build(copy.deepcopy(hook_cfg)) if hook_cfg else None


def resume_candidates_of(cfg: Config) -> List[str]:
    """The checkpoints an auto-resume of ``cfg`` would try, newest first.

    With :class:`mmlongtail.engine.CrashSafeCheckpointHook`, the files
    :func:`~mmlongtail.engine.checkpoint_io.resume_candidates` lists for its
    folder and file names; with another checkpoint hook, the file
    ``last_checkpoint`` names (what mmengine's auto-resume reads). Nothing
    is opened: whether a file is intact is checked by the hook when the run
    starts (rank 0), which falls back to the newest intact one.
    """
    from mmlongtail.engine import CrashSafeCheckpointHook
    from mmlongtail.engine.checkpoint_io import (read_pointer,
                                                 resume_candidates)
    hook = _checkpoint_hook(cfg)
    if isinstance(hook, CrashSafeCheckpointHook):
        return resume_candidates(cfg.work_dir,
                                 hook.checkpoint_dir(cfg.work_dir),
                                 hook.filename_tmpl)
    pointed = read_pointer(cfg.work_dir)
    return [] if pointed is None else [pointed]


def resume_rule(cfg: Config, resume: Optional[str], restart: int = 0,
                max_restarts: int = 0) -> Optional[str]:
    """What a start of ``cfg`` resumes, with ``--resume`` and under
    torchrun's restarts.

    * Without restarts (``max_restarts == 0``), what the command says: no
      ``--resume`` trains from the start, ``--resume CKPT`` resumes CKPT,
      ``--resume`` alone resumes the newest intact checkpoint in the work
      dir, or, when it holds none, trains from the start keeping the
      config's ``load_from`` (initial weights).
    * With restarts (``max_restarts > 0``), every start of the worker group,
      the first one and each restart, resumes the newest intact checkpoint
      in the work dir; while it holds none (a first start, or a group that
      failed before its first save), the start does what the command says.
      "None" means no checkpoint file and no ``last_checkpoint``: a work dir
      whose checkpoints are all damaged, or whose ``last_checkpoint`` names
      a file that is gone, is not trained over from the start; the resume
      stops with :class:`~mmlongtail.engine.checkpoint_io.CheckpointError`
      listing each file and its problem (every restart then stops the same
      way until torchrun gives up).

    The rule under restarts does not ask ``restart``: torchrun counts the
    restarts of each node's own group (a node whose workers were healthy is
    restarted with its count unchanged), so only the work dir is the same on
    every node. It needs a work dir that every node sees, as any resume
    does. ``restart`` only words the log.

    Args:
        cfg (Config): With ``work_dir`` set.
        resume (str, optional): ``--resume``: None, ``'auto'`` or a path.
        restart (int): torchrun's restart count (:func:`elastic_restarts`).
        max_restarts (int): torchrun's ``--max-restarts``.

    Returns:
        str or None: ``'auto'``, a checkpoint path, or None (no resume).
    """
    if resume is None and max_restarts == 0:
        return None
    candidates = resume_candidates_of(cfg)
    if max_restarts > 0 and candidates:
        if restart > 0:
            msg = (f'Restart {restart} of {max_restarts} of the worker group '
                   '(torchrun --max-restarts): resuming from the newest '
                   f'intact checkpoint in {cfg.work_dir}')
        else:
            msg = (f'Restarts are on (torchrun --max-restarts={max_restarts}'
                   '), so this start resumes from the newest intact '
                   f'checkpoint in {cfg.work_dir} ({candidates[0]} first); '
                   'a new run needs a work dir of its own')
        if resume not in (None, 'auto'):
            msg += f', not from --resume {resume}'
        print_log(msg, logger='current', level=logging.WARNING)
        return 'auto'
    if max_restarts > 0 and restart > 0:
        print_log(
            f'Restart {restart} of {max_restarts} of the worker group: no '
            f'checkpoint in {cfg.work_dir} yet; starting as the first start '
            'did', logger='current', level=logging.WARNING)
    if resume == 'auto' and not candidates:
        print_log(
            f'Resume: no checkpoint in {cfg.work_dir}; training from the '
            'start' + (f' (load_from={cfg.load_from})'
                       if cfg.get('load_from') else ''), logger='current')
        return None
    return resume


def seed_from_checkpoint(cfg: Config) -> Config:
    """Resume with the seed of the checkpoint when the config sets none.

    mmengine builds the sampler and the dataloader's worker seeding with the
    run's seed *before* it reads the checkpoint; a config without
    ``randomness.seed`` gets a new random seed each launch, so the data
    order after a resume would differ from the interrupted run. The
    checkpoint to resume is found as the checkpoint hook will find it
    (:meth:`mmlongtail.engine.CrashSafeCheckpointHook.checkpoint_to_resume`).
    A damaged checkpoint is left for the hook to report when the run starts.
    """
    from mmlongtail.engine import CheckpointError, CrashSafeCheckpointHook
    randomness = dict(cfg.get('randomness', None) or {})
    if not cfg.get('resume', False) or randomness.get('seed') is not None:
        return cfg
    hook = _checkpoint_hook(cfg)
    if not isinstance(hook, CrashSafeCheckpointHook):
        return cfg
    try:
        path, _, meta = hook.checkpoint_to_resume(cfg.work_dir,
                                                  cfg.get('load_from', None))
    except CheckpointError:
        return cfg
    if meta.get('seed') is not None:
        randomness['seed'] = meta['seed']
        cfg.randomness = randomness
        print_log(f'Resume: seed {meta["seed"]} taken from {path} (the '
                  'config sets no randomness.seed)', logger='current')
    return cfg


def build_runner_config(config: str,
                        work_dir: Optional[str] = None,
                        cfg_options: Optional[dict] = None,
                        resume: Optional[str] = None,
                        amp: bool = False,
                        launcher: str = 'none',
                        auto_scale_lr: bool = False,
                        restart: int = 0,
                        max_restarts: int = 0) -> Config:
    """Load ``config`` and apply the usual command-line overrides.

    Args:
        config (str): Config file path.
        work_dir (str, optional): Defaults to ``work_dirs/<config name>``.
        cfg_options (dict, optional): ``--cfg-options`` key/value overrides.
        resume (str, optional): ``'auto'`` to resume from the latest
            checkpoint in ``work_dir``, or a checkpoint path; applied with
            ``restart`` by :func:`resume_rule`.
        amp (bool): Mixed precision, see :func:`enable_amp`.
        launcher (str): ``none``, ``pytorch``, ``slurm`` or ``mpi``.
        auto_scale_lr (bool): Scale the LR by the real batch size.
        restart (int): How many times torchrun restarted this worker group
            (:func:`elastic_restarts`); 0 on a first start.
        max_restarts (int): torchrun's ``--max-restarts``.

    Returns:
        Config: Ready for ``Runner.from_cfg``.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    if amp:
        enable_amp(cfg)
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.get(
                'auto_scale_lr', {}):
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr.'
                               'base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    resume = resume_rule(cfg, resume, restart, max_restarts)
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        if not osp.isfile(resume):
            raise FileNotFoundError(f'--resume checkpoint not found: {resume}')
        cfg.resume = True
        cfg.load_from = resume
    if resume is not None:
        seed_from_checkpoint(cfg)
    return apply_device_defaults(cfg)


def build_test_config(config: str,
                      checkpoint: str,
                      work_dir: Optional[str] = None,
                      cfg_options: Optional[dict] = None,
                      launcher: str = 'none') -> Config:
    """The config ``tools/test.py`` runs: :func:`build_runner_config` with
    ``load_from=checkpoint``.

    The checkpoint is checked first, with the check a resume applies
    (:func:`~mmlongtail.engine.check_checkpoint`, without requiring the
    runner state a resume needs), so a missing, truncated or damaged file is
    refused naming the file and what is wrong before anything is built. A URL
    (``scheme://...``) is left to mmengine's checkpoint loader.

    Args:
        config (str): Config file path.
        checkpoint (str): The checkpoint to evaluate.
        work_dir (str, optional): See :func:`build_runner_config`.
        cfg_options (dict, optional): ``--cfg-options`` key/value overrides.
        launcher (str): ``none``, ``pytorch``, ``slurm`` or ``mpi``.

    Returns:
        Config: Ready for ``Runner.from_cfg(cfg).test()``.

    Raises:
        CheckpointError: When ``checkpoint`` is not a usable checkpoint.
    """
    from mmlongtail.engine import check_checkpoint
    if '://' not in checkpoint:
        check_checkpoint(checkpoint, runner=False)
    cfg = build_runner_config(
        config, work_dir=work_dir, cfg_options=cfg_options, launcher=launcher)
    cfg.load_from = checkpoint
    return cfg
