"""A test that survives a crash: predictions streamed to disk as they come,
a rerun that continues from them, and evaluation from the saved predictions.

``tools/test.py`` (and ``tools/dist_test.sh``) use it like this:

1. :func:`setup_streamed_test` wraps the config's ``test_evaluator`` (one
   :class:`~mmlongtail.evaluation.LVISMetric`) in
   :class:`StreamedLVISMetric` and the test sampler in
   :class:`SkipPredictedSampler`;
2. after ``Runner.from_cfg``, :func:`prepare_prediction_folder` checks on
   rank 0 that the folder's predictions belong to this checkpoint, config
   and dataset (:func:`prediction_identity`), or starts it, and tells every
   rank's sampler which images are already predicted: the data loaders then
   run only the rest;
3. during the test each rank writes its images' predictions, every
   ``chunk_images`` images, as one atomic chunk file
   (:mod:`~mmlongtail.evaluation.prediction_store`); a kill loses at most
   the images of each rank's unwritten chunk;
4. at the end rank 0 evaluates the whole folder with the configured
   ``LVISMetric`` (:func:`evaluate_folder`); ``tools/evaluate_predictions.py``
   does the same later, under any protocol, without the model.

Ranks: each rank writes only its own files (``rank{R}-...``), so ranks never
contend. A rerun may use another number of processes: the predicted images
are those of every chunk in the folder, whichever rank wrote it, and each
rank's sampler drops them from its own share. An image written twice (the
distributed sampler pads the last batch with images of other ranks) is
evaluated once.
"""
import hashlib
import json
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
from mmengine.dist import (barrier, broadcast_object_list, get_dist_info,
                           is_main_process)
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from torch.utils.data import Sampler

from mmlongtail.registry import DATA_SAMPLERS, METRICS
from mmlongtail.utils.atomic_io import remove_stale_temporaries
from mmlongtail.utils.progress import Progress
from . import prediction_store as store
from .lvis_metric import PROTOCOLS, LVISMetric
from .prediction_store import PredictionStoreError

#: Images per chunk file unless a config or ``--predictions-chunk`` says
#: otherwise: at most this many images per rank are predicted again after a
#: kill.
DEFAULT_CHUNK_IMAGES = 50
_LVIS_METRIC_TYPES = ('mmlongtail.LVISMetric', LVISMetric)


def default_folder(work_dir: str, checkpoint: str) -> str:
    """Where ``tools/test.py`` saves predictions unless told:
    ``{work_dir}/predictions/{checkpoint file name without .pth}``."""
    name = osp.splitext(osp.basename(checkpoint.rstrip('/')))[0] or 'model'
    return osp.join(work_dir, 'predictions', name)


def prediction_identity(cfg: Any, checkpoint: str) -> Dict[str, dict]:
    """What a test's predictions belong to (the manifest's ``identity``).

    * ``checkpoint``: the file (path, size, mtime, sha256 of its bytes);
    * ``config``: sha256 of the config parts that decide the predictions:
      ``model``, ``test_dataloader.dataset`` and ``test_cfg`` (the metric,
      batch size, workers and work dir do not count);
    * ``dataset``: the test dataset's annotation file.
    """
    parts = {
        'model': cfg.get('model'),
        'test_dataset': cfg.test_dataloader.get('dataset'),
        'test_cfg': cfg.get('test_cfg'),
    }
    text = json.dumps(_plain(parts), sort_keys=True, default=repr)
    dataset = cfg.test_dataloader.dataset
    ann_file = dataset.get('ann_file', '') or ''
    root = dataset.get('data_root', '') or ''
    if root and ann_file and not osp.isabs(ann_file) and '://' not in \
            ann_file:
        ann_file = osp.join(root, ann_file)
    return {
        'checkpoint': store.file_identity(checkpoint),
        'config': {'path': cfg.filename, 'size': len(text), 'mtime': None,
                   'sha256': hashlib.sha256(text.encode()).hexdigest()},
        'dataset': store.file_identity(ann_file),
    }


