"""A tiny LVIS case whose numbers are derived by hand, for the metric's and
the analysis's tests: ground truth exercising the federated fields, and
predictions with their bbox APs worked out in the docstring."""
from typing import Dict, List

import numpy as np


def tiny_federated_gt() -> dict:
    """Four 100x100 images, five categories (a: rare, b: common, c/d/e:
    frequent), exercising LVIS's federated fields.

    * image 1: a and c annotated; c is not exhaustively annotated;
    * image 2: b annotated;
    * image 3: e annotated;
    * image 4: no annotation; a and b verified absent (``neg_category_ids``).

    d has no ground truth anywhere.
    """
    cats = [
        dict(id=1, name='a', frequency='r', image_count=3, instance_count=3),
        dict(id=2, name='b', frequency='c', image_count=40,
             instance_count=50),
        dict(id=3, name='c', frequency='f', image_count=500,
             instance_count=900),
        dict(id=4, name='d', frequency='f', image_count=200,
             instance_count=300),
        dict(id=5, name='e', frequency='f', image_count=300,
             instance_count=400),
    ]

    def img(i: int, neg=(), nex=()) -> dict:
        return dict(
            id=i, height=100, width=100, neg_category_ids=list(neg),
            not_exhaustive_category_ids=list(nex))

    def ann(i: int, img_id: int, cat: int, box: list) -> dict:
        x, y, w, h = box
        return dict(
            id=i, image_id=img_id, category_id=cat, bbox=box, area=w * h,
            segmentation=[[x, y, x, y + h, x + w, y + h, x + w, y]])

    images = [img(1, nex=[3]), img(2), img(3), img(4, neg=[1, 2])]
    anns = [
        ann(1, 1, 1, [10, 10, 20, 20]),  # a
        ann(2, 1, 3, [50, 50, 30, 30]),  # c, not exhaustive in image 1
        ann(3, 2, 2, [5, 5, 40, 40]),  # b
        ann(4, 3, 5, [20, 20, 50, 50]),  # e
    ]
    return dict(images=images, annotations=anns, categories=cats)


def pred_rows(img_id: int, rows) -> Dict[str, np.ndarray]:
    """Predictions of one image from rows ``(x, y, w, h, score, label)``."""
    r = np.array(rows, np.float64).reshape(-1, 6)
    b = r[:, :4].copy()
    b[:, 2:] += b[:, :2]
    return dict(
        img_id=img_id,
        bboxes=b.astype(np.float32),
        scores=r[:, 4].astype(np.float32),
        labels=r[:, 5].astype(np.int64))


def tiny_federated_predictions() -> List[Dict[str, np.ndarray]]:
    """Predictions for :func:`tiny_federated_gt` and their LVIS bbox APs.

    * a: FP .99 (image 4, where a is negative), FP .95, TP .90: precision 1/3
      at recall 1 at every IoU threshold, AP = 1/3;
    * b: FP .70 (image 4, negative), TP .50: AP = 1/2;
    * c: TP .80; the unmatched .99 box is ignored (c not exhaustive in image
      1): AP = 1;
    * d: no ground truth, excluded (its detections are dropped: neither
      annotated nor negative in images 1 and 4);
    * e: 300 far boxes outscore the exact one, which the 300-per-image cut
      drops: AP = 0, AR = 0.

    So AP = (1/3 + 1/2 + 1 + 0) / 4, APr = 1/3, APc = 1/2, APf = 1/2,
    AR@300 = 3/4.
    """
    far = [80, 0, 10, 10]
    return [
        pred_rows(1, [
            [10, 10, 20, 20, .90, 0],
            far + [.95, 0],
            [50, 50, 30, 30, .80, 2],
            far + [.99, 2],
            far + [.97, 3],
        ]),
        pred_rows(2, [[5, 5, 40, 40, .50, 1]]),
        pred_rows(3, [far + [.6 + i * 1e-4, 4] for i in range(300)] +
                   [[20, 20, 50, 50, .10, 4]]),
        pred_rows(4, [far + [.99, 0], far + [.70, 1], far + [.98, 3]]),
    ]
