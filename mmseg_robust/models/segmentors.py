"""Segmentors registered by the plugin."""
from typing import List, Sequence

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor

__all__ = ['ClassSubsetEncoderDecoder']


@MODELS.register_module()
class ClassSubsetEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` whose test-time logits leave some classes out.

    Evaluates a model trained with more classes than the dataset defines.
    The paper's ADE20K models predict 151 classes, class 0 being "other";
    under MMSeg's ADE20K protocol (``reduce_zero_label=True``, 150 classes)
    ``drop_classes=[0]`` removes that logit, so the prediction is the best of
    the 150 real classes and the class ids match the dataset's again. The
    weights are unchanged (the checkpoint loads as is); training and the
    auxiliary head still see every class.

    ``inference`` (whole or slide, used by ``predict`` and by the attacks'
    :class:`~mmseg_robust.adapter.SegmentorAttackModel`) returns the kept
    classes only, in their original order.

    Args:
        drop_classes (Sequence[int]): Output channels of the decode head to
            leave out at test time.
        **kwargs: Everything else of :class:`mmseg.models.EncoderDecoder`.

    Raises:
        ValueError: If ``drop_classes`` is empty, repeats a class, or names
            a channel the decode head does not have.
    """

    def __init__(self, drop_classes: Sequence[int], **kwargs) -> None:
        super().__init__(**kwargs)
        drop = [int(c) for c in drop_classes]
        n = self.decode_head.out_channels
        if not drop or len(set(drop)) != len(drop) or \
                any(c < 0 or c >= n for c in drop):
            raise ValueError(
                f'ClassSubsetEncoderDecoder: drop_classes must be distinct '
                f'channel indices in [0, {n - 1}] (the decode head has {n} '
                f'outputs), got {list(drop_classes)}')
        if n - len(drop) < 2:
            raise ValueError(
                'ClassSubsetEncoderDecoder: at least two classes must remain '
                f'(the decode head has {n} outputs, drop_classes={drop})')
        self.drop_classes = drop
        self.keep_classes: List[int] = [c for c in range(n) if c not in drop]

    def inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Logits of the kept classes (whole or slide inference)."""
        logits = super().inference(inputs, batch_img_metas)
        return logits[:, self.keep_classes]