def _plain(x: Any) -> Any:
    if hasattr(x, 'to_dict'):
        x = x.to_dict()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def why_not_streamed(cfg: Any) -> Optional[str]:
    """Why predictions of this config cannot be streamed (None when they
    can): the evaluator must be one ``mmlongtail.LVISMetric`` with an
    ``ann_file``."""
    ev = cfg.get('test_evaluator')
    if isinstance(ev, (list, tuple)) and len(ev) == 1:
        ev = ev[0]
    if not isinstance(ev, dict) or ev.get('type') not in _LVIS_METRIC_TYPES:
        return ('the test evaluator is not one mmlongtail.LVISMetric '
                f'(got {ev!r:.80})')
    if not ev.get('ann_file'):
        return ('the LVISMetric has no ann_file (its ground truth comes with '
                'the data samples, which are not saved)')
    return None


def setup_streamed_test(cfg: Any, folder: str,
                        chunk_images: int = DEFAULT_CHUNK_IMAGES) -> None:
    """Make ``cfg`` (as :func:`~mmlongtail.apis.runner_setup.
    build_test_config` returns it) save its predictions to ``folder``.

    Raises:
        ValueError: When :func:`why_not_streamed` gives a reason.
    """
    reason = why_not_streamed(cfg)
    if reason is not None:
        raise ValueError(f'predictions cannot be saved: {reason}')
    ev = cfg.test_evaluator
    if isinstance(ev, (list, tuple)):
        ev = ev[0]
    cfg.test_evaluator = dict(
        type='mmlongtail.StreamedLVISMetric', metric=ev, folder=folder,
        chunk_images=chunk_images)
    loader = cfg.test_dataloader
    inner = loader.get('sampler', None) or dict(
        type='DefaultSampler', shuffle=False)
    loader.sampler = dict(type='mmlongtail.SkipPredictedSampler',
                          sampler=inner)


# ---------------------------------------------------------------- sampler
@DATA_SAMPLERS.register_module()
class SkipPredictedSampler(Sampler):
    """A test sampler that leaves out the images already predicted.

    It yields the indices of the wrapped sampler (this rank's share of the
    dataset) except those given to :meth:`skip_images`, in the same order.

    Args:
        dataset: The test dataset (mmengine passes it).
        sampler (dict): The wrapped sampler's config (e.g.
            ``dict(type='DefaultSampler', shuffle=False)``).
        seed (int, optional): Passed to the wrapped sampler.
    """

    def __init__(self, dataset: Any, sampler: dict,
                 seed: Optional[int] = None) -> None:
        self.dataset = dataset
        self.sampler = DATA_SAMPLERS.build(
            sampler, default_args=dict(dataset=dataset, seed=seed))
        self.skipped: frozenset = frozenset()

    def image_ids(self) -> np.ndarray:
        """``(len(dataset),)`` int64: each dataset index's ``img_id``."""
        return np.array([
            int(self.dataset.get_data_info(i)['img_id'])
            for i in range(len(self.dataset))
        ], np.int64)

    def skip_images(self, img_ids: np.ndarray) -> int:
        """Leave out the dataset indices of ``img_ids`` from now on; return
        how many of this rank's indices that removes."""
        done = np.isin(self.image_ids(), np.asarray(img_ids, np.int64))
        self.skipped = frozenset(np.flatnonzero(done).tolist())
        return sum(1 for i in self.sampler if i in self.skipped)

    def __iter__(self) -> Iterator[int]:
        return (i for i in self.sampler if i not in self.skipped)

    def __len__(self) -> int:
        if not self.skipped:
            return len(self.sampler)
        return sum(1 for i in self.sampler if i not in self.skipped)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)


