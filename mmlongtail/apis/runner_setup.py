"""Turn a config plus command-line choices into a Runner config.

The tools stay thin: they parse arguments and call these functions.
"""
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log


def apply_device_defaults(cfg: Config) -> Config:
    """Use gloo for ``torch.distributed`` where there is no CUDA device.

    Configs say ``nccl`` (the right choice on GPUs); nccl cannot run on a
    CPU-only machine, so there the backend becomes ``gloo``.
    """
    if not torch.cuda.is_available():
        env = cfg.setdefault('env_cfg', {})
        dist_cfg = env.setdefault('dist_cfg', {})
        if dist_cfg.get('backend', 'nccl') == 'nccl':
            dist_cfg['backend'] = 'gloo'
    return cfg


def enable_amp(cfg: Config) -> Config:
    """Switch the optimizer wrapper to mixed precision (fp16 on CUDA).

    Raises:
        RuntimeError: On a machine without CUDA, where mmengine's
            ``AmpOptimWrapper`` cannot run.
    """
    if not torch.cuda.is_available():
        raise RuntimeError(
            '--amp needs a CUDA device: mmengine\'s AmpOptimWrapper uses '
            'torch.cuda.amp. Run without --amp on this machine.')
    optim = cfg.optim_wrapper
    if optim.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
        print_log('AMP is already enabled in the config', logger='current')
    else:
        optim['type'] = 'AmpOptimWrapper'
        optim.setdefault('loss_scale', 'dynamic')
    return cfg


def build_runner_config(config: str,
                        work_dir: Optional[str] = None,
                        cfg_options: Optional[dict] = None,
                        resume: Optional[str] = None,
                        amp: bool = False,
                        launcher: str = 'none',
                        auto_scale_lr: bool = False) -> Config:
    """Load ``config`` and apply the usual command-line overrides.

    Args:
        config (str): Config file path.
        work_dir (str, optional): Defaults to ``work_dirs/<config name>``.
        cfg_options (dict, optional): ``--cfg-options`` key/value overrides.
        resume (str, optional): ``'auto'`` to resume from the latest
            checkpoint in ``work_dir``, or a checkpoint path.
        amp (bool): Mixed precision, see :func:`enable_amp`.
        launcher (str): ``none``, ``pytorch``, ``slurm`` or ``mpi``.
        auto_scale_lr (bool): Scale the LR by the real batch size.

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
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        if not osp.isfile(resume):
            raise FileNotFoundError(f'--resume checkpoint not found: {resume}')
        cfg.resume = True
        cfg.load_from = resume
    return apply_device_defaults(cfg)

