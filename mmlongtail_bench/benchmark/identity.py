"""What a benchmark run is, by content: the identity a finished run is
reused on (:func:`.runner.run_benchmark`).

A run's identity (:func:`run_identity`) has five parts, each a SHA-256:

* ``settings``: the run's own settings (method key, kind, track, seed,
  schedule and image subsets, threads, post-hoc parameter and candidates),
  the :class:`~.run.RunSpec` without its paths;
* ``config``: the resolved config (:func:`config_digest`): the method's
  config as mmengine resolves it in the run's environment, after the
  benchmark's own overrides (:func:`.run.run_config`), as sorted JSON, with
  the paths that do not change what is computed put to placeholders: the
  work dir, the data root (the data has its own part), the checkpoint a
  stage-2 or post-hoc run starts from and the pretrained start (their
  content has its own part) and the seed (in ``settings``). So an edited
  config (or a base it inherits) reruns, a comment edit or a moved out dir
  or data dir does not;
* ``dataset``: the annotation files (train, val, held-out) byte for byte and
  the listing of the images they name (relative path and size in bytes;
  :func:`dataset_digest`);
* ``init_checkpoint``: the bytes of the checkpoint a stage-2 run starts
  from or a post-hoc run evaluates (None for a trained run);
* ``pretrained``: the bytes of the pretrained backbone the config starts
  from (:mod:`.pretrain`; None for a run from scratch).

Why images are listed and not read: the annotation files carry every box,
mask polygon and label, and the synthetic generator records its settings
and seed in them (``info.config``), so regenerating the data with other
settings changes them; the images are drawn from the same random stream,
so an image can only change with its annotation unchanged when the
renderer itself changes, which a changed PNG size shows in nearly every
case. Listing costs one ``stat`` per image whatever the images' size (the
benchmark's 1.7k images, 28 MB, would hash in 0.1 s, but an LVIS-sized set
of 120k images and 20 GB would not, and the identity is computed for every
run when the benchmark is planned). A missing image is an error.
"""
import hashlib
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config

#: Bump when the identity's definition changes (every run then reruns).
IDENTITY_VERSION = 1
#: The parts of an identity, in the order a difference is reported.
PARTS = ('version', 'settings', 'config', 'dataset', 'init_checkpoint',
         'pretrained')
#: RunSpec fields that are paths (their content is another part, or they
#: do not matter: the work dir) or the identity itself.
PATH_FIELDS = ('config', 'work_dir', 'train_ann_file', 'val_ann_file',
               'init_checkpoint', 'heldout_ann_file', 'pretrained')

_file_memo: Dict[tuple, str] = {}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes (remembered per path, size and mtime in
    this process).

    Raises:
        FileNotFoundError: If ``path`` is not a file.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'cannot hash {path}: not a file')
    st = os.stat(path)
    key = (osp.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _file_memo:
        h = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                h.update(block)
        _file_memo[key] = h.hexdigest()
    return _file_memo[key]


def dataset_digest(ann_files: Sequence[str], image_root: str) -> str:
    """SHA-256 of the annotation files' bytes (in the given order, by base
    name) and of the sorted ``(file_name, size)`` of every image they name,
    found under ``image_root`` (see the module docstring).

    Raises:
        FileNotFoundError: An annotation file or an image is missing.
    """
    parts: List[str] = []
    names = set()
    for ann in ann_files:
        parts.append(f'{osp.basename(ann)} {file_sha256(ann)}')
        with open(ann, encoding='utf-8') as f:
            names.update(im['file_name'] for im in json.load(f)['images'])
    for name in sorted(names):
        path = osp.join(image_root, name)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise FileNotFoundError(
                f'{path} (named in {list(ann_files)}) is missing') from None
        parts.append(f'{name} {size}')
    return _sha('\n'.join(parts))


def config_digest(cfg: Config, placeholders: Dict[str, str]) -> str:
    """SHA-256 of ``cfg`` as sorted JSON with each path of
    ``placeholders`` (``{path: placeholder}``; relative and absolute forms
    both replaced, without a trailing slash, longest first) put to its
    placeholder and the seed (``randomness.seed``) left out."""
    data = cfg.to_dict()
    randomness = dict(data.get('randomness') or {})
    randomness.pop('seed', None)
    data['randomness'] = randomness
    text = json.dumps(data, sort_keys=True, default=repr)
    forms = {}
    for path, name in placeholders.items():
        if path:  # without a trailing '/': '<name>/rest' whichever
            for form in (path, osp.abspath(path)):
                forms[form.rstrip('/')] = name
    for path in sorted(forms, key=len, reverse=True):
        text = text.replace(path, forms[path])
    return _sha(text)


def run_identity(spec, cfg: Config, data_root: str,
                 image_root: str, ann_files: Sequence[str],
                 pretrained: Optional[str]) -> dict:
    """The identity of the run ``spec`` (a :class:`.run.RunSpec`) whose
    resolved config is ``cfg`` (see the module docstring).

    Args:
        data_root (str): The dataset's root (a placeholder in the config).
        image_root (str): Where the annotation files' ``file_name`` s are.
        ann_files (Sequence[str]): The annotation files the run reads.
        pretrained (str, optional): The pretrained backbone the config
            starts from, None for a run from scratch.
    """
    from dataclasses import asdict

    settings = {k: v for k, v in asdict(spec).items()
                if k not in PATH_FIELDS}
    init = spec.init_checkpoint
    return dict(
        version=IDENTITY_VERSION,
        settings=_sha(json.dumps(settings, sort_keys=True)),
        config=config_digest(cfg, {
            spec.work_dir: '<work_dir>', data_root: '<data_root>',
            init or '': '<init_checkpoint>',
            pretrained or '': '<pretrained>'}),
        dataset=dataset_digest(ann_files, image_root),
        init_checkpoint=None if init is None else file_sha256(init),
        pretrained=None if pretrained is None else file_sha256(pretrained))


def identity_changes(old: Optional[dict], new: dict) -> List[str]:
    """The parts of ``new`` that differ from the recorded ``old`` (all of
    them, as ``['no recorded identity']``, when nothing was recorded)."""
    if not old:
        return ['no recorded identity']
    return [k for k in PARTS if old.get(k) != new.get(k)]
