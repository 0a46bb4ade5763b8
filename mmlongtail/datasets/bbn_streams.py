"""The two data streams of BBN (Zhou et al., "BBN: Bilateral-Branch Network
with Cumulative Learning Strategy for Long-Tailed Visual Recognition", CVPR
2020) as one dataset.

BBN feeds its conventional branch from the uniform (instance-balanced)
sampler and its re-balancing branch from the reversed sampler. In mmengine
one dataloader feeds a model, so :class:`BBNStreamDataset` serves the
training images twice: index ``i < N`` is image ``i`` of the conventional
stream, index ``N + i`` the same image of the re-balancing stream, tagged in
its data sample's metainfo (``bbn_stream``: :data:`CONVENTIONAL` or
:data:`REBALANCING`). :class:`~mmlongtail.datasets.BBNPairSampler` chooses
the indices; :class:`~mmlongtail.models.roi_heads.BBNRoIHead` reads the tag.
"""
import copy
from typing import Union

from mmengine.dataset import BaseDataset

from mmlongtail.registry import DATASETS

#: ``metainfo['bbn_stream']`` of an image drawn by the uniform sampler.
CONVENTIONAL = 0
#: ``metainfo['bbn_stream']`` of an image drawn by the reversed sampler.
REBALANCING = 1
#: The metainfo key of the stream tag.
STREAM_KEY = 'bbn_stream'


@DATASETS.register_module()
class BBNStreamDataset:
    """A training dataset served as BBN's two streams (see the module
    docstring).

    Use it with :class:`~mmlongtail.datasets.BBNPairSampler`::

        train_dataloader = dict(
            batch_size=16,  # 8 conventional + 8 re-balancing images
            batch_sampler=None,
            sampler=dict(type='mmlongtail.BBNPairSampler'),
            dataset=dict(type='mmlongtail.BBNStreamDataset',
                         dataset=<the training dataset config>))

    Args:
        dataset (BaseDataset | dict): The training dataset or its config.
        lazy_init (bool): Defer ``full_init`` of the wrapped dataset.
            Defaults to False.
    """

    def __init__(self, dataset: Union[BaseDataset, dict],
                 lazy_init: bool = False) -> None:
        if isinstance(dataset, dict):
            dataset = DATASETS.build(dataset)
        self.dataset = dataset
        self._metainfo = copy.deepcopy(getattr(dataset, 'metainfo', {}))
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        """The wrapped dataset's metainfo (a copy)."""
        return copy.deepcopy(self._metainfo)

    def full_init(self) -> None:
        """Fully initialize the wrapped dataset."""
        if self._fully_initialized:
            return
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()
        self._fully_initialized = True

    def split_index(self, idx: int):
        """``(stream, image index)`` of dataset index ``idx``.

        Raises:
            IndexError: ``idx`` outside ``[0, 2N)``.
        """
        n = len(self.dataset)
        if not 0 <= idx < 2 * n:
            raise IndexError(f'BBNStreamDataset index {idx} out of range '
                             f'[0, {2 * n}) (2 streams of {n} images)')
        return (CONVENTIONAL, idx) if idx < n else (REBALANCING, idx - n)

    def get_data_info(self, idx: int) -> dict:
        """The wrapped dataset's data info of the image ``idx`` serves."""
        return self.dataset.get_data_info(self.split_index(idx)[1])

    def __getitem__(self, idx: int) -> dict:
        stream, image = self.split_index(int(idx))
        data = self.dataset[image]
        samples = data.get('data_samples') if isinstance(data, dict) else None
        if samples is None or not hasattr(samples, 'set_metainfo'):
            raise TypeError(
                'BBNStreamDataset: the wrapped pipeline must end in '
                "PackDetInputs (a dict with 'data_samples'), got "
                f'{type(data).__name__}')
        samples.set_metainfo({STREAM_KEY: stream})
        return data

    def __len__(self) -> int:
        return 2 * len(self.dataset)
