"""The one module that uses faster-coco-eval's private internals.

mmlongtail's fast LVIS backend runs faster-coco-eval's C++ matcher category by
category over only the images where each category can count (see
:mod:`mmlongtail.evaluation.lvis_backends`). That needs more than the public
``COCOeval_faster.evaluate()``:

* ``COCOeval_faster._prepare()`` (fills the C++ datasets and applies LVIS's
  federated rules) and the ``_nonempty_iou_pairs`` attribute it sets;
* ``faster_eval_api_cpp.COCOevalEvaluateAccumulate`` (match + accumulate one
  category), ``faster_eval_api_cpp.COCOevalEvaluateImages`` and the pickled
  state of ``faster_eval_api_cpp.ImageEvaluation`` (per-detection matches, for
  pooled AP);
* the ``print_function``, ``lvis_style`` and ``boundary_dilation_ratio``
  constructor arguments.

They are not a stable API: 1.7.x has no ``_nonempty_iou_pairs`` and 1.6.0 no
``print_function``. Everything that touches them lives here, behind
:func:`require`, which the backend calls before use and which raises
:class:`FasterCocoEvalUnsupported` naming the installed version, the missing
internal and the tested window, instead of an ``AttributeError`` deep inside.
``tests/evaluation/test_faster_coco.py`` runs the same check, so a new
faster-coco-eval that moves any of them fails the suite loudly.
"""
import copy
import inspect
from typing import Dict, List, Optional, Tuple

import numpy as np

from mmlongtail.version import FASTER_COCO_EVAL_REQUIREMENT
from .lvis_eval_output import IOU_TYPES


class FasterCocoEvalUnsupported(RuntimeError):
    """The installed faster-coco-eval lacks an internal the fast backend
    uses."""


def window_text() -> str:
    """The tested window as a pip requirement (``mmlongtail/version.py``'s
    ``FASTER_COCO_EVAL_REQUIREMENT``, the one place it is declared)."""
    return FASTER_COCO_EVAL_REQUIREMENT


def installed_version() -> Optional[str]:
    """The installed faster-coco-eval version, or None if it is missing."""
    try:
        from faster_coco_eval.version import __version__
    except ImportError:
        return None
    return str(__version__)


def in_tested_window(version: str) -> bool:
    """Whether ``version`` satisfies :func:`window_text`. Outside it the
    internals are still probed; if they are all there the backend runs with
    a warning."""
    from packaging.requirements import Requirement
    return Requirement(FASTER_COCO_EVAL_REQUIREMENT).specifier.contains(
        version, prereleases=True)


def _static_checks() -> List[str]:
    """Names of the internals missing from the installed package (without
    running an evaluation)."""
    try:
        import faster_coco_eval.faster_eval_api_cpp as _C
        from faster_coco_eval import COCO, COCOeval_faster
        from faster_coco_eval.core.cocoeval import COCOeval
    except ImportError as e:
        return [f'faster_coco_eval itself ({e})']
    missing = []
    for owner, name, obj in (
            ('faster_eval_api_cpp', 'COCOevalEvaluateAccumulate', _C),
            ('faster_eval_api_cpp', 'COCOevalEvaluateImages', _C),
            ('faster_eval_api_cpp', 'Dataset', _C),
            ('faster_eval_api_cpp', 'ImageEvaluation', _C),
            ('COCOeval_faster', '_prepare', COCOeval_faster),
            ('COCOeval_faster', 'computeIoU', COCOeval_faster),
    ):
        if not hasattr(obj, name):
            missing.append(f'{owner}.{name}')
    if hasattr(_C, 'ImageEvaluation') and not hasattr(_C.ImageEvaluation,
                                                      '__getstate__'):
        missing.append('faster_eval_api_cpp.ImageEvaluation.__getstate__')
    for cls, arg in ((COCO, 'print_function'), (COCOeval, 'print_function'),
                     (COCOeval, 'lvis_style'),
                     (COCOeval, 'boundary_dilation_ratio')):
        if arg not in inspect.signature(cls.__init__).parameters:
            missing.append(f'{cls.__name__}({arg}=...)')
    return missing


