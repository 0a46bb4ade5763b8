"""Reading and checking an LVIS-format annotation file before mmdet parses it.

mmdet's LVIS datasets meet a bad file with raw errors (a ``JSONDecodeError``
without the file's name, ``KeyError: 'bbox'``, ``too many values to unpack``)
or, worse, skip what they cannot use without a word (annotations of an image
that is not in ``images`` or of a category that is not in ``categories``).
:func:`load_annotation_file` (its text, then its JSON),
:func:`check_categories` and :func:`check_images` refuse such a file up
front, naming the file, what is wrong, and where, with
:class:`AnnotationFileError`; the annotations themselves are checked record
by record as they are decoded
(:func:`mmlongtail.datasets.lvis_records.annotation_problem`, under the
dataset's ``bad_annotation`` policy).
:func:`check_categories_against` refuses a file whose categories are not the
ones a config's class list assumes (an LVIS v0.5 file in an LVIS v1 config).

What every record needs (the keys mmdet's ``LVISV1Dataset`` reads)::

    images:      id, coco_url, height, width
    annotations: id, image_id, category_id, bbox ([x, y, w, h]), area
    categories:  id, name
"""
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.fileio import get_local_path

from .category_stats import load_category_stats

#: The keys mmdet's LVISV1Dataset reads from each record of a file.
REQUIRED_KEYS: Dict[str, Tuple[str, ...]] = {
    'images': ('id', 'coco_url', 'height', 'width'),
    'annotations': ('id', 'image_id', 'category_id', 'bbox', 'area'),
    'categories': ('id', 'name'),
}

#: Category counts of other well-known datasets, to say what a file looks
#: like when its categories are not the expected ones.
KNOWN_CATEGORY_COUNTS: Dict[int, str] = {
    1230: 'LVIS v0.5',
    80: 'COCO',
}

#: For packaged statistics names: what to call them in messages, and where
#: their annotation files come from.
REFERENCE_NAMES: Dict[str, Tuple[str, str]] = {
    name: ('LVIS v1', 'lvis_v1_train.json / lvis_v1_val.json from '
           'https://www.lvisdataset.org/dataset')
    for name in ('lvis_v1', 'lvis_v1_train')
}

#: How many offending records a message names.
_SHOW = 3


class AnnotationFileError(ValueError):
    """A bad annotation file, or a bad record in one.

    The one error type of this module and of the LVIS-format datasets
    (:mod:`mmlongtail.datasets.lvis_format`): the message names the file,
    what is wrong and, for records, the first offending image and annotation
    ids. It subclasses ``ValueError``, so ``except ValueError`` still works.

    Attributes:
        ann_file (str): The file.
        counts (dict[str, int]): For bad annotations: how many of each kind
            (see :data:`mmlongtail.datasets.lvis_records.BAD_KINDS`); empty
            for problems of the file as a whole.
    """

    def __init__(self, message: str, ann_file: str = '',
                 counts: Optional[Dict[str, int]] = None) -> None:
        super().__init__(message)
        self.ann_file = ann_file
        self.counts = dict(counts or {})


def load_annotation_file(ann_file: str,
                         backend_args: Optional[dict] = None,
                         object_hook: Optional[Callable[[dict], Any]] = None
                         ) -> dict:
    """Read an annotation file as JSON, refusing a bad one by name
    (:func:`read_annotation_text`, then :func:`decode_annotation_text`).

    Args:
        ann_file (str): Path (or backend URI) of the file.
        backend_args (dict, optional): mmengine file backend arguments.
        object_hook (callable, optional): ``json``'s ``object_hook``.

    Returns:
        dict: The decoded top-level object.

    Raises:
        FileNotFoundError: If the file does not exist.
        AnnotationFileError: If it is not UTF-8 text, is empty, is truncated
            or otherwise not valid JSON, or its top level is not an object.
            The message names the file and where it broke.
    """
    return decode_annotation_text(
        read_annotation_text(ann_file, backend_args), ann_file, object_hook)


def read_annotation_text(ann_file: str,
                         backend_args: Optional[dict] = None) -> str:
    """The text of an annotation file, refusing one that is not UTF-8 (a
    zipped file, say) or is empty, by name.

    Raises:
        FileNotFoundError: If the file does not exist.
        AnnotationFileError: Naming the file and the problem.
    """
    with get_local_path(ann_file, backend_args=backend_args) as local_path:
        try:
            with open(local_path, encoding='utf-8') as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise AnnotationFileError(
                f'annotation file {ann_file} is not UTF-8 text (byte '
                f'{e.start} is {e.object[e.start:e.start + 1]!r}): is it '
                'still compressed? LVIS ships its annotations as '
                '.json.zip; unzip it and point ann_file at the .json '
                'inside.', ann_file) from e
    if not text.strip():
        raise AnnotationFileError(
            f'annotation file {ann_file} is empty: download or unpack it '
            'again.', ann_file)
    return text


