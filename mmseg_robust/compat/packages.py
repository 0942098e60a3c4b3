"""``mmseg::`` config paths without ``pkg_resources``.

MMEngine 0.10.7 resolves ``_base_ = 'mmseg::...'`` with
``mmengine.utils.is_installed`` / ``get_installed_path``, which import
``pkg_resources``. setuptools >= 81 no longer ships it, so every config that
inherits MMSeg's stock configs fails with ``No module named
'pkg_resources'``. Where ``pkg_resources`` is missing we replace those two
helpers (and ``package2module``) with equivalents built on
:mod:`importlib.metadata`; where it exists nothing changes.
"""
import importlib.metadata as metadata
import importlib.util
import os.path as osp

__all__ = ['install_package_paths', 'is_installed', 'get_installed_path',
           'package2module']


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


def install_package_paths() -> bool:
    """Patch MMEngine's package helpers if ``pkg_resources`` is missing.

    Returns:
        bool: Whether the helpers were replaced.
    """
    try:
        import pkg_resources  # noqa: F401
        return False
    except ImportError:
        pass
    import mmengine.config.config as config_module
    import mmengine.hub.hub as hub_module
    import mmengine.utils as utils
    import mmengine.utils.package_utils as package_utils
    for module in (package_utils, utils, config_module, hub_module):
        for name, fn in (('is_installed', is_installed),
                         ('get_installed_path', get_installed_path),
                         ('package2module', package2module)):
            if hasattr(module, name):
                setattr(module, name, fn)
    return True
