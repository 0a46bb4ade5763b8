"""``mmlongtail.LoadImageChecked``: mmcv's ``LoadImageFromFile`` that never
lets a corrupt image through.

Over 100k LVIS images a corrupt file is a certainty. What mmcv's loader does
with one depends on the file and the decoder, measured with this project's
environment (OpenCV 5.1, mmcv 2.1):

- a missing file: ``FileNotFoundError`` naming the path, no image id;
- an empty file: ``cv2.error`` (``!buf.empty()``), no path;
- random bytes, a text file, a truncated JPEG or PNG: the decoder returns
  ``None`` and mmcv *asserts* (``AssertionError: failed to load image``;
  skipped altogether under ``python -O``, which then fails later on ``None``);
- an image whose size differs from the annotation's ``width``/``height``:
  loaded, so boxes and masks land on the wrong pixels;
- with ``ignore_empty=True`` every failure above returns ``None``, which
  mmengine's ``BaseDataset.__getitem__`` silently replaces with another
  randomly drawn image.

Other decoders return a *partial* image for a truncated file without any
error (OpenCV 4 builds whose libjpeg only warns ``Premature end of JPEG
file``; Pillow with ``ImageFile.LOAD_TRUNCATED_IMAGES``), so the file's bytes
are checked here before decoding: a JPEG must hold its end-of-image marker
after the scan data, a PNG its ``IEND`` chunk.

Each of these cases is, by the transform's ``bad_image`` policy, either
refused with :class:`BadImageError` naming the path, the image id and what
was found (``'error'``, the default), or skipped (``'skip'``): the transform
returns ``None``, which mmengine's training datasets answer by drawing
another image at random, and the skip is counted and logged (MMLogger,
warning, with the path and the running count). The count lives in shared
memory (:class:`BadImageCount`), so the skips of every dataloader worker add
up in the process that built the dataset, where
``mmlongtail.BadImageReportHook`` reports them each epoch.
"""
import multiprocessing
from typing import Dict, Optional

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmcv.image.io import supported_backends
from mmcv.transforms import LoadImageFromFile
from mmengine.logging import MMLogger
from torch.utils.data import get_worker_info

from mmlongtail.registry import TRANSFORMS

#: What ``bad_image`` may be.
POLICIES = ('error', 'skip')
#: The kinds of bad image, in the order :class:`BadImageCount` keeps them.
KINDS = ('missing', 'unreadable', 'empty', 'truncated', 'undecodable',
         'size_mismatch')

_JPEG_SOI = b'\xff\xd8'
_JPEG_EOI = b'\xff\xd9'
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG markers without a length field: TEM and RST0-RST7
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])
_JPEG_SOS = 0xDA


class BadImageError(ValueError):
    """An image file that is missing, unreadable, empty, truncated, not an
    image, or not of the size its annotation gives.

    Raised inside a dataloader worker, it reaches the main process as a
    ``BadImageError`` with the same message (torch re-raises worker
    exceptions by type and message), so the message carries everything.

    Args:
        message (str): Names the path, the image id and what was found.
        path (str, optional): The image's path.
        img_id (int, optional): The image's id in the annotation file.
        kind (str, optional): One of :data:`KINDS`.
    """

    def __init__(self,
                 message: str,
                 *,
                 path: Optional[str] = None,
                 img_id: Optional[int] = None,
                 kind: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path
        self.img_id = img_id
        self.kind = kind


class BadImageCount:
    """Counts of skipped images by kind, shared by the process that makes it
    and the dataloader workers it starts afterwards (forked, spawned or from
    a fork server).

    The counts sit in shared memory, one row per process (the maker, then
    dataloader worker ``w`` in row ``w + 1``), so each row has one writer
    and no lock is needed (a lock made in one multiprocessing context cannot
    be passed to a process of another). Reads sum the rows. A deep copy
    (mmengine's ``BaseDataset.get_subset``, say) shares the same counts.

    Args:
        max_workers (int): Rows for dataloader workers; workers beyond share
            rows (and could then lose a count to a race). Defaults to 256.
    """

    def __init__(self, max_workers: int = 256) -> None:
        self._rows = max_workers + 1
        self._counts = multiprocessing.RawArray('q', self._rows * len(KINDS))

    def add(self, kind: str) -> int:
        """Count one skipped image of ``kind`` in this process's row.

        Returns:
            int: The total count after this one, over every process.
        """
        worker = get_worker_info()
        row = 0 if worker is None else 1 + worker.id % (self._rows - 1)
        self._counts[row * len(KINDS) + KINDS.index(kind)] += 1
        return self.total

    @property
    def total(self) -> int:
        """Skipped images of every kind."""
        return sum(self._counts)

    def by_kind(self) -> Dict[str, int]:
        """Skipped images per kind, every kind of :data:`KINDS` included."""
        flat = self._counts[:]
        n = len(KINDS)
        return {k: sum(flat[i::n]) for i, k in enumerate(KINDS)}

    def __deepcopy__(self, memo: dict) -> 'BadImageCount':
        return self


def _jpeg_truncation(data: bytes) -> Optional[str]:
    """Why a JPEG stops before its image ends, or ``None`` if it does not.

    Walks the header segments by their lengths (an EXIF thumbnail, with its
    own end-of-image marker, lies inside one) to the first start-of-scan,
    then looks for the end-of-image marker after it: within scan data a
    0xFF byte is always followed by 0x00 or a restart marker, so 0xFFD9
    there is the real end. Bytes after it (some cameras append data) are
    allowed. Stray bytes between segments are passed over as libjpeg does.
    """
    pos, size = 2, len(data)
    while True:
        pos = data.find(b'\xff', pos)
        if pos < 0 or pos + 1 >= size:
            return 'it ends in its header, before any image data'
        marker = data[pos + 1]
        if marker in (0xFF, 0x00):  # fill byte, or a stray stuffed byte
            pos += 1
            continue
        if marker == _JPEG_EOI[1]:
            return None  # no image at all: the decoder refuses it
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > size:
            return 'it ends in its header, before any image data'
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], 'big')
        if end > size:
            return (f'it ends inside the header segment 0xFF{marker:02X} '
                    f'at byte {pos}')
        if marker == _JPEG_SOS:
            # from the end: the marker is there in a complete file (a
            # forward search over the scan data takes ~1 ms per 170 KB)
            if data.rfind(_JPEG_EOI, end) < 0:
                return ('no end-of-image marker (0xFFD9) follows its image '
                        'data: the file stops part-way through the image')
            return None
        pos = end


