"""check_checkpoint names the file and what is wrong with it;
choose_resume_checkpoint takes last_checkpoint's file when intact and the
newest intact one otherwise, saying why."""
import os

import pytest
import torch

import mmlongtail  # noqa: F401  (allow-lists mmengine's checkpoint globals)
from mmlongtail.engine.checkpoint_io import (CheckpointError,
                                             check_checkpoint,
                                             checkpoint_dir, checkpoint_steps,
                                             choose_resume_checkpoint)


def _save(path, step):
    torch.save(
        dict(meta=dict(epoch=step, iter=10 * step, seed=5),
             state_dict=dict(w=torch.full((64, ), float(step)))), path)
    return str(path)


def _point(work_dir, path):
    (work_dir / 'last_checkpoint').write_text(str(path))


def test_complete_checkpoint_gives_its_meta(tmp_path):
    meta = check_checkpoint(_save(tmp_path / 'epoch_3.pth', 3))
    assert (meta['epoch'], meta['iter'], meta['seed']) == (3, 30, 5)


def test_damage_is_named(tmp_path):
    good = _save(tmp_path / 'good.pth', 1)
    data = open(good, 'rb').read()

    def damaged(name, content):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            check_checkpoint(str(path))
        assert info.value.path == str(path)
        assert str(path) in str(info.value)
        return info.value.reason

    assert 'truncated' in damaged('half.pth', data[:len(data) // 2])
    assert 'truncated' in damaged('tail_cut.pth', data[:-10])
    assert 'empty' in damaged('empty.pth', b'')
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside the tensor record
    assert 'CRC-32' in damaged('flipped.pth', bytes(flipped))
    torch.save({'state_dict': {}}, tmp_path / 'weights.pth')
    with pytest.raises(CheckpointError, match='not a runner checkpoint'):
        check_checkpoint(str(tmp_path / 'weights.pth'))
    with pytest.raises(CheckpointError, match='does not exist'):
        check_checkpoint(str(tmp_path / 'missing.pth'))


def test_pickled_objects_outside_the_allow_list_are_refused(tmp_path):
    path = tmp_path / 'obj.pth'
    torch.save(dict(meta=dict(epoch=1, iter=1), state_dict={},
                    extra=ValueError('x')), path)
    with pytest.raises(CheckpointError, match='weights_only=True'):
        check_checkpoint(str(path))


def test_steps_newest_first(tmp_path):
    for name in ('epoch_2.pth', 'epoch_10.pth', 'epoch_1.pth', 'iter_5.pth',
                 'best_acc_epoch_9.pth', '.epoch_11.pth.tmp-3'):
        (tmp_path / name).write_bytes(b'x')
    assert checkpoint_steps(str(tmp_path), 'epoch_{}.pth') == [
        (10, str(tmp_path / 'epoch_10.pth')),
        (2, str(tmp_path / 'epoch_2.pth')),
        (1, str(tmp_path / 'epoch_1.pth'))]
    assert checkpoint_steps(str(tmp_path / 'none'), 'iter_{}.pth') == []
    with pytest.raises(ValueError, match='exactly one'):
        checkpoint_steps(str(tmp_path), 'epoch.pth')


def test_checkpoint_dir_follows_mmengine():
    assert checkpoint_dir('/w/exp') == '/w/exp'
    assert checkpoint_dir('/w/exp/', '/w/exp/') == '/w/exp/'
    assert checkpoint_dir('/w/exp/', '/ckpts') == '/ckpts/exp'


def test_pointer_intact_is_used(tmp_path):
    _save(tmp_path / 'epoch_1.pth', 1)
    two = _save(tmp_path / 'epoch_2.pth', 2)
    _point(tmp_path, two)
    path, notes, meta = choose_resume_checkpoint(str(tmp_path),
                                                 str(tmp_path), 'epoch_{}.pth')
    assert (path, notes, meta['epoch']) == (two, [], 2)


def test_damaged_pointer_target_falls_back_to_newest_intact(tmp_path):
    one = _save(tmp_path / 'epoch_1.pth', 1)
    two = _save(tmp_path / 'epoch_2.pth', 2)
    three = tmp_path / 'epoch_3.pth'
    data = open(two, 'rb').read()
    three.write_bytes(data[:100])  # what mmengine's in-place write leaves
    _point(tmp_path, three)
    path, notes, _ = choose_resume_checkpoint(str(tmp_path), str(tmp_path),
                                              'epoch_{}.pth')
    assert path == two
    assert len(notes) == 1 and str(three) in notes[0] and \
        'truncated' in notes[0]
    # the pointer's file gone (mmengine removed it before writing the next)
    os.remove(three)
    os.remove(two)
    path, notes, _ = choose_resume_checkpoint(str(tmp_path), str(tmp_path),
                                              'epoch_{}.pth')
    assert path == one and 'does not exist' in notes[0]


def test_missing_pointer(tmp_path):
    assert choose_resume_checkpoint(str(tmp_path), str(tmp_path),
                                    'epoch_{}.pth') == (None, [], {})
    two = _save(tmp_path / 'epoch_2.pth', 2)
    path, notes, _ = choose_resume_checkpoint(str(tmp_path), str(tmp_path),
                                              'epoch_{}.pth')
    assert path == two and 'last_checkpoint is missing' in notes[0]


def test_nothing_usable_is_an_error_listing_every_file(tmp_path):
    (tmp_path / 'epoch_1.pth').write_bytes(b'')
    (tmp_path / 'epoch_2.pth').write_bytes(b'PK\x03\x04 cut')
    _point(tmp_path, tmp_path / 'epoch_2.pth')
    with pytest.raises(CheckpointError) as info:
        choose_resume_checkpoint(str(tmp_path), str(tmp_path),
                                 'epoch_{}.pth')
    msg = str(info.value)
    assert 'no usable checkpoint' in msg
    assert str(tmp_path / 'epoch_1.pth') in msg and 'empty' in msg
    assert str(tmp_path / 'epoch_2.pth') in msg and 'truncated' in msg
