"""Check that the documentation names only what exists (a dev tool).

The user documentation (``README.md``, ``docs/*.md``, ``configs/**/README.md``
and ``CHANGELOG.md``) names files, configs, tools, registered components and
other pages. This module finds every such name and reports the ones that are
not there:

- **paths**: a token in a code span or code block (not in the text of a
  link to another site, which names that site's files) that starts with one of
  the repository's folders (``configs/``, ``tools/``, ``docs/``,
  ``mmlongtail/``, ``mmlongtail_bench/``, ``tests/``, ``.ci/``) or is one of
  its top-level files must exist. ``{a,b}`` alternatives are expanded and
  ``*`` globs must match at least one file; tokens with a ``<placeholder>``
  are skipped. A bare ``name.py`` in an inline code span must be the name of
  a top-level file or of a file somewhere under ``configs/``, ``tools/`` or
  the packages.
- **registered types**: ``type='mmlongtail.X'`` anywhere, and ``mmlongtail.X``
  (``X`` capitalized) in code, must be registered in one of mmlongtail's
  registries (:mod:`mmlongtail.registry`).
- **dotted names**: ``mmlongtail.a.b`` / ``mmlongtail_bench.a.b`` in code
  (lower-case second part) must import, or be an attribute of what imports.
- **links**: every relative markdown link ``[text](target)`` must resolve
  from the page that holds it; a ``#anchor`` must be a heading of the target
  page (GitHub's heading ids).

Run it as ``python tests/docs_check.py [ROOT]``; ``tests/test_docs.py`` runs
it in ``make test``.
"""
import argparse
import glob
import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

#: Folders of the repository whose paths the docs may name.
CHECKED_DIRS = ('configs', 'tools', 'docs', 'mmlongtail', 'mmlongtail_bench',
                'tests', '.ci')
#: Top-level files the docs may name.
CHECKED_FILES = ('Makefile', 'setup.py', 'README.md', 'CHANGELOG.md')
#: Where a bare ``name.py`` in an inline code span may live.
BARE_PY_DIRS = ('configs', 'tools', 'mmlongtail', 'mmlongtail_bench')

_FENCE = re.compile(r'^(```|~~~)')
_INLINE_CODE = re.compile(r'(`+)(.+?)\1')
_EXTERNAL_LINK = re.compile(r'\[[^\]]*\]\([a-z][a-z0-9+.\-]*:[^)]*\)')
_LINK = re.compile(
    r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+"[^"]*")?\)')
_PATH = re.compile(
    r'(?<![\w./\-])((?:' + '|'.join(re.escape(d) for d in CHECKED_DIRS) +
    r')/[\w.\-/{},*]*|' + '|'.join(re.escape(f) for f in CHECKED_FILES) +
    r')(?![\w\-/])')
_TYPE = re.compile(r"""type\s*=\s*['"](mmlongtail\.[A-Za-z_]\w*)['"]""")
_DOTTED = re.compile(r'(?<![\w.])(mmlongtail(?:_bench)?(?:\.[A-Za-z_]\w*)+)')
_BARE_PY = re.compile(r'^[\w\-]+\.py$')


@dataclass(frozen=True)
class Problem:
    """One name in one document that does not resolve.

    Attributes:
        doc: the document's path relative to the checked root.
        line: 1-based line number of the name.
        kind: ``'path'``, ``'type'``, ``'name'``, ``'link'`` or ``'anchor'``.
        name: the name as written.
        reason: what is wrong.
    """
    doc: str
    line: int
    kind: str
    name: str
    reason: str

    def __str__(self) -> str:
        return (f'{self.doc}:{self.line}: {self.kind} {self.name!r}: '
                f'{self.reason}')


def documents(root: str) -> List[str]:
    """The checked documents under ``root``, as paths relative to it."""
    found = []
    for pattern in ('README.md', 'CHANGELOG.md', 'docs/*.md',
                    'configs/**/README.md'):
        found += glob.glob(os.path.join(root, pattern), recursive=True)
    return sorted(os.path.relpath(p, root) for p in set(found))


def _code_and_prose(text: str) -> Iterator[Tuple[int, str, str]]:
    """Yield ``(line number, 'code' | 'inline' | 'prose', text)`` pieces."""
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        if in_fence:
            yield number, 'code', line
            continue
        # the text of a link to another site names that site's files
        for match in _INLINE_CODE.finditer(_EXTERNAL_LINK.sub(' ', line)):
            yield number, 'inline', match.group(2)
        yield number, 'prose', _INLINE_CODE.sub(' ', line)


def _expand_braces(token: str) -> List[str]:
    """``a/{b,c}.py`` -> ``['a/b.py', 'a/c.py']`` (nested braces too)."""
    match = re.search(r'\{([^{}]*)\}', token)
    if not match:
        return [token]
    out = []
    for alternative in match.group(1).split(','):
        out += _expand_braces(token[:match.start()] + alternative +
                              token[match.end():])
    return out


def _path_exists(root: str, token: str) -> bool:
    token = token.rstrip('.,:;')
    for candidate in _expand_braces(token):
        full = os.path.join(root, candidate)
        if '*' in candidate:
            if not glob.glob(full, recursive=True):
                return False
        elif not os.path.exists(full):
            return False
    return True