def _png_truncation(data: bytes) -> Optional[str]:
    """Why a PNG stops before its ``IEND`` chunk, or ``None`` if it does
    not (chunks are walked by their lengths)."""
    pos, size = len(_PNG_SIGNATURE), len(data)
    while pos + 8 <= size:
        length = int.from_bytes(data[pos:pos + 4], 'big')
        kind = data[pos + 4:pos + 8]
        if pos + 12 + length > size:
            return (f'it ends inside its {kind.decode("latin-1")!r} chunk '
                    f'at byte {pos}')
        if kind == b'IEND':
            return None
        pos += 12 + length
    return 'it ends before its IEND chunk'


def truncation(data: bytes) -> Optional[str]:
    """What shows that an image file's bytes were cut short.

    Args:
        data (bytes): The file's bytes.

    Returns:
        str | None: The JPEG or PNG format and why it is truncated; ``None``
        for a complete JPEG or PNG, and for any other format (its decoder
        is trusted to refuse a truncated file).
    """
    for fmt, signature, walk in (('JPEG', _JPEG_SOI, _jpeg_truncation),
                                 ('PNG', _PNG_SIGNATURE, _png_truncation)):
        if data.startswith(signature):
            why = walk(data)
            return None if why is None else f'truncated {fmt}: {why}'
        if data and signature.startswith(data):
            return f'truncated {fmt}: it ends inside its signature'
    return None


_FIX = ('Restore the file from the dataset download, or remove the image '
        'from the annotation file; to skip such images in training instead '
        "(counted and logged), set bad_image='skip' on LoadImageChecked, "
        'e.g. --cfg-options '
        'train_dataloader.dataset.pipeline.0.bad_image=skip')