def _probe() -> List[str]:
    """Run the subclass on one image and report what did not behave as this
    module expects (empty when all is well).

    One ground-truth box and two detections (an exact one scored 0.9 and a
    far one scored 0.8): precision 1 at every recall, so AP = 1, and the
    per-detection record says (TP, FP).
    """
    from faster_coco_eval import COCO
    gt = COCO({
        'images': [dict(id=1, height=10, width=10, neg_category_ids=[],
                        not_exhaustive_category_ids=[])],
        'annotations': [dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 4,
                                                                    4],
                             area=16.0, iscrowd=0)],
        'categories': [dict(id=1, name='a', frequency='f')],
    }, print_function=silent)
    dt = COCO(print_function=silent)
    dt.dataset = {
        'images': gt.dataset['images'],
        'categories': gt.dataset['categories'],
        'annotations': [
            dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 4, 4],
                 score=0.9, area=16.0, iscrowd=0),
            dict(id=2, image_id=1, category_id=1, bbox=[6, 6, 3, 3],
                 score=0.8, area=9.0, iscrowd=0),
        ]
    }
    dt.createIndex()
    ev = faster_lvis_eval_class()(
        gt, dt, 'bbox', lvis_style=True, print_function=silent)
    ev.params.maxDets = [300]
    ev.images_per_category = {1: [1]}
    ev.record_categories = [1]
    try:
        ev.evaluate()
    except (FasterCocoEvalUnsupported, AttributeError, TypeError, KeyError,
            ValueError, IndexError, RuntimeError) as e:
        return [f'a one-image evaluation failed: {type(e).__name__}: {e}']
    problems = []
    p = ev.eval['precision']
    if p.shape != (10, 101, 1, 4, 1) or not np.allclose(p[:, :, 0, 0, 0], 1):
        problems.append('COCOevalEvaluateAccumulate gives an unexpected '
                        f'precision array (shape {p.shape})')
    rec = ev.records.get(1)
    if rec is None or len(rec) != 1 or rec[0][0] != 1:
        problems.append('COCOevalEvaluateImages gives unexpected records')
    else:
        scores, tp, ig, n_gt = rec[0][1]
        if not (np.allclose(scores, [0.9, 0.8]) and tp[:, 0].all()
                and not tp[:, 1].any() and not ig.any() and n_gt == 1):
            problems.append('ImageEvaluation state has an unexpected layout')
    return problems


_CHECKED: Optional[List[str]] = None


def missing_internals() -> List[str]:
    """Everything the fast backend needs and the installed faster-coco-eval
    does not provide (empty when all is well). Static checks first; if they
    pass, a one-image evaluation probes what only shows at run time."""
    missing = _static_checks()
    if missing:
        return missing
    return _probe()


def require() -> None:
    """Raise :class:`FasterCocoEvalUnsupported` unless the installed
    faster-coco-eval provides every internal the fast backend uses.

    Checked once per process. A version outside :func:`window_text` whose
    internals are all present gets a warning, not an error.
    """
    global _CHECKED
    if _CHECKED is None:
        _CHECKED = missing_internals()
        version = installed_version()
        if not _CHECKED and version and not in_tested_window(version):
            from mmengine.logging import MMLogger
            MMLogger.get_current_instance().warning(
                f'faster-coco-eval {version} is outside the tested window '
                f'{window_text()}; its internals passed the probe, but '
                "compare with backend='lvis' before trusting the numbers.")
    if _CHECKED:
        raise FasterCocoEvalUnsupported(
            f'LVISMetric(backend=\'fast\') needs faster-coco-eval internals '
            f'that faster-coco-eval {installed_version()} does not provide: '
            f'{"; ".join(_CHECKED)}. Install a version in the tested window '
            f'(pip install "{window_text()}") or use backend=\'lvis\'.')


def silent(*args, **kwargs) -> None:
    """A print function that prints nothing."""


#: A pair record: ``(scores (D,), tp (T, D) bool, ignored (T, D) bool,
#: num_gt)`` of one (image, category) pair, detections in the evaluator's
#: order (score descending, ties in input order); ``num_gt`` counts the
#: pair's ground truth that is not ignored.
PairRecord = Tuple[np.ndarray, np.ndarray, np.ndarray, int]


def _record_from_state(state: tuple, num_thrs: int) -> PairRecord:
    dt_matches, _, dt_scores, gt_ignores, dt_ignores, _ = state
    scores = np.asarray(dt_scores, np.float64)
    d = scores.shape[0]
    matched = np.asarray(dt_matches, np.int64).reshape(num_thrs, d) > 0
    ignored = np.asarray(dt_ignores, bool).reshape(num_thrs, d)
    n_gt = int(len(gt_ignores) - sum(gt_ignores))
    return scores, matched & ~ignored, ignored, n_gt


