"""The torch>=2.6 checkpoint allow-list and the lvis-api NumPy 2 shim."""
import io
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmlongtail  # noqa: F401  (registers the allow-list)
from mmlongtail.compat import patch_lvis_numpy


class _ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)
        self.bn = nn.BatchNorm1d(1)

    def forward(self, x, mode='loss'):
        out = self.bn(self.fc(x if torch.is_tensor(x) else torch.stack(x)))
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


class _ToyData(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(x=torch.randn(2, generator=g))


def _runner(work_dir, max_epochs, resume=False):
    return Runner(
        model=_ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_ToyData(),
            sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
            batch_size=2,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                 end=3),
            dict(type='MultiStepLR', milestones=[1], by_epoch=True)
        ],
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        randomness=dict(seed=0),
        resume=resume,
        experiment_name=f'toy_{max_epochs}_{resume}',
        log_level='WARNING')


@pytest.fixture(scope='module')
def runner_ckpt(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('ckpt')
    runner = _runner(work_dir, max_epochs=1)
    # put a numpy scalar and array into meta, as mmengine does for seeds etc.
    runner.message_hub.update_info('np_scalar', np.float64(1.5))
    runner.message_hub.update_info('np_array', np.arange(3))
    runner.train()
    return work_dir, work_dir / 'epoch_1.pth'


def test_default_torch_load_is_weights_only():
    # the premise: this torch refuses arbitrary pickles by default
    assert torch.__version__ >= '2.6'

    class Evil:

        def __reduce__(self):
            return (print, ('this must never run', ))

    buf = io.BytesIO()
    torch.save({'state_dict': {}, 'x': Evil()}, buf)
    buf.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buf)


def test_runner_checkpoint_loads_weights_only(runner_ckpt):
    _, ckpt = runner_ckpt
    state = torch.load(ckpt)  # weights_only=True is torch's default here
    hub = state['message_hub']
    assert isinstance(hub['log_scalars']['train/loss'], HistoryBuffer)
    buf = hub['log_scalars']['train/loss']
    assert buf.mean() == pytest.approx(float(np.mean(buf.data[0])))
    assert hub['runtime_info']['np_scalar'] == 1.5
    assert list(hub['runtime_info']['np_array']) == [0, 1, 2]
    assert 'param_groups' in state['optimizer']
    assert len(state['param_schedulers']) == 2
    # a resumed message hub still computes statistics
    restored = MessageHub.get_instance('restored')
    restored.load_state_dict(hub)
    assert restored.get_scalar('train/loss').current() == buf.current()


def test_runner_resume_continues(runner_ckpt):
    work_dir, ckpt = runner_ckpt
    runner = _runner(work_dir, max_epochs=2, resume=True)
    runner.train()
    assert runner.epoch == 2
    assert runner.iter == 8
    final = torch.load(work_dir / 'epoch_2.pth')
    assert final['meta']['epoch'] == 2


def test_other_getattr_refused(tmp_path):
    """Only HistoryBuffer's statistics methods may be fetched by getattr."""

    class Sneaky:

        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    path = tmp_path / 'sneaky.pth'
    torch.save({'x': Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match='refused'):
        torch.load(path)


def test_arbitrary_object_still_refused(tmp_path):

    class Payload:

        def __reduce__(self):
            return (subprocess.call, (['true'], ))

    path = tmp_path / 'payload.pth'
    torch.save({'state_dict': {}, 'meta': {'x': Payload()}}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_numpy1_checkpoint_names(tmp_path):
    """Checkpoints written under NumPy 1.x name numpy.core.multiarray."""
    src = tmp_path / 'np2.pth'
    torch.save({'a': np.arange(4, dtype=np.int64), 's': np.float32(2.5)},
               src)
    dst = tmp_path / 'np1.pth'
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith('data.pkl'):
                assert b'numpy._core.multiarray' in data
                data = data.replace(b'numpy._core.multiarray',
                                    b'numpy.core.multiarray')
            zout.writestr(item, data)
    out = torch.load(dst)
    assert out['a'].tolist() == [0, 1, 2, 3] and out['s'] == 2.5


def _lvis_eval_script(patch: bool) -> str:
    return f'''
import json, sys, tempfile, os
import numpy as np
from lvis import LVIS, LVISEval, LVISResults
if {patch}:
    from mmlongtail.compat import patch_lvis_numpy
    patch_lvis_numpy()
gt = dict(images=[dict(id=1, width=20, height=20, neg_category_ids=[],
                       not_exhaustive_category_ids=[])],
          annotations=[dict(id=1, image_id=1, category_id=1,
                            bbox=[2, 2, 8, 8], area=64,
                            segmentation=[[2, 2, 10, 2, 10, 10, 2, 10]])],
          categories=[dict(id=1, name="a", frequency="r", image_count=1,
                           instance_count=1)])
d = tempfile.mkdtemp()
p = os.path.join(d, "gt.json")
json.dump(gt, open(p, "w"))
gt_api = LVIS(p)
dt = LVISResults(gt_api, [dict(image_id=1, category_id=1,
                               bbox=[2, 2, 8, 8], score=0.9)])
ev = LVISEval(gt_api, dt, "bbox")
ev.run()
print("AP", round(ev.get_results()["AP"], 6))
print("numpy_has_float", hasattr(np, "float"))
'''


def test_lvis_api_fails_on_numpy2_without_shim():
    r = subprocess.run([sys.executable, '-c', _lvis_eval_script(False)],
                       capture_output=True,
                       text=True)
    assert r.returncode != 0
    assert "has no attribute 'float'" in r.stderr


def test_lvis_api_runs_with_shim_and_numpy_untouched():
    r = subprocess.run([sys.executable, '-c', _lvis_eval_script(True)],
                       capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'AP 1.0' in r.stdout
    assert 'numpy_has_float False' in r.stdout


def test_patch_is_scoped_and_idempotent():
    import lvis.eval as lvis_eval
    patch_lvis_numpy()
    patch_lvis_numpy()
    assert lvis_eval.np.float is float
    assert lvis_eval.np.cumsum is np.cumsum
    assert not hasattr(np, 'float')
