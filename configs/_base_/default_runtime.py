# Runtime shared by every config. mmlongtail registers its components when
# imported; the `mmlongtail.` prefix in `type=` then resolves from mmdet's scope.
default_scope = 'mmdet'
custom_imports = dict(imports=['mmlongtail'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # mmengine's CheckpointHook options and file names; writes atomically
    # (a kill at any moment leaves a usable checkpoint), stores every rank's
    # RNG state and resumes it exactly (README: Resume and failures)
    checkpoint=dict(
        type='mmlongtail.CrashSafeCheckpointHook',
        interval=1,
        max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'),
    # val/test progress with elapsed time and ETA at least every 10% of the
    # loader and at its end (the logger's interval can exceed a short
    # loader, which then prints nothing until its metrics); a default hook,
    # so configs that replace custom_hooks keep it
    eval_progress=dict(type='mmlongtail.EvalProgressHook', fraction=0.1),
    # every step, between backward and the optimizer step: a NaN/inf loss
    # component or gradient stops training naming it, the iteration and the
    # rank, before it reaches the weights or the loss statistics; 'skip'
    # drops such steps instead (counted, logged, statistics restored)
    nonfinite_guard=dict(type='mmlongtail.NonFiniteGuardHook', policy='stop'),
    # with bad_image='skip' in a train pipeline: the images skipped in each
    # epoch and since the start, summed over ranks and dataloader workers
    bad_images=dict(type='mmlongtail.BadImageReportHook'))
# num_classes of heads, losses and dataset agree; loss channel layouts are
# honoured by their heads (checked before train/val/test)
custom_hooks = [dict(type='mmlongtail.LongTailConsistencyHook')]

# tools/train.py switches the backend to gloo on machines without CUDA.
# timeout (s): the longest a rank waits in a collective for the others, so
# what a rank whose peer hangs or whose node is lost waits at most before it
# fails. It must outlast the longest stretch one rank works alone while the
# others wait: rank 0 computing the LVIS metrics after validation (minutes
# with the fast backend, up to about 25x that with backend='lvis') and
# writing a checkpoint. torch's own defaults: 10 min for nccl (too short
# for an lvis-api evaluation), 30 min for gloo.
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl', timeout=1800))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
