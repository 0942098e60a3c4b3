"""ADE20K with its "other" class, as the paper's released models see it."""
from mmseg.datasets import ADE20KDataset, BaseSegDataset
from mmseg.registry import DATASETS

__all__ = ['ADE20KWithOtherDataset']


@DATASETS.register_module()
class ADE20KWithOtherDataset(BaseSegDataset):
    """ADE20K (SceneParsing, ``ADEChallengeData2016``) with 151 classes.

    MMSeg's :class:`~mmseg.datasets.ADE20KDataset` drops label 0 ("other",
    pixels outside the 150 classes) with ``reduce_zero_label=True``. The
    paper's released ADE20K models were trained and evaluated with it as a
    class of its own: class 0 ``'other'``, classes 1-150 the ADE20K classes
    in MMSeg's order and palette, labels read as stored (no reduction).

    Same folder layout as MMSeg's ADE20K (``images/validation/*.jpg``,
    ``annotations/validation/*.png``).
    """
    METAINFO = dict(
        classes=('other', ) + tuple(ADE20KDataset.METAINFO['classes']),
        palette=[[0, 0, 0]] +
        [list(c) for c in ADE20KDataset.METAINFO['palette']])

    def __init__(self,
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)
