"""The project's error types cross process boundaries intact (dataloader
workers and multiprocessing re-raise exceptions through pickle; an error
that cannot be rebuilt from its pickle turns into an unrelated TypeError)."""
import errno
import pickle

from mmlongtail.engine.nonfinite import NonFiniteError
from mmlongtail.utils.atomic_io import AtomicWriteError


def test_atomic_write_error_survives_pickle():
    e = AtomicWriteError('/w/epoch_2.pth', 'fsync', '/w/.epoch_2.pth.tmp',
                         OSError(errno.ENOSPC, 'No space left on device'),
                         'the previous file is intact')
    f = pickle.loads(pickle.dumps(e))
    assert type(f) is AtomicWriteError
    assert (f.errno, f.path, f.step, f.temporary, str(f)) == (
        errno.ENOSPC, e.path, 'fsync', e.temporary, str(e))


def test_nonfinite_error_survives_pickle():
    e = NonFiniteError('Non-finite guard: ...', ['rank 1: loss_cls = nan'])
    f = pickle.loads(pickle.dumps(e))
    assert type(f) is NonFiniteError
    assert (str(f), f.findings) == (str(e), e.findings)
