# RFS + PCB: softmax cross entropy + PCB with repeat-factor sampling
# (t = 1e-3, as configs/_base_/datasets/lvis_v1_instance_ms_rfs.py), otherwise
# pcb_mask_rcnn_r50_fpn_ms_2x_lvis.py: the official
# mask_rcnn_r50_fpn_sample1e-3_mstrain_pcb_2x_lvis_v1_fp16.py.
# Published (megvii-research/PCB README): 26.5 mask AP, 28.3 box AP.
_base_ = './pcb_mask_rcnn_r50_fpn_ms_2x_lvis.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='mmlongtail.RepeatFactorSampler', repeat_thr=1e-3))
