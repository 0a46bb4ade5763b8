"""atomic_write: old or new content after any failure, never a mix; the
file is fsynced before the rename and the folder after it; a SIGKILL in the
middle of a write (the test-only fault point) leaves the target untouched."""
import os
import signal
import subprocess
import sys

import pytest

from mmlongtail.utils.atomic_io import (KILL_DURING_WRITE_ENV, atomic_write,
                                        is_temporary,
                                        remove_stale_temporaries,
                                        temporary_name)


def test_writes_and_replaces(tmp_path):
    path = tmp_path / 'sub' / 'f.bin'
    atomic_write(str(path), b'old')
    assert path.read_bytes() == b'old'
    atomic_write(str(path), 'new text')
    assert path.read_text() == 'new text'
    assert sorted(os.listdir(path.parent)) == ['f.bin']  # no temporary left


def test_fsync_file_then_rename_then_fsync_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f'/proc/self/fd/{fd}')
        events.append(('fsync', os.path.basename(target)))
        real_fsync(fd)

    def replace(src, dst):
        events.append(('replace', os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    path = tmp_path / 'ckpt.pth'
    atomic_write(str(path), b'x' * 10)
    tmp = os.path.basename(temporary_name(str(path)))
    assert events == [('fsync', tmp), ('replace', 'ckpt.pth'),
                      ('fsync', tmp_path.name)]


def test_failure_keeps_old_content_and_removes_temporary(tmp_path,
                                                         monkeypatch):
    path = tmp_path / 'f'
    atomic_write(str(path), b'old')

    def broken_replace(src, dst):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', broken_replace)
    with pytest.raises(OSError, match='disk full'):
        atomic_write(str(path), b'new')
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['f']


def test_sigkill_during_write_leaves_target_intact(tmp_path):
    path = tmp_path / 'epoch_2.pth'
    path.write_bytes(b'previous complete file')
    code = ('import sys; from mmlongtail.utils.atomic_io import atomic_write;'
            'atomic_write(sys.argv[1], b"N" * 1000)')
    env = dict(os.environ, **{KILL_DURING_WRITE_ENV: 'epoch_2.pth'})
    proc = subprocess.run([sys.executable, '-c', code, str(path)], env=env)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == b'previous complete file'
    leftovers = [n for n in os.listdir(tmp_path) if is_temporary(n)]
    assert len(leftovers) == 1  # killed half-way: 500 of 1000 bytes
    assert (tmp_path / leftovers[0]).read_bytes() == b'N' * 500
    assert remove_stale_temporaries(str(tmp_path)) == [
        str(tmp_path / leftovers[0])]
    assert os.listdir(tmp_path) == ['epoch_2.pth']
    # other file names are not affected by the fault point
    proc = subprocess.run(
        [sys.executable, '-c', code, str(tmp_path / 'epoch_3.pth')], env=env)
    assert proc.returncode == 0
    assert (tmp_path / 'epoch_3.pth').read_bytes() == b'N' * 1000


def test_temporary_names():
    assert is_temporary('.epoch_1.pth.tmp-123')
    assert is_temporary(temporary_name('/a/b/last_checkpoint'))
    for name in ('epoch_1.pth', '.epoch_1.pth', 'epoch_1.pth.tmp-1',
                 '.x.tmp-'):
        assert not is_temporary(name), name