# ---------------------------------------------------------------- metric
@METRICS.register_module()
class StreamedLVISMetric(BaseMetric):
    """An :class:`~mmlongtail.evaluation.LVISMetric` whose predictions go to
    disk as they come and are evaluated from there.

    ``process`` checks each image's predictions with the LVIS metric's own
    checks (a bad prediction stops the test at once, naming the image) and
    appends them to this rank's buffer, written as a chunk of the folder
    (:mod:`~mmlongtail.evaluation.prediction_store`) every ``chunk_images``
    images. ``evaluate`` writes the last chunk, waits for every rank, and
    rank 0 evaluates the whole folder (:func:`evaluate_folder`), so the
    images predicted before a kill count as much as those of this run.

    Args:
        metric (dict): The ``mmlongtail.LVISMetric`` config (with
            ``ann_file``).
        folder (str): Where the predictions go.
        chunk_images (int): Images per chunk file. Defaults to
            :data:`DEFAULT_CHUNK_IMAGES`.
        collect_device (str): Unused (nothing is gathered), kept for
            mmengine.
        prefix (str, optional): Unused: results carry the wrapped metric's
            prefix.
    """
    default_prefix: Optional[str] = 'lvis'  # unused, see ``prefix``

    def __init__(self, metric: dict, folder: str,
                 chunk_images: int = DEFAULT_CHUNK_IMAGES,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if isinstance(chunk_images, bool) or int(chunk_images) < 1:
            raise ValueError(f'chunk_images must be >= 1, got '
                             f'{chunk_images!r}')
        self.metric = METRICS.build(metric)
        if not isinstance(self.metric, LVISMetric):
            raise TypeError('StreamedLVISMetric wraps an mmlongtail.'
                            f'LVISMetric, got {type(self.metric).__name__}')
        if self.metric.ground_truth is None:
            raise ValueError('StreamedLVISMetric needs an LVISMetric with '
                             'ann_file: saved predictions carry no ground '
                             'truth')
        self.folder = folder
        self.chunk_images = int(chunk_images)
        self._buffer: List[store.Record] = []
        self._next_chunk: Optional[int] = None
        #: Images written by this process (all chunks of this run).
        self.written = 0
        self._evaluated = False

    @property
    def dataset_meta(self) -> Optional[dict]:
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, meta: Optional[dict]) -> None:
        self._dataset_meta = meta
        self.metric.dataset_meta = meta

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Check and buffer each image's predictions; write a chunk when
        ``chunk_images`` are buffered."""
        if self._evaluated:
            raise RuntimeError(
                'StreamedLVISMetric saves the predictions of one test; it '
                'cannot take more after its evaluation (use LVISMetric for '
                'validation during training)')
        num_classes = self.metric.ground_truth.num_classes
        for ds in data_samples:
            # checked as given, before the conversion to the stored arrays
            # (which would reshape wrongly shaped boxes, cut float labels)
            self.metric.checked_predictions(
                ds['img_id'], ds['pred_instances'], num_classes,
                remember=False)
            rec = store.image_record(ds)
            self._buffer.append(rec)
            if len(self._buffer) >= self.chunk_images:
                self.flush()

    def flush(self) -> None:
        """Write the buffered images as this rank's next chunk."""
        if not self._buffer:
            return
        rank, _ = get_dist_info()
        if self._next_chunk is None:
            self._next_chunk = store.next_chunk_index(self.folder, rank)
        store.write_chunk(self.folder, rank, self._next_chunk, self._buffer)
        self._next_chunk += 1
        self.written += len(self._buffer)
        self._buffer = []

    def evaluate(self, size: int) -> dict:
        """Write the last chunk, wait for every rank, evaluate the folder on
        rank 0 and give its results to every rank.

        Args:
            size (int): The dataset's length: the folder must hold
                predictions for that many images.

        Returns:
            dict: The wrapped metric's results (``lvis/bbox_AP`` ...).
        """
        self.flush()
        self._evaluated = True
        barrier()
        out: List[Any] = [None]
        if is_main_process():
            try:
                out = [{'metrics': evaluate_folder(
                    self.folder, self.metric, expected_images=size)}]
            except Exception as e:  # told to every rank, then raised
                out = [{'error': f'{type(e).__name__}: {e}'}]
                broadcast_object_list(out)
                raise
        broadcast_object_list(out)
        if 'error' in out[0]:
            raise RuntimeError('rank 0 could not evaluate the saved '
                               f'predictions: {out[0]["error"]}')
        return out[0]['metrics']

    def compute_metrics(self, results: list) -> dict:
        """Not used: :meth:`evaluate` evaluates the folder."""
        raise NotImplementedError('StreamedLVISMetric evaluates its folder '
                                  'in evaluate()')


