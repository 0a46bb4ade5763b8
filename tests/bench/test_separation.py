"""The library never imports the benchmark, demo and synthetic-data package
(DESIGN.md: that machinery sits outside the library)."""
import ast
import glob
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _imported_modules(path):
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_no_library_module_imports_mmlongtail_bench():
    files = glob.glob(osp.join(ROOT, 'mmlongtail', '**', '*.py'),
                      recursive=True)
    assert len(files) > 20
    offenders = sorted(
        f'{osp.relpath(p, ROOT)}: {m}' for p in files
        for m in _imported_modules(p)
        if m == 'mmlongtail_bench' or m.startswith('mmlongtail_bench.'))
    assert offenders == []

