"""Datasets: a small real microscopy segmentation set built on the fly from
the ``ndev-sampledata`` PyPI package (see :mod:`.scratch_assay`)."""
from .scratch_assay import (ScratchAssayDataset, load_scratch_assay,
                            prepare_scratch_assay, read_meta)

__all__ = [
    'ScratchAssayDataset', 'prepare_scratch_assay', 'load_scratch_assay',
    'read_meta'
]
