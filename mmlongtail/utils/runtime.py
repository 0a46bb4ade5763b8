"""Where training is, for components that have no runner at hand (losses,
heads): one reader of the progress mmengine's runner publishes in its
``MessageHub`` (kept in checkpoints, so a resumed run reads what the
uninterrupted one would, and the same on every rank)."""
from typing import Optional, Tuple

from mmengine.logging import MessageHub

#: The units the runner publishes: ``'epoch'`` (0-based, the epoch in
#: progress) and ``'iter'`` (0-based iterations done), with ``max_epochs``
#: / ``max_iters``.
UNITS = ('epoch', 'iter')


def training_progress(unit: str = 'epoch') -> Tuple[Optional[int],
                                                     Optional[int]]:
    """``(step, total)`` in ``unit`` from the current message hub: the
    0-based epoch (or iteration) and ``max_epochs`` (or ``max_iters``);
    each None when no runner has published it (a loss called outside
    training)."""
    if unit not in UNITS:
        raise ValueError(f'unit must be one of {UNITS}, got {unit!r}')
    hub = MessageHub.get_current_instance()
    step, total = hub.get_info(unit), hub.get_info(f'max_{unit}s')
    return (None if step is None else int(step),
            None if total is None else int(total))
