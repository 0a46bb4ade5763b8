"""A full disk (ENOSPC) or an I/O error (EIO) at each write step of a save,
through a real Runner with max_keep_ckpts=1 (the toy run of
test_crash_safe_checkpoint_hook.py: 3 epochs, a checkpoint each).

The second save (epoch_2.pth, then last_checkpoint naming it, then the
removal of epoch_1.pth) fails at one step. Each case checks: the error is an
OSError with that errno naming the file and the step; no temporary file is
left; epoch_1.pth (or, once last_checkpoint names it, epoch_2.pth) is intact
and named by last_checkpoint; a resume from what is left repeats the
uninterrupted run exactly.
"""
import errno
import os
import os.path as osp

import pytest

from mmlongtail.engine.checkpoint_io import (check_checkpoint,
                                             choose_resume_checkpoint,
                                             read_pointer)
from mmlongtail.utils import atomic_io
from mmlongtail.utils.atomic_io import (WRITE_STEPS, AtomicWriteError,
                                        atomic_write, is_temporary)
from tests.engine.test_crash_safe_checkpoint_hook import _runner, _train


class _FaultyOS:
    """``os`` as atomic_io sees it, failing one step of the ``nth`` write
    of a file called ``name`` with ``err`` (everything else is ``os``)."""

    def __init__(self, name, nth, step, err):
        self.name, self.nth, self.step, self.err = name, nth, step, err
        self.count, self.fd, self.armed = 0, None, False
        self.replaced, self.partial = False, False

    def __getattr__(self, attr):
        return getattr(os, attr)

    def _fail(self):
        raise OSError(self.err, os.strerror(self.err))

    def open(self, path, flags, mode=0o777):
        if is_temporary(path) and osp.basename(path).startswith(
                f'.{self.name}.tmp-'):
            self.count += 1
            self.armed = self.count == self.nth
            if self.armed and self.step == 'create':
                self._fail()
            fd = os.open(path, flags, mode)
            if self.armed:
                self.fd = fd
            return fd
        return os.open(path, flags, mode)

    def write(self, fd, data):
        if self.armed and fd == self.fd and self.step == 'write':
            if not self.partial:  # a short write first, as a full disk does
                self.partial = True
                return os.write(fd, bytes(data[:len(data) // 2]))
            self._fail()
        return os.write(fd, data)

    def fsync(self, fd):
        if self.armed and ((fd == self.fd and self.step == 'fsync') or
                           (self.replaced and self.step == 'fsync-dir')):
            self._fail()
        return os.fsync(fd)

    def close(self, fd):
        os.close(fd)
        if self.armed and fd == self.fd and self.step == 'close':
            self.fd = None
            self._fail()

    def replace(self, src, dst):
        if self.armed and osp.basename(dst) == self.name:
            if self.step == 'replace':
                self._fail()
            os.replace(src, dst)
            self.replaced = True
            return
        os.replace(src, dst)


ERRNOS = [errno.ENOSPC, errno.EIO]


@pytest.mark.parametrize('err', ERRNOS, ids=['ENOSPC', 'EIO'])
@pytest.mark.parametrize('step', WRITE_STEPS)
def test_atomic_write_keeps_the_old_file(tmp_path, monkeypatch, step, err):
    target = tmp_path / 'f.txt'
    target.write_text('old')
    monkeypatch.setattr(atomic_io, 'os', _FaultyOS('f.txt', 1, step, err))
    with pytest.raises(AtomicWriteError) as info:
        atomic_write(str(target), b'new' * 1000)
    e = info.value
    assert e.errno == err and e.step == step and e.path == str(target)
    assert str(target) in str(e) and repr(step) in str(e)
    assert os.strerror(err) in str(e)
    assert os.listdir(tmp_path) == ['f.txt']  # no temporary left
    expected = 'new' * 1000 if step == 'fsync-dir' else 'old'
    assert target.read_text() == expected


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    _, record = _train(tmp_path_factory.mktemp('full'), max_keep_ckpts=1)
    return record.losses


def _check_left(work_dir):
    names = os.listdir(work_dir)
    assert not [n for n in names if is_temporary(n)], names
    pointed = read_pointer(str(work_dir))
    path, notes, meta = choose_resume_checkpoint(str(work_dir),
                                                 str(work_dir),
                                                 'epoch_{}.pth')
    assert path == pointed and not notes  # the pointer's file is intact
    check_checkpoint(pointed)
    return meta['epoch']


@pytest.mark.parametrize('err', ERRNOS, ids=['ENOSPC', 'EIO'])
@pytest.mark.parametrize('name,nth', [('epoch_2.pth', 1),
                                      ('last_checkpoint', 2)],
                         ids=['checkpoint', 'pointer'])
@pytest.mark.parametrize('step', WRITE_STEPS)
def test_write_failure_in_a_save_keeps_a_checkpoint_and_resumes(
        tmp_path, monkeypatch, uninterrupted, step, name, nth, err):
    with monkeypatch.context() as m:
        m.setattr(atomic_io, 'os', _FaultyOS(name, nth, step, err))
        runner, _ = _runner(tmp_path, max_keep_ckpts=1)
        with pytest.raises(OSError) as info:
            runner.train()
    e = info.value
    assert isinstance(e, AtomicWriteError) and e.errno == err
    assert e.step == step and osp.basename(e.path) == name
    assert f'writing {tmp_path / name} failed at step {step!r}' in str(e)
    epoch = _check_left(tmp_path)
    # the pointer moves to epoch_2 only once its rename is done
    assert epoch == (2 if (name, step) == ('last_checkpoint', 'fsync-dir')
                     else 1)
    assert (tmp_path / 'epoch_1.pth').is_file()  # removal comes last
    _, record = _train(tmp_path, resume=True, max_keep_ckpts=1)
    assert record.losses == uninterrupted[3 * epoch:]
    assert sorted(n for n in os.listdir(tmp_path)
                  if n.endswith('.pth')) == ['epoch_3.pth']


@pytest.mark.parametrize('err', ERRNOS, ids=['ENOSPC', 'EIO'])
def test_failed_removal_of_the_old_checkpoint(tmp_path, monkeypatch,
                                              uninterrupted, err):
    real_remove = os.remove

    def remove(path):
        if osp.basename(path) == 'epoch_1.pth':
            raise OSError(err, os.strerror(err), path)
        real_remove(path)

    with monkeypatch.context() as m:
        m.setattr(os, 'remove', remove)
        runner, _ = _runner(tmp_path, max_keep_ckpts=1)
        with pytest.raises(OSError) as info:
            runner.train()
    e = info.value
    assert e.errno == err
    assert f"removing {tmp_path / 'epoch_1.pth'}" in str(e)
    assert "'remove-old'" in str(e)
    assert _check_left(tmp_path) == 2
    _, record = _train(tmp_path, resume=True, max_keep_ckpts=1)
    assert record.losses == uninterrupted[6:]
    assert sorted(n for n in os.listdir(tmp_path)
                  if n.endswith('.pth')) == ['epoch_3.pth']
