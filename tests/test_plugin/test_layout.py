"""The README's layout section names every part of the package, and the
architecture page names every subpackage (issue #22: the docs say where
each role lives)."""
import os
import os.path as osp
import re

import mmseg_robust

PACKAGE = osp.dirname(mmseg_robust.__file__)
ROOT = osp.dirname(PACKAGE)


def _parts():
    """Top-level modules and subpackages of mmseg_robust."""
    names = set()
    for entry in os.listdir(PACKAGE):
        path = osp.join(PACKAGE, entry)
        if entry.startswith('__'):
            continue
        if osp.isdir(path) and osp.isfile(osp.join(path, '__init__.py')):
            names.add(f'mmseg_robust/{entry}/')
        elif entry.endswith('.py'):
            names.add(f'mmseg_robust/{entry}')
    return names


def _layout_block():
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    section = text.split('\n## Layout\n', 1)[1].split('\n## ', 1)[0]
    return re.search(r'```\n(.*?)```', section, re.S).group(1)


def test_readme_layout_matches_the_tree():
    listed = {
        line.split()[0]
        for line in _layout_block().splitlines()
        if line.startswith('mmseg_robust/')
    }
    parts = _parts()
    assert parts - listed == set(), 'not in the README layout'
    assert listed - parts == set(), 'in the README layout, not in the tree'


def test_architecture_names_every_subpackage():
    with open(
            osp.join(ROOT, 'docs', 'architecture.md'), encoding='utf-8') as f:
        text = f.read()
    subpackages = {p for p in _parts() if p.endswith('/')}
    # the deprecated shims of moved code are named in the README only
    missing = [
        p for p in subpackages
        if f'`{p}' not in text and p != 'mmseg_robust/engine/'
    ]
    assert missing == []