def decode_annotation_text(text: str,
                           ann_file: str,
                           object_hook: Optional[Callable[[dict], Any]] = None
                           ) -> dict:
    """Decode an annotation file's text as JSON, naming the file and where
    it broke if it is truncated or not JSON.

    Args:
        text (str): The file's text (:func:`read_annotation_text`).
        ann_file (str): The file's path, for messages.
        object_hook (callable, optional): ``json``'s ``object_hook``: called
            with every decoded JSON object, innermost first, its result used
            in the object's place (how
            :mod:`mmlongtail.datasets.lvis_records` stores annotations
            compactly while the file is decoded).

    Returns:
        dict: The decoded top-level object.

    Raises:
        AnnotationFileError: Naming the file and the problem.
    """
    try:
        data = json.loads(text, object_hook=object_hook)
    except json.JSONDecodeError as e:
        body = text.strip()
        closer = {'{': '}', '[': ']'}.get(body[0])
        if (e.pos >= len(body) or e.msg.startswith('Unterminated string')
                or (closer is not None and body[-1] != closer)):
            raise AnnotationFileError(
                f'annotation file {ann_file} is truncated: its JSON ends in '
                f'the middle after {len(text)} characters ({e.msg} at line '
                f'{e.lineno}, column {e.colno}). It was probably cut short by '
                'an interrupted download, copy or write: download or unpack '
                'it again.', ann_file) from e
        raise AnnotationFileError(
            f'annotation file {ann_file} is not valid JSON: {e.msg} at line '
            f'{e.lineno}, column {e.colno} (character {e.pos} of '
            f'{len(text)}).', ann_file) from e
    if not isinstance(data, dict):
        raise AnnotationFileError(
            f'malformed annotation file {ann_file}: its top level is a JSON '
            f'{type(data).__name__}, not an object with '
            f"{', '.join(repr(k) for k in REQUIRED_KEYS)}.", ann_file)
    return data


def require_list(data: dict, key: str, ann_file: str) -> list:
    """``data[key]``, refusing a file where it is missing or not a list."""
    recs = data.get(key)
    if not isinstance(recs, list):
        have = sorted(data)[:10]
        raise AnnotationFileError(
            f"malformed annotation file {ann_file}: missing or not a list: "
            f"{key!r} (top-level keys: {have}). An LVIS-format file has "
            f"'images', 'annotations' and 'categories' lists.")
    return recs


def _missing_keys(recs: list, key: str, ann_file: str, what: str) -> None:
    """Refuse records that are not objects or lack a required key."""
    needed = REQUIRED_KEYS[key]
    for i, rec in enumerate(recs):
        if not isinstance(rec, dict):
            raise AnnotationFileError(
                f'malformed annotation file {ann_file}: {what} #{i} in '
                f'{key!r} is a JSON {type(rec).__name__}, not an object.')
        for k in needed:
            if k not in rec:
                rid = f'{what} id {rec["id"]}' if 'id' in rec else (
                    f'{what} #{i} in {key!r}')
                raise AnnotationFileError(
                    f'malformed annotation file {ann_file}: {rid} has no '
                    f"{k!r}; every {what} needs "
                    f"{', '.join(repr(n) for n in needed)}.")


def unique_ids(ids: Sequence, ann_file: str, what: str) -> set:
    """The set of ``ids``, refusing repeats by name (lvis-api's index would
    keep one record per id and drop the others silently).

    Args:
        ids (Sequence): The ids of one list of the file, in file order.
        ann_file (str): The file's path, for messages.
        what (str): ``'image'``, ``'category'`` or ``'annotation'``.

    Returns:
        set: The ids.
    """
    bad = [x for x in ids if type(x) is not int]
    if bad:
        raise AnnotationFileError(
            f'malformed annotation file {ann_file}: {len(bad)} {what} ids '
            f'are not integers (first: {bad[:_SHOW]!r:.120}); every {what} '
            'needs an integer id.', ann_file)
    seen = set(ids)
    if len(seen) != len(ids):
        dup, once = [], set()
        for x in ids:
            if x in once and len(dup) < _SHOW * 3:
                dup.append(x)
            once.add(x)
        raise AnnotationFileError(
            f'malformed annotation file {ann_file}: duplicate {what} ids '
            f'{sorted(set(dup))} ({len(ids) - len(seen)} repeats); each '
            f'{what} needs its own id.')
    return seen