def faster_lvis_eval_class():
    """``COCOeval_faster`` with a leaner ``evaluate`` (built on first use so
    importing this module does not import faster-coco-eval)."""
    global _FASTER_CLS
    if _FASTER_CLS is not None:
        return _FASTER_CLS
    import faster_coco_eval.faster_eval_api_cpp as _C
    from faster_coco_eval import COCOeval_faster

    class FasterLVISEval(COCOeval_faster):
        """faster-coco-eval's evaluator, run category by category over the
        images where each category can count.

        Set ``images_per_category`` (``{category id: [image ids]}``: the
        images where the category is annotated or has a kept detection)
        before :meth:`evaluate`. Every other (image, category) pair has
        neither ground truth nor (federated-kept) detections and adds nothing
        to that category's precision or recall, so evaluating each category
        over its own images gives LVIS's numbers while visiting a small
        fraction of the images x categories pairs the stock ``evaluate``
        visits. IoUs are computed only for pairs with both ground truth and
        detections.

        The preparation (``_prepare``, where faster-coco-eval applies the
        federated rules in ``lvis_style``), the IoUs (``computeIoU``) and the
        C++ matching and accumulation are faster-coco-eval's own.
        ``self.eval`` holds ``precision`` ``(T, R, K, A, M)`` and ``recall``
        ``(T, K, A, M)`` over ``params.catIds``.

        With ``record_categories`` set (category ids), :meth:`evaluate` also
        keeps, for area 'all', each evaluated pair's per-detection outcome in
        ``self.records``: ``{category id: [(image id, PairRecord), ...]}``
        in image id order (what pooled AP accumulates).
        """

        images_per_category: Dict[int, List[int]] = {}
        record_categories: List[int] = []

        def prepare(self) -> None:
            """faster-coco-eval's preparation alone (``_prepare``: the C++
            datasets and LVIS's federated rules), which :meth:`evaluate`
            starts with; for timing it apart
            (``tools/benchmark_lvis_eval.py``)."""
            self._prepare()

        def evaluate(self) -> None:
            p = self.params
            if p.iouType not in IOU_TYPES or not p.useCats:
                raise ValueError('only category-aware bbox/segm/boundary '
                                 'evaluation')
            p.imgIds = sorted({int(i) for i in p.imgIds})
            p.catIds = sorted({int(c) for c in p.catIds}
                              | {int(c) for c in self.record_categories})
            p.maxDets = sorted(p.maxDets)
            self._prepare()
            pairs = getattr(self, '_nonempty_iou_pairs', None)
            if pairs is None:
                raise FasterCocoEvalUnsupported(
                    f'faster-coco-eval {installed_version()}: _prepare() '
                    'set no _nonempty_iou_pairs; install '
                    f'"{window_text()}"')
            computed = {(int(i), int(c)): self.computeIoU(i, c)
                        for i, c in pairs}
            self._paramsEval = copy.deepcopy(p)
            T, R = len(p.iouThrs), len(p.recThrs)
            A, M, K = len(p.areaRng), len(p.maxDets), len(p.catIds)
            precision = np.full((T, R, K, A, M), -1.0)
            recall = np.full((T, K, A, M), -1.0)
            empty: list = []
            record = set(int(c) for c in self.record_categories)
            self.records: Dict[int, list] = {}
            for k, c in enumerate(p.catIds):
                imgs = self.images_per_category.get(c)
                if not imgs:
                    continue
                ious = [[computed.get((i, c), empty)] for i in imgs]
                pc = copy.copy(self._paramsEval)
                pc.imgIds, pc.catIds = imgs, [c]
                out = _C.COCOevalEvaluateAccumulate(
                    pc, ious, self.gt_dataset, self.dt_dataset, imgs, [c],
                    True)
                precision[:, :, k] = out['precision'][:, :, 0]
                recall[:, k] = out['recall'][:, 0]
                if c in record:
                    evs = _C.COCOevalEvaluateImages(
                        p.areaRng[:1], p.maxDets[-1], p.iouThrs, ious,
                        self.gt_dataset, self.dt_dataset, imgs, [c], True)
                    self.records[c] = [
                        (i, _record_from_state(e.__getstate__(), T))
                        for i, e in zip(imgs, evs)
                    ]
            self.eval = {'precision': precision, 'recall': recall}

        def accumulate(self) -> None:
            self.matched = False  # evaluate() already accumulated

    _FASTER_CLS = FasterLVISEval
    return _FASTER_CLS


_FASTER_CLS = None
