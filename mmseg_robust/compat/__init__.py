"""Compatibility patches, each narrow, gated, announced once and reversible.

* ``mmcv_ops``: where ``import mmcv.ops`` fails for lack of ``mmcv._ext``
  (mmcv-lite), a pure-PyTorch ``mmcv.ops`` with ``point_sample`` and
  ``sigmoid_focal_loss`` only (:mod:`.mmcv_ops`).
* ``checkpoint``: on any torch with mmengine < 1.0, mmengine's local-file
  checkpoint loader unpickles
  only torch's weights-only types plus an allow-list of exactly the types
  mmengine writes (``weights_only=True`` with it on torch >= 2.5, a
  restricted unpickler on torch 2.1 - 2.4); TorchScript archives and
  anything else need an explicit "I trust this file" (:mod:`.checkpoint`).
* ``mmseg_scope``: where ``pkg_resources`` is missing (setuptools >= 81),
  ``mmseg::`` config paths are resolved through :mod:`importlib.metadata`
  (:mod:`.packages`).

Nothing is patched on import. :func:`apply_compat` applies the patches, at
once; :func:`mmseg_robust.register_all_modules` calls it before MMSeg is
imported (the package's tools, a config's ``custom_imports`` and the
MMSeg-side subpackages register, see :mod:`mmseg_robust._plugin`); the
attacks never call it. A patch that is not needed changes nothing. Each
applied patch says once what it did (a :class:`CompatWarning`).
``MMSEG_ROBUST_NO_COMPAT=1`` switches all patches off,
``MMSEG_ROBUST_NO_COMPAT=checkpoint,mmcv_ops`` some of them;
:func:`uninstall_compat` undoes the applied ones; :func:`compat_status`
tells what happened. Details: ``docs/compat.md``.
"""
import importlib
import os
import warnings
from typing import Dict, List, Optional, Sequence

__all__ = [
    'CompatWarning', 'PATCHES', 'ENV_DISABLE', 'apply_compat',
    'install_compat', 'uninstall_compat', 'compat_status', 'disabled_patches'
]

#: Environment variable that switches patches off: ``1``/``all`` or names.
ENV_DISABLE = 'MMSEG_ROBUST_NO_COMPAT'


class CompatWarning(UserWarning):
    """The one message each compatibility patch gives when it is applied."""


class _Patch:
    """One patch: ``impl`` names a module with ``needed()``, ``apply()`` and
    ``undo()``."""

    def __init__(self, name: str, impl: str) -> None:
        self.name = name
        self.impl = impl
        self.state = 'not installed'
        self.detail = ''

    def module(self):
        return importlib.import_module(self.impl)

    def apply_now(self) -> None:
        """Apply the patch where it is needed, announcing it once."""
        impl = self.module()
        reason = impl.needed()
        if reason is not None:
            self.state, self.detail = 'not needed', reason
            return
        self.detail = impl.apply()
        self.state = 'applied'
        # explicit location: the same for whichever caller applies it
        warnings.warn_explicit(
            f'mmseg_robust compat patch {self.name!r}: {self.detail} '
            f'(docs/compat.md; {ENV_DISABLE}={self.name} turns it off)',
            CompatWarning,
            filename='mmseg_robust.compat',
            lineno=0,
            module='mmseg_robust.compat')


#: The patches by name, in the order they are considered.
PATCHES: Dict[str, _Patch] = {
    p.name: p
    for p in (
        _Patch('mmcv_ops', 'mmseg_robust.compat.mmcv_ops'),
        _Patch('checkpoint', 'mmseg_robust.compat.checkpoint'),
        _Patch('mmseg_scope', 'mmseg_robust.compat.packages'),
    )
}

#: values of the environment variable already warned about (once each)
_WARNED_VALUES: set = set()


def disabled_patches() -> List[str]:
    """Names switched off by ``MMSEG_ROBUST_NO_COMPAT``.

    ``1``, ``true``, ``yes`` or ``all`` switch every patch off; otherwise the
    value is a comma-separated list of patch names. Unknown names give a
    warning (a typo must not silently leave a patch on).
    """
    value = os.environ.get(ENV_DISABLE, '').strip()
    if value.lower() in ('', '0', 'false', 'no'):
        return []
    if value.lower() in ('1', 'true', 'yes', 'all'):
        return list(PATCHES)
    names = [v.strip() for v in value.split(',') if v.strip()]
    unknown = [n for n in names if n not in PATCHES]
    if unknown and value not in _WARNED_VALUES:
        _WARNED_VALUES.add(value)
        warnings.warn(
            f'{ENV_DISABLE}={value!r}: unknown patch name(s) {unknown}; '
            f'known: {", ".join(PATCHES)} (or 1 for all)',
            CompatWarning,
            stacklevel=3)
    return [n for n in names if n in PATCHES]


def apply_compat(names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Apply the patches now, each only where it is needed (idempotent).

    A patch switched off by ``MMSEG_ROBUST_NO_COMPAT`` is left alone; one
    already applied, or found not needed, is not considered again.

    Args:
        names (Sequence[str], optional): Patches to apply; all by default.

    Returns:
        dict: :func:`compat_status` afterwards.
    """
    disabled = disabled_patches()
    for name in names if names is not None else list(PATCHES):
        patch = PATCHES[name]
        if patch.state in ('applied', 'not needed'):
            continue
        if name in disabled:
            patch.state, patch.detail = 'disabled', f'{ENV_DISABLE} is set'
            continue
        patch.apply_now()
    return compat_status()


def install_compat(names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Deprecated name of :func:`apply_compat` (patches are no longer
    deferred until their library is imported: they apply at once)."""
    warnings.warn(
        'mmseg_robust.compat.install_compat() is deprecated: use '
        'apply_compat() (or mmseg_robust.register_all_modules())',
        DeprecationWarning,
        stacklevel=2)
    return apply_compat(names)


def uninstall_compat() -> Dict[str, str]:
    """Undo every applied patch.

    Modules that were imported while a patch was active keep what they
    imported then (e.g. an MMSeg module holding the fallback
    ``point_sample``); everything imported afterwards sees the original
    libraries.

    Returns:
        dict: :func:`compat_status` afterwards.
    """
    for patch in reversed(list(PATCHES.values())):
        if patch.state == 'applied':
            patch.module().undo()
        patch.state, patch.detail = 'not installed', ''
    return compat_status()


def compat_status() -> Dict[str, str]:
    """What each patch did: ``{name: 'applied: ...'}``, ``'not needed:
    ...'``, ``'disabled: ...'`` or ``'not installed'`` (not applied
    yet)."""
    return {
        name: f'{p.state}: {p.detail}' if p.detail else p.state
        for name, p in PATCHES.items()
    }
