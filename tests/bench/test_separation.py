"""The library never imports the benchmark, demo and synthetic-data package
(DESIGN.md: that machinery sits outside the library), and no module of
either package imports itself back through others (no import cycle)."""
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



def _module_graph():
    """``{module: modules it imports}`` over mmlongtail and mmlongtail_bench,
    every import (inside functions too); edges between a package and its
    own submodules left out (that is how a package is assembled)."""
    mods = {}
    for pkg in ('mmlongtail', 'mmlongtail_bench'):
        for path in glob.glob(osp.join(ROOT, pkg, '**', '*.py'),
                              recursive=True):
            name = osp.relpath(path, ROOT)[:-3].replace(osp.sep, '.')
            mods[name[:-len('.__init__')] if name.endswith('.__init__')
                 else name] = path

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition('.')[0]
        return name

    graph = {}
    for mod, path in mods.items():
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        base = mod if path.endswith('__init__.py') else mod.rpartition('.')[0]
        out = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                out.update(resolve(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                head = node.module or ''
                if node.level:
                    b = base
                    for _ in range(node.level - 1):
                        b = b.rpartition('.')[0]
                    head = b + ('.' + head if head else '')
                for a in node.names:
                    full = f'{head}.{a.name}'
                    out.add(full if full in mods else resolve(head))
        graph[mod] = {t for t in out if t and t != mod
                      and not t.startswith(mod + '.')
                      and not mod.startswith(t + '.')}
    return graph


def _cycles(graph):
    """The strongly connected components with more than one module."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [
        ['a', 'b', 'c']]


def test_no_import_cycle_in_the_packages():
    """No module imports another that imports it back, directly or through
    others (the benchmark's cost and runner modules once did)."""
    graph = _module_graph()
    assert len(graph) > 50
    assert graph['mmlongtail_bench.benchmark.runner'] >= {
        'mmlongtail_bench.benchmark.cost'}
    assert _cycles(graph) == []