def heading_ids(text: str) -> Set[str]:
    """GitHub's ids of the headings of a markdown page.

    Lower-cased, everything but letters, digits, ``_``, ``-`` and spaces
    dropped, spaces turned into ``-``; a repeated id gets ``-1``, ``-2``...
    """
    ids: Set[str] = set()
    seen: Dict[str, int] = {}
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        match = None if in_fence else re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$',
                                               line)
        if not match:
            continue
        title = re.sub(r'`([^`]*)`', r'\1', match.group(1))
        title = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', title)
        slug = re.sub(r'[^\w\- ]', '', title.lower()).replace(' ', '-')
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f'{slug}-{count}')
    return ids


def registered_names() -> Set[str]:
    """Every name registered in one of mmlongtail's registries."""
    import mmlongtail  # noqa: F401  (registers every component)
    from mmlongtail import registry as mmlt_registry
    from mmengine.registry import Registry
    names: Set[str] = set()
    for value in vars(mmlt_registry).values():
        if isinstance(value, Registry) and value.scope == 'mmlongtail':
            value.import_from_location()
            names.update(value.module_dict)
    return names


def _resolves(dotted: str) -> bool:
    """Whether ``a.b.c`` is a module or an attribute of an importable one."""
    parts = dotted.split('.')
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def check_text(root: str, doc: str, text: str,
               registered: Optional[Set[str]] = None) -> List[Problem]:
    """Check one document's text (``doc`` is its path relative to ``root``).

    Args:
        root: the repository root the names are relative to.
        doc: the document's path relative to ``root`` (links resolve from
            its folder).
        text: the document's markdown.
        registered: the registered names (:func:`registered_names` when
            None).

    Returns:
        The problems found, in document order.
    """
    if registered is None:
        registered = registered_names()
    problems: List[Problem] = []
    here = os.path.dirname(doc)
    for number, kind, piece in _code_and_prose(text):
        for match in _TYPE.finditer(piece):
            name = match.group(1).split('.', 1)[1]
            if name not in registered:
                problems.append(Problem(
                    doc, number, 'type', match.group(1),
                    "not registered in mmlongtail's registries"))
        if kind == 'prose':
            for match in _LINK.finditer(piece):
                problems += _check_link(root, doc, here, number,
                                        match.group(1))
            continue
        for match in _PATH.finditer(piece):
            token = match.group(1)
            if '<' in token or token.endswith('/**'):
                continue
            if not _path_exists(root, token):
                problems.append(Problem(doc, number, 'path', token,
                                        'no such file or folder'))
        for match in _DOTTED.finditer(piece):
            dotted = match.group(1)
            parts = dotted.split('.')
            if parts[0] == 'mmlongtail' and len(parts) == 2 and \
                    parts[1][:1].isupper():
                if parts[1] not in registered and not _resolves(dotted):
                    problems.append(Problem(
                        doc, number, 'type', dotted,
                        "not registered in mmlongtail's registries"))
            elif len(parts) > 1 and not _resolves(dotted):
                problems.append(Problem(doc, number, 'name', dotted,
                                        'does not import'))
        if kind == 'inline' and _BARE_PY.match(piece.strip()):
            name = piece.strip()
            if not os.path.isfile(os.path.join(root, name)) and not any(
                    glob.glob(os.path.join(root, d, '**', name),
                              recursive=True) for d in BARE_PY_DIRS):
                problems.append(Problem(
                    doc, number, 'path', name,
                    f'no file of that name under {", ".join(BARE_PY_DIRS)}'))
    return list(dict.fromkeys(problems))


def _check_link(root: str, doc: str, here: str, number: int,
                target: str) -> List[Problem]:
    if re.match(r'^[a-z][a-z0-9+.\-]*:', target):  # http:, mailto:, ...
        return []
    path, _, anchor = target.partition('#')
    full = os.path.normpath(os.path.join(root, here, path)) if path else \
        os.path.join(root, doc)
    if not os.path.exists(full):
        return [Problem(doc, number, 'link', target,
                        f'{os.path.relpath(full, root)} does not exist')]
    if anchor and full.endswith('.md') and os.path.isfile(full):
        with open(full, encoding='utf-8') as f:
            if anchor not in heading_ids(f.read()):
                return [Problem(doc, number, 'anchor', target,
                                f'no heading #{anchor} in '
                                f'{os.path.relpath(full, root)}')]
    return []


def check_repository(root: str,
                     docs: Optional[Iterable[str]] = None) -> List[Problem]:
    """Check every document of :func:`documents` (or ``docs``) under root."""
    registered = registered_names()
    problems: List[Problem] = []
    for doc in (documents(root) if docs is None else docs):
        with open(os.path.join(root, doc), encoding='utf-8') as f:
            problems += check_text(root, doc, f.read(), registered)
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', nargs='?',
                        default=os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__))))
    args = parser.parse_args(argv)
    problems = check_repository(args.root)
    for problem in problems:
        print(problem)
    print(f'{len(documents(args.root))} documents, {len(problems)} problems')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