# ---------------------------------------------------------------- setup
def prepare_prediction_folder(runner: Any, cfg: Any, checkpoint: str,
                              fresh: bool = False) -> Dict[str, int]:
    """Check or start the prediction folder and skip what it holds.

    Call it after ``Runner.from_cfg`` (every rank; the process group is up)
    and before ``runner.test()``. Rank 0 removes temporaries of killed
    writes, reads the manifest and compares its identity with this test's
    (:func:`prediction_identity`): the same, the images it holds are
    skipped; none, the folder is started; another, the test is refused
    (``fresh=True`` deletes the old predictions instead). Every rank then
    gives the predicted images to its :class:`SkipPredictedSampler`.

    Returns:
        dict: ``images`` (the dataset's), ``predicted`` (already in the
        folder), ``skipped_here`` (of this rank's share).

    Raises:
        PredictionStoreError: When the folder holds predictions of another
            checkpoint, config or dataset (each difference named), or files
            that cannot be attributed; on every rank.
    """
    logger = MMLogger.get_current_instance()
    metric = runner.test_loop.evaluator.metrics[0]
    sampler = runner.test_loop.dataloader.sampler
    if not isinstance(metric, StreamedLVISMetric) or not isinstance(
            sampler, SkipPredictedSampler):
        raise TypeError('prepare_prediction_folder needs a config made by '
                        'setup_streamed_test')
    folder = metric.folder
    num_images = len(runner.test_loop.dataloader.dataset)
    payload: Dict[str, Any] = {}
    if is_main_process():
        try:
            payload = _prepare_on_rank0(folder, cfg, checkpoint, fresh,
                                        num_images, logger)
        except (PredictionStoreError, OSError) as e:
            payload = {'error': str(e)}
    out = [payload]
    broadcast_object_list(out)
    payload = out[0]
    if 'error' in payload:
        raise PredictionStoreError(payload['error'])
    done = payload['done']
    here = sampler.skip_images(done) if len(done) else 0
    left = num_images - len(done)
    logger.info(
        f'Predictions are saved to {folder} every {metric.chunk_images} '
        f'images per rank. ' + (
            f'Continuing: {len(done)} of {num_images} images were predicted '
            f'before ({here} of them in this rank\'s share), {left} are left.'
            if len(done) else f'{num_images} images to predict.'))
    return {'images': num_images, 'predicted': int(len(done)),
            'skipped_here': int(here)}


def _prepare_on_rank0(folder: str, cfg: Any, checkpoint: str, fresh: bool,
                      num_images: int, logger: MMLogger) -> Dict[str, Any]:
    removed = remove_stale_temporaries(folder)
    if removed:
        logger.info(f'removed {len(removed)} unfinished chunk write(s) of a '
                    f'killed test in {folder}')
    identity = prediction_identity(cfg, checkpoint)
    manifest = store.read_manifest(folder)
    chunks = store.chunk_paths(folder)
    if fresh and (manifest is not None or chunks):
        n = store.clear(folder)
        logger.warning(f'--fresh-predictions: deleted the {n} prediction '
                       f'chunks of {folder}')
        manifest, chunks = None, []
    if manifest is not None and not chunks:
        manifest = None  # nothing predicted yet: nothing to protect
    if manifest is None and chunks:
        raise PredictionStoreError(
            f'{folder} holds {len(chunks)} prediction chunks but no '
            f'{store.MANIFEST}, so they cannot be attributed to a '
            'checkpoint: pass --fresh-predictions to delete them, or '
            '--predictions-dir to save elsewhere')
    if manifest is not None:
        diffs = store.identity_differences(manifest['identity'], identity)
        if manifest.get('num_images') != num_images:
            diffs.append(f'dataset length: saved for '
                         f'{manifest.get("num_images")} images, now '
                         f'{num_images}')
        if diffs:
            raise PredictionStoreError(
                f'{folder} holds predictions of another test:\n  ' +
                '\n  '.join(diffs) + '\nPass --fresh-predictions to delete '
                'them and predict again, or --predictions-dir to save these '
                'elsewhere.')
    else:
        store.write_manifest(folder, identity, num_images)
    return {'done': store.image_ids(folder)}


