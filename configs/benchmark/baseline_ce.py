# Long-tail benchmark on the synthetic dataset (tools/benchmark_longtail.py):
# the plain softmax cross-entropy baseline. Every other method in this folder
# is this file plus one change, trained with the same schedule and seeds.
#
# It is the CPU demo's light Mask R-CNN (configs/demo/) on a copy of the demo
# dataset with a larger balanced val split (20 images per class, ~25 instances
# of every class, rare ones included), made by
#   python tools/make_synthetic_lvis.py data/synthetic_lvis_bench \
#       --val-images-per-class 20
# (same generator, seed and per-class training image counts as the demo's).
# Elsewhere: LONGTAIL_BENCH_ROOT=/path/to/it (tools/benchmark_longtail.py
# --data-root sets it; every path below follows data_root).
_base_ = '../demo/mask_rcnn_r18_light_synthetic.py'

data_root = '{{$LONGTAIL_BENCH_ROOT:data/synthetic_lvis_bench/}}'.rstrip(
    '/') + '/'
train_stats = data_root + 'annotations/lvis_v1_train.json'

# The pretrained start (third edition), ImageNet's role for this benchmark:
# the backbone pretrained once on a balanced classification task of the same
# synthetic world (every class's objects in equal numbers plus background;
# mmlongtail_bench.benchmark.pretrain), which tools/benchmark_longtail.py
# makes (or finds in its cache) and names in LONGTAIL_BENCH_PRETRAINED.
# Unset ('none'): from scratch, as the first two editions and
# baseline_ce_scratch.py. Every config of this folder inherits it (the
# one-stage retinanet_focal.py repeats it in its own backbone).
pretrained = '{{$LONGTAIL_BENCH_PRETRAINED:none}}'
pretrained_init = None if pretrained == 'none' else dict(
    type='Pretrained', checkpoint=pretrained)

# Val is evaluated in two passes, because masks are most of the evaluation's
# cost and only the standard protocol needs them.
# 1. Boxes and masks, standard protocol, as in the first edition: the model
#    keeps each image's best 100 detections across classes (40 classes and
#    <= 8 objects per 128 px image), val_evaluator below.
model = dict(
    # (_delete_: the demo's init_cfg is None, not a dict to merge into)
    backbone=dict(init_cfg=None if pretrained_init is None else dict(
        pretrained_init, _delete_=True)),
    test_cfg=dict(rcnn=dict(max_per_img=100, topk_per_class=-1)))
# 2. Boxes only, for AP^fixed and AP^pool (top 10,000 detections per class
#    over the split): the Fixed-AP test-time mode (Dave et al. 2021, as the
#    demo) with no per-image cap and the best 100 detections of every class
#    in each image (an image holds at most 2 objects of a class here; LVIS
#    keeps 300 for 1203 classes). tools/benchmark_longtail.py applies this
#    to the model's test_cfg.rcnn and the evaluator
#    (mmlongtail_bench.benchmark.run.fixed_ap_config); mask head off. Its
#    standard-protocol box AP (each image's best max_dets=100 across
#    classes) is pass 1's, which the run checks.
fixed_ap_eval = dict(
    rcnn=dict(max_per_img=-1, topk_per_class=100),
    protocol=['standard', 'fixed', 'pooled'])

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
# LVIS AP (pass 1 above; fixed_ap_eval adds AP^fixed and AP^pool).
val_evaluator = dict(
    ann_file=data_root + 'annotations/lvis_v1_val.json',
    protocol='standard',
    max_dets=100)
test_evaluator = val_evaluator

default_hooks = dict(checkpoint=dict(save_last=True))

# Where post-hoc methods choose their parameter: a held-out part of the
# training distribution, never val (mmlongtail_bench.synthetic.
# write_heldout_split makes it; tools/benchmark_longtail.py when missing).
heldout_ann_name = 'annotations/lvis_v1_train_heldout.json'
heldout_ann_file = data_root + heldout_ann_name
