"""The documentation names only what exists (tests/docs_check.py)."""
import os
import textwrap

import pytest

import docs_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_name_in_the_docs_exists():
    problems = docs_check.check_repository(ROOT)
    assert not problems, 'the docs name what is not there:\n' + '\n'.join(
        map(str, problems))


def test_the_checked_documents_are_found():
    docs = docs_check.documents(ROOT)
    assert 'README.md' in docs
    assert 'CHANGELOG.md' in docs
    assert 'docs/README.md' in docs
    assert 'docs/installation.md' in docs


@pytest.fixture
def repo(tmp_path):
    """A small repository: one config, one tool, one page with headings."""
    (tmp_path / 'configs' / 'seesaw').mkdir(parents=True)
    (tmp_path / 'configs' / 'seesaw' / 'a_config.py').write_text('')
    (tmp_path / 'tools').mkdir()
    (tmp_path / 'tools' / 'train.py').write_text('')
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'losses.md').write_text(
        '# Losses\n\n## Seesaw Loss + Norm Mask\n\n'
        '## Seesaw Loss + Norm Mask\n')
    return tmp_path


def _check(repo, text, doc='README.md'):
    (repo / doc).write_text(text)
    return docs_check.check_repository(str(repo), [doc])


GOOD = textwrap.dedent("""\
    # Title

    Train with `.venv/bin/python tools/train.py configs/seesaw/a_config.py`,
    or any of `configs/seesaw/{a_config,a_config}.py`, `configs/seesaw/*.py`
    (`a_config.py`); see [losses](docs/losses.md#seesaw-loss--norm-mask),
    [the second](docs/losses.md#seesaw-loss--norm-mask-1),
    [above](#title), [mmdet](https://github.com/open-mmlab/mmdetection),
    mmdet's [`configs/seesaw_loss`](https://github.com/open-mmlab/mmdetection)
    (another site's folder) and
    the work dir `work_dirs/<config>/epoch_1.pth`.

    ```python
    loss_cls=dict(type='mmlongtail.SeesawLoss')
    from mmlongtail.datasets import image_categories
    ```
    """)


def test_a_correct_page_passes(repo):
    assert _check(repo, GOOD) == []


@pytest.mark.parametrize('broken, kind, name', [
    ('[losses](docs/loss.md)', 'link', 'docs/loss.md'),
    ('[losses](docs/losses.md#seesaw)', 'anchor', 'docs/losses.md#seesaw'),
    ('[title](#no-such-heading)', 'anchor', '#no-such-heading'),
    ('`tools/trian.py`', 'path', 'tools/trian.py'),
    ('`configs/eql/a_config.py`', 'path', 'configs/eql/a_config.py'),
    ('`configs/seesaw/{a_config,b_config}.py`', 'path',
     'configs/seesaw/{a_config,b_config}.py'),
    ('`configs/eql/*.py`', 'path', 'configs/eql/*.py'),
    ('`b_config.py`', 'path', 'b_config.py'),
    ("`type='mmlongtail.SeeSawLoss'`", 'type', 'mmlongtail.SeeSawLoss'),
    ("```\nsampler=dict(type='mmlongtail.NoSampler')\n```", 'type',
     'mmlongtail.NoSampler'),
    ('`mmlongtail.NoSuchHook`', 'type', 'mmlongtail.NoSuchHook'),
    ('`mmlongtail.datasets.no_such_function`', 'name',
     'mmlongtail.datasets.no_such_function'),
])
def test_a_page_naming_what_is_not_there_fails(repo, broken, kind, name):
    text = GOOD + '\n' + broken + '\n'
    problems = _check(repo, text)
    assert [(p.kind, p.name) for p in problems] == [(kind, name)], problems
    assert problems[0].doc == 'README.md'
    line = GOOD.count('\n') + 1 + next(
        i for i, s in enumerate(broken.splitlines(), 1) if name in s)
    assert problems[0].line == line


def test_links_resolve_from_the_page_that_holds_them(repo):
    # docs/losses.md -> ../tools/train.py is fine; docs/tools/train.py is not
    assert _check(repo, '[t](../tools/train.py)\n', 'docs/x.md') == []
    problems = _check(repo, '[t](tools/train.py)\n', 'docs/x.md')
    assert [(p.kind, p.name) for p in problems] == [('link', 'tools/train.py')]


def test_the_command_line_exits_nonzero_on_a_problem(repo, capsys):
    (repo / 'README.md').write_text('[x](docs/missing.md)\n')
    assert docs_check.main([str(repo)]) == 1
    assert 'docs/missing.md' in capsys.readouterr().out
    (repo / 'README.md').write_text('[x](docs/losses.md)\n')
    assert docs_check.main([str(repo)]) == 0
