"""Compatibility fixes applied by ``import mmseg_robust``.

* :mod:`.mmcv_ops`: pure-PyTorch ``mmcv.ops`` names MMSeg needs at import
  time when only ``mmcv-lite`` is installed.
* :mod:`.checkpoint`: loading mmengine checkpoints with ``torch >= 2.6``.
* :mod:`.packages`: ``mmseg::`` config paths without ``pkg_resources``
  (setuptools >= 81).
"""
from .checkpoint import install_checkpoint_loader, torch_load
from .mmcv_ops import (FALLBACK_OPS, ensure_mmcv_ops, fallback_installed,
                       point_sample, sigmoid_focal_loss)
from .packages import install_package_paths


def install_compat() -> None:
    """Apply every fix; each one is a no-op where it is not needed."""
    ensure_mmcv_ops()
    install_checkpoint_loader()
    install_package_paths()


__all__ = [
    'install_compat', 'ensure_mmcv_ops', 'fallback_installed', 'FALLBACK_OPS',
    'point_sample', 'sigmoid_focal_loss', 'install_checkpoint_loader',
    'torch_load', 'install_package_paths'
]
