"""``mmseg::`` config paths without ``pkg_resources``.

MMEngine 0.10.7 resolves ``_base_ = 'mmseg::...'`` with
``mmengine.utils.is_installed`` / ``get_installed_path``, which import
``pkg_resources``. setuptools >= 81 no longer ships it, so every config that
inherits MMSeg's stock configs fails with ``No module named
'pkg_resources'``. Where ``pkg_resources`` is missing, :func:`apply` replaces
those two helpers (and ``package2module``) with equivalents built on
:mod:`importlib.metadata`; where it exists nothing changes. :func:`undo`
restores MMEngine's own.

This takes effect when ``mmengine`` is imported after ``import mmseg_robust``
(or at once, if it already is). A script that parses a config *before*
importing mmseg_robust -- MMSeg's own ``tools/train.py`` does, since
``custom_imports`` is read only after the ``_base_`` files -- still needs
``pkg_resources`` (``setuptools<81``) for ``mmseg::`` bases.
"""
import importlib.metadata as metadata
import importlib.util
import os.path as osp
import sys
from typing import Optional

__all__ = [
    'needed', 'apply', 'undo', 'is_installed', 'get_installed_path',
    'package2module'
]


def package2module(package: str) -> str:
    """Top-level module of a distribution (``mmsegmentation -> mmseg``)."""
    try:
        top = metadata.distribution(package).read_text('top_level.txt')
    except metadata.PackageNotFoundError:
        top = None
    names = (top or '').split()
    if names:
        return names[0]
    # wheels without top_level.txt: first package among the files
    try:
        files = metadata.distribution(package).files or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        parts = str(f).split('/')
        if len(parts) > 1 and parts[1] == '__init__.py':
            return parts[0]
    raise ValueError(f'cannot infer the module name of {package}')


def is_installed(package: str) -> bool:
    """Whether ``package`` is an installed distribution or importable."""
    try:
        metadata.distribution(package)
        return True
    except metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def get_installed_path(package: str) -> str:
    """Folder of an installed package (``mmseg`` or ``mmsegmentation``)."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise ModuleNotFoundError(f'{package} is not installed') from None
        if spec.origin is None:
            raise RuntimeError(f'{package} is a namespace package, which is '
                               'invalid for `get_installed_path`') from None
        return osp.dirname(spec.origin)
    location = str(dist.locate_file(''))
    possible = osp.join(location, package)
    if osp.exists(possible):
        return possible
    module = package2module(package)
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin is not None:
        return osp.dirname(spec.origin)  # editable installs
    return osp.join(location, module)


_TARGETS = ('mmengine.utils.package_utils', 'mmengine.utils',
            'mmengine.config.config', 'mmengine.hub.hub')
_NAMES = ('is_installed', 'get_installed_path', 'package2module')
_originals: dict = {}


def needed() -> Optional[str]:
    """``None`` if ``pkg_resources`` is missing, else why no patch is
    needed."""
    if importlib.util.find_spec('pkg_resources') is not None:
        return 'pkg_resources is available'
    return None


def apply() -> str:
    """Point MMEngine's package helpers at the :mod:`importlib.metadata`
    versions above (call only when :func:`needed` returned ``None``).

    ``mmengine.hub.hub`` is patched only if it is already imported; imported
    later, it takes the patched names from ``mmengine.utils``.

    Returns:
        str: What was done, for the one-time announcement.
    """
    import mmengine.utils.package_utils as package_utils
    _originals.update({name: getattr(package_utils, name) for name in _NAMES})
    ours = {
        'is_installed': is_installed,
        'get_installed_path': get_installed_path,
        'package2module': package2module
    }
    for module_name in _TARGETS:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name, fn in ours.items():
            if hasattr(module, name):
                setattr(module, name, fn)
    return ('pkg_resources is missing (setuptools >= 81), so mmengine '
            'resolves mmseg:: config paths through importlib.metadata')


def undo() -> None:
    """Give MMEngine back its own helpers."""
    ours = (is_installed, get_installed_path, package2module)
    for module_name in _TARGETS:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name in _NAMES:
            if getattr(module, name, None) in ours:
                setattr(module, name, _originals[name])
