"""Deprecated: the worst-case mIoU moved to :mod:`mmseg_robust.metrics_core`
(a metric, still without OpenMMLab imports); this path goes in the next
release."""
from ..deprecation import warn_moved_module
from ..metrics_core import *  # noqa: F401,F403
from ..metrics_core import __all__  # noqa: F401

warn_moved_module(__name__, 'mmseg_robust.metrics_core')