@TRANSFORMS.register_module()
class LoadImageChecked(LoadImageFromFile):
    """Load an image like mmcv's ``LoadImageFromFile``, refusing or skipping
    one that is missing, unreadable, empty, truncated, not an image, or of
    another size than its annotation gives.

    A good image gives exactly what ``LoadImageFromFile`` gives (same
    ``img``, ``img_shape`` and ``ori_shape``). A bad one, by ``bad_image``:

    - ``'error'`` (default): raises :class:`BadImageError` naming the path,
      the image id and what was found;
    - ``'skip'``: counts it in :attr:`skipped`, logs a warning with the path,
      the image id, what was found and the running count, and returns
      ``None``. mmengine's training datasets then load another image drawn
      at random (up to ``max_refetch`` times, 1000 by default), so the batch
      keeps its size. A test-mode (val/test) dataset refuses ``None`` with a
      bare exception, and skipping would change the metric, so evaluation
      pipelines keep ``'error'``.

    Required keys: ``img_path``; ``img_id``, ``height`` and ``width`` when
    present (mmdet's COCO/LVIS datasets give them) are named in messages and
    checked against the decoded size.

    Modified keys: ``img``, ``img_shape``, ``ori_shape``.

    Args:
        bad_image (str): ``'error'`` or ``'skip'``. Defaults to ``'error'``.
        check_size (bool): Refuse an image whose decoded (height, width)
            differs from the annotation's ``height`` and ``width``. Defaults
            to True.
        to_float32 (bool): As ``LoadImageFromFile``. Defaults to False.
        color_type (str): As ``LoadImageFromFile``. Defaults to ``'color'``.
        imdecode_backend (str): As ``LoadImageFromFile``. Defaults to
            ``'cv2'``.
        ignore_empty (bool): Only False: ``LoadImageFromFile``'s
            ``ignore_empty=True`` skips without counting; use
            ``bad_image='skip'``.
        backend_args (dict, optional): As ``LoadImageFromFile``.

    Example::

        train_pipeline = [
            dict(type='mmlongtail.LoadImageChecked', bad_image='skip'),
            ...
        ]
    """

    def __init__(self,
                 bad_image: str = 'error',
                 check_size: bool = True,
                 to_float32: bool = False,
                 color_type: str = 'color',
                 imdecode_backend: str = 'cv2',
                 ignore_empty: bool = False,
                 *,
                 backend_args: Optional[dict] = None) -> None:
        if bad_image not in POLICIES:
            raise ValueError(f'LoadImageChecked: bad_image must be one of '
                             f'{POLICIES}, got {bad_image!r}')
        if ignore_empty:
            raise ValueError(
                'LoadImageChecked: ignore_empty=True would skip bad images '
                "without counting them; use bad_image='skip'")
        if imdecode_backend not in supported_backends:
            raise ValueError(
                f'LoadImageChecked: imdecode_backend must be one of '
                f'{supported_backends}, got {imdecode_backend!r}')
        super().__init__(
            to_float32=to_float32,
            color_type=color_type,
            imdecode_backend=imdecode_backend,
            backend_args=backend_args)
        self.bad_image = bad_image
        self.check_size = check_size
        self.skipped = BadImageCount()

    def transform(self, results: dict) -> Optional[dict]:
        """Read, check and decode ``results['img_path']``.

        Args:
            results (dict): A dataset's data info.

        Returns:
            dict | None: ``results`` with ``img`` (H, W, 3) uint8 (or
            float32, or (H, W) for ``color_type='grayscale'``),
            ``img_shape`` and ``ori_shape`` (H, W); ``None`` for a skipped
            image.

        Raises:
            BadImageError: A bad image under ``bad_image='error'``.
        """
        path = results['img_path']
        try:
            data = fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError:
            return self._bad(results, 'missing', 'no such file')
        except OSError as e:
            return self._bad(results, 'unreadable',
                             f'cannot be read ({type(e).__name__}: {e})')
        if not data:
            return self._bad(results, 'empty', 'the file is empty (0 bytes)')
        why = truncation(data)
        if why is not None:
            return self._bad(results, 'truncated',
                             f'{why} ({len(data)} bytes)')
        try:
            img = mmcv.imfrombytes(
                data, flag=self.color_type, backend=self.imdecode_backend)
        # The decoders raise many types for bytes they cannot read
        # (cv2.error, PIL's OSError subclasses and DecompressionBombError,
        # tifffile's own); each means a bad file, named in the message.
        except Exception as e:
            return self._bad(
                results, 'undecodable',
                f'the {self.imdecode_backend} decoder failed on its '
                f'{len(data)} bytes (starting {data[:8]!r}): '
                f'{type(e).__name__}: {e}')
        if img is None:
            return self._bad(
                results, 'undecodable',
                f'not an image the {self.imdecode_backend} decoder can read '
                f'({len(data)} bytes, starting {data[:8]!r})')
        if self.check_size and 'height' in results and 'width' in results:
            want = (results['height'], results['width'])
            if tuple(img.shape[:2]) != want:
                hint = (' (height and width swapped: an EXIF orientation '
                        'tag may rotate it on decoding)'
                        if tuple(img.shape[:2]) == want[::-1] else '')
                return self._bad(
                    results, 'size_mismatch',
                    f'decoded {img.shape[0]}x{img.shape[1]} (height x width) '
                    f'but the annotation gives height={want[0]}, '
                    f'width={want[1]}{hint}')
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def _bad(self, results: dict, kind: str, what: str) -> None:
        """Raise or skip (count, log) the bad image of ``results``."""
        path = results['img_path']
        img_id = results.get('img_id')
        desc = f'bad image {path} (image id {img_id}, {kind}): {what}'
        if self.bad_image == 'error':
            raise BadImageError(
                f'{desc}. {_FIX}', path=path, img_id=img_id, kind=kind)
        total = self.skipped.add(kind)
        MMLogger.get_current_instance().warning(
            f'LoadImageChecked skipped {desc}; {total} bad '
            f'image(s) skipped so far by this dataset on this rank')
        return None

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(bad_image={self.bad_image!r}, '
                f'check_size={self.check_size}, '
                f'to_float32={self.to_float32}, '
                f'color_type={self.color_type!r}, '
                f'imdecode_backend={self.imdecode_backend!r}, '
                f'backend_args={self.backend_args})')
