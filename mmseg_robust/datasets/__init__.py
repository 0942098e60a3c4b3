"""Datasets and transforms: a small real microscopy segmentation set built on
the fly from the ``ndev-sampledata`` PyPI package (:mod:`.scratch_assay`);
ADE20K with its "other" class (:mod:`.ade20k_other`) and the transforms of
the paper's evaluation protocol (:mod:`.transforms`)."""
from .ade20k_other import ADE20KWithOtherDataset
from .scratch_assay import (ScratchAssayDataset, load_scratch_assay,
                            prepare_scratch_assay, read_meta)
from .transforms import RemapLabels, ShortSideResizeCenterCrop

__all__ = [
    'ScratchAssayDataset', 'prepare_scratch_assay', 'load_scratch_assay',
    'read_meta', 'ADE20KWithOtherDataset', 'ShortSideResizeCenterCrop',
    'RemapLabels'
]
