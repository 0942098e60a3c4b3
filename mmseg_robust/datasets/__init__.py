"""Datasets and transforms: a small real microscopy segmentation set built on
the fly from the ``ndev-sampledata`` PyPI package (:mod:`.scratch_assay`);
ADE20K with its "other" class (:mod:`.ade20k_other`) and the transforms of
the paper's evaluation protocol (:mod:`.transforms`)."""
from mmseg_robust import register_all_modules
from mmseg_robust.compat import apply_compat

# before MMSeg is imported: with mmcv-lite it needs the mmcv.ops fallback
apply_compat()

from .ade20k_other import ADE20KWithOtherDataset
from .scratch_assay import (ScratchAssayDataset, load_scratch_assay,
                            prepare_scratch_assay, read_meta)
from .transforms import RemapLabels, ShortSideResizeCenterCrop

__all__ = [
    'ScratchAssayDataset', 'prepare_scratch_assay', 'load_scratch_assay',
    'read_meta', 'ADE20KWithOtherDataset', 'ShortSideResizeCenterCrop',
    'RemapLabels'
]

# this subpackage is part of the MMSeg side: importing it registers all of
# it (mmseg_robust._plugin)
register_all_modules(__name__)