# ---------------------------------------------------------------- evaluation
def evaluate_folder(folder: str, metric: LVISMetric,
                    expected_images: Optional[int] = None) -> dict:
    """Evaluate the saved predictions of ``folder`` with ``metric``, in this
    process (one chunk in memory at a time, through the metric's own
    ``process``, so every check and protocol applies as in a live test).

    Args:
        folder (str): A prediction folder.
        metric (LVISMetric): The metric, fresh (nothing processed).
        expected_images (int, optional): How many images the folder must
            hold; defaults to the manifest's ``num_images``.

    Returns:
        dict: The metric's results.

    Raises:
        PredictionStoreError: When the folder has no manifest or holds
            fewer (or more) images than expected.
    """
    logger = MMLogger.get_current_instance()
    manifest = store.read_manifest(folder)
    if manifest is None:
        raise PredictionStoreError(
            f'{folder} has no {store.MANIFEST}: not a prediction folder of '
            'tools/test.py')
    if expected_images is None:
        expected_images = manifest.get('num_images')
    held = store.image_ids(folder)
    if expected_images is not None and held.shape[0] != expected_images:
        raise PredictionStoreError(
            f'{folder} holds predictions for {held.shape[0]} images; the '
            f'test set has {expected_images}. Rerun tools/test.py with the '
            'same arguments to predict the rest.')
    paths = store.chunk_paths(folder)
    progress = Progress('evaluating saved predictions: chunk',
                        max(len(paths), 1), logger,
                        interval=max(1, len(paths) // 10))
    stats: Dict[str, int] = {}
    for records in store.iter_chunks(folder, stats):
        metric.process(None, [store.record_sample(r) for r in records])
        progress.step()
    if stats['duplicates']:
        logger.info(f'{stats["duplicates"]} images were saved twice (the '
                    'distributed sampler pads the last batch with images '
                    'of other ranks); each is evaluated once')
    logger.info(f'evaluating {stats["images"]} images of saved predictions '
                f'from {folder} ({stats["chunks"]} chunks)')
    return metric.evaluate_here()


def offline_metric(cfg: Any, folder: str,
                   protocols: Optional[Sequence[str]] = None,
                   metrics: Optional[Sequence[str]] = None,
                   outfile_prefix: Optional[str] = None) -> LVISMetric:
    """The config's test ``LVISMetric`` set up to evaluate ``folder``
    (``tools/evaluate_predictions.py``).

    Args:
        cfg (Config): The config the test ran (its ``test_evaluator``: the
            ground truth file, backend, limits).
        folder (str): The prediction folder.
        protocols (list[str], optional): Defaults to every protocol
            (``standard``, ``fixed``, ``pooled``).
        metrics (list[str], optional): Defaults to ``bbox``, plus ``segm``
            and ``boundary`` when the predictions carry masks.
        outfile_prefix (str, optional): Where the metric writes its files
            (results files, per-class file); None writes none.
    """
    reason = why_not_streamed(cfg)
    if reason is not None:
        raise ValueError(f'cannot evaluate saved predictions: {reason}')
    ev = cfg.test_evaluator
    if isinstance(ev, (list, tuple)):
        ev = ev[0]
    if metrics is None:
        metrics = ['bbox'] + (['segm', 'boundary']
                              if store.holds_masks(folder) else [])
    ev = dict(_plain(ev), protocol=list(protocols or PROTOCOLS),
              metric=list(metrics), outfile_prefix=outfile_prefix)
    return METRICS.build(ev)