def check_categories(data: dict,
                     ann_file: str,
                     reference: Optional[str] = None,
                     dataset: str = 'this dataset') -> List:
    """Check the file's ``categories`` and return their ids, in file order.

    The list exists and is not empty; each category is an object with
    ``id`` and ``name``; ids are unique and sorted (labels are positions in
    id order); with ``reference``, the categories equal it
    (:func:`check_categories_against`).

    Args:
        data (dict): The decoded file.
        ann_file (str): The file's path, for messages.
        reference (str, optional): Packaged statistics name whose categories
            the file must have; ``None``: any.
        dataset (str): The dataset class that reads the file, for messages.

    Returns:
        list: The category ids, ascending.

    Raises:
        AnnotationFileError: Naming the file and the problem.
    """
    cats = require_list(data, 'categories', ann_file)
    if not cats:
        raise AnnotationFileError(f'malformed annotation file {ann_file}: '
                                  "missing or empty 'categories'", ann_file)
    _missing_keys(cats, 'categories', ann_file, 'category')
    cat_list = [c['id'] for c in cats]
    unique_ids(cat_list, ann_file, 'category')
    try:
        in_order = cat_list == sorted(cat_list)
    except TypeError:  # ids of mixed types
        in_order = False
    if not in_order:
        raise AnnotationFileError(
            f'malformed annotation file {ann_file}: categories must be '
            'sorted by id (labels are positions in id order)', ann_file)
    if reference is not None:
        check_categories_against(cats, reference, ann_file, dataset)
    return cat_list


def check_images(data: dict, ann_file: str) -> set:
    """Check that ``images`` is a list of objects with the keys of
    :data:`REQUIRED_KEYS` and unique ids; return the ids.

    Raises:
        AnnotationFileError: Naming the file, the image and the problem.
    """
    images = require_list(data, 'images', ann_file)
    _missing_keys(images, 'images', ann_file, 'image')
    return unique_ids([im['id'] for im in images], ann_file, 'image')


def adopt_file_classes(metainfo: dict, names: Sequence[str],
                       ann_file: str) -> None:
    """Take a dataset's class names from its annotation file (``names``, in
    label order) unless its metainfo already gives them; then the two must
    have as many classes.

    Raises:
        ValueError: If the metainfo's classes and the file's categories
            differ in number.
    """
    if not metainfo.get('classes'):
        metainfo['classes'] = names
    elif len(metainfo['classes']) != len(names):
        raise ValueError(
            f'metainfo gives {len(metainfo["classes"])} classes '
            f'but {ann_file} has {len(names)} categories')


def check_categories_against(cats: Sequence[dict], reference: str,
                             ann_file: str, dataset: str) -> None:
    """Refuse a file whose categories (ids and names, in id order) are not
    those of packaged category statistics.

    Args:
        cats (list[dict]): The file's ``categories``, sorted by id.
        reference (str): A packaged statistics name of
            :data:`mmlongtail.datasets.category_stats.PACKAGED_STATS`
            (``'lvis_v1'``), the owner of the expected ids and names.
        ann_file (str): The file's path, for messages.
        dataset (str): The dataset class that expects them, for messages.

    Raises:
        ValueError: Naming the file, its category count (and the dataset that
            count suggests), the first id or name that differs, and the two
            fixes: the right file, or ``mmlongtail.LVISFormatDataset``, which
            takes the classes from the file (with a config snippet).
    """
    ref = load_category_stats(reference)
    ref_label, files = REFERENCE_NAMES.get(reference, (repr(reference), ''))
    ours = [(c['id'], c['name']) for c in cats]
    theirs = list(zip(ref.cat_ids.tolist(), ref.names))
    if ours == theirs:
        return
    n = len(ours)
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                 min(n, len(theirs)))
    if first < min(n, len(theirs)):
        (fid, fname), (rid, rname) = ours[first], theirs[first]
        diff = (f'the first difference is category #{first}: id {fid} '
                f'{fname!r} here, id {rid} {rname!r} in {ref_label}')
    elif n > len(theirs):
        fid, fname = ours[first]
        diff = (f'its categories from #{first} on (id {fid} {fname!r}, ...) '
                f'are not in {ref_label}')
    else:
        rid, rname = theirs[first]
        diff = (f'it lacks {ref_label} categories from #{first} on (id {rid} '
                f'{rname!r}, ...)')
    hint = f' ({files})' if files else ''
    looks = KNOWN_CATEGORY_COUNTS.get(n)
    if n == ref.num_classes:
        found = (f'{n} categories, as many as {ref_label}, but not the same '
                 'ones')
    elif looks:
        found = (f'{n} categories, which looks like {looks} ({ref_label} '
                 f'has {ref.num_classes})')
    else:
        found = f'{n} categories ({ref_label} has {ref.num_classes})'
    raise AnnotationFileError(
        f'{ann_file} is not an {ref_label} annotation file: it has {found}; '
        f'{diff}. {dataset} uses '
        f"{ref_label}'s class list, so training or evaluating on this file "
        'would stop later with a label out of range, or run under the wrong '
        f'class names. Either point ann_file at the {ref_label} file{hint}, '
        "or train on this file's own categories with mmlongtail's "
        'LVIS-format dataset:\n'
        "    train_dataloader = dict(dataset=dict(type="
        "'mmlongtail.LVISFormatDataset'))\n"
        "    val_dataloader = dict(dataset=dict(type="
        "'mmlongtail.LVISFormatDataset'))\n"
        '    test_dataloader = val_dataloader\n'
        f'with num_classes = {n} in the model (every head and loss), and '
        f"category statistics read from this file, not {reference!r}.")
