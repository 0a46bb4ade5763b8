"""The one reader of training progress for losses and heads."""
import pytest
from mmengine.logging import MessageHub

from mmlongtail.utils.runtime import training_progress


def test_reads_what_the_runner_publishes_and_none_without_it():
    hub = MessageHub.get_instance('mmlongtail_test_runtime')
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MessageHub, 'get_current_instance', lambda: hub)
        assert training_progress('epoch') == (None, None)
        hub.update_info('epoch', 3)
        hub.update_info('max_epochs', 12)
        hub.update_info('iter', 70)
        assert training_progress('epoch') == (3, 12)
        assert training_progress('iter') == (70, None)
        with pytest.raises(ValueError, match='unit must be one of'):
            training_progress('step')
