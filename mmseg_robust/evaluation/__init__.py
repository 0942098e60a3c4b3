"""SEA evaluation: the test loop (:class:`SEATestLoop`), per-image records
on disk, the :class:`SEAMetric` and its tables, object-size buckets,
SEA-2024's class weights, distributed runs that fail together.

The worst-case mIoU itself is computed in :mod:`mmseg_robust.metrics_core`,
which imports no OpenMMLab package; it is re-exported here.
"""
from mmseg_robust import register_all_modules
from mmseg_robust.compat import apply_compat

# before MMSeg is imported: with mmcv-lite it needs the mmcv.ops fallback
apply_compat()

from mmseg_robust.metrics_core import dataset_miou, worst_case_miou
from .dist_guard import (Outcome, RankConfigError, RankFailure, fail_together,
                         run_on_main)
from .loops import DEFAULT_EPS, SEATestLoop
from .metrics import SEAMetric, sea_tables
from .object_sizes import SIZE_BUCKETS, correct_by_size, size_buckets
from .records import (RecordWriter, eps_key, image_areas, image_miou,
                      read_records)
from .result_store import ResultStore, file_sha256

__all__ = [
    'SEAMetric', 'sea_tables', 'RecordWriter', 'image_areas', 'eps_key',
    'read_records', 'ResultStore', 'file_sha256', 'Outcome', 'run_on_main',
    'fail_together', 'RankFailure', 'RankConfigError', 'image_miou',
    'size_buckets', 'correct_by_size', 'SIZE_BUCKETS', 'worst_case_miou',
    'dataset_miou', 'SEATestLoop', 'DEFAULT_EPS'
]

# this subpackage is part of the MMSeg side: importing it registers all of
# it (mmseg_robust._plugin)
register_all_modules(__name__)
