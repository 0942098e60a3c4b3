"""Turn an MMSeg segmentor and a data batch into an attackable model.

The attacks of :mod:`mmseg_robust.attacks` perturb images in [0, 1] and
expect ``logits = f(x)`` at label resolution. MMSeg's data preprocessor takes
raw ``[0, 255]`` images, flips channels, normalises and pads. Following
docs/attacks.md
section 1 the perturbation lives in front of the preprocessor:
:class:`SegmentorAttackModel` applies the preprocessor's steps inside a
differentiable forward and then runs the segmentor's own inference (``whole``
or ``slide``) and post-processing (padding removal, flip, resize to the label
size), so the attack differentiates what test time evaluates.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import is_model_wrapper
from torch import Tensor

from mmseg_robust.attacks.accelerate import accelerate

__all__ = [
    'SegmentorAttackModel', 'AttackBatch', 'unwrap_segmentor',
    'final_decode_head', 'accelerate_segmentor', 'SEGMENTOR_PARTS'
]

#: The parts of an MMSeg segmentor that :func:`accelerate_segmentor`
#: compiles (those that exist): pure tensor code, unlike the segmentor's
#: inference, which passes per-image metadata.
SEGMENTOR_PARTS = ('backbone', 'neck', 'decode_head', 'auxiliary_head')


def unwrap_segmentor(model: nn.Module) -> nn.Module:
    """The segmentor inside a model wrapper (DDP, ...) or the model."""
    return model.module if is_model_wrapper(model) else model


def final_decode_head(segmentor: nn.Module) -> nn.Module:
    """The decode head whose output is the prediction: the last stage of a
    ``CascadeEncoderDecoder`` (OCRNet, PointRend), else the decode head."""
    head = segmentor.decode_head
    if isinstance(head, nn.ModuleList):
        return head[-1]
    return head


def accelerate_segmentor(segmentor: nn.Module,
                         channels_last: bool = False,
                         compile: Union[bool, dict] = False) -> nn.Module:
    """Channels-last weights and/or ``torch.compile`` for the attacks'
    passes through an MMSeg segmentor (in place; :data:`SEGMENTOR_PARTS`
    are compiled). Pair ``channels_last`` with
    ``AttackBatch.from_data(..., channels_last=True)``.

    Returns:
        nn.Module: The (unwrapped) segmentor.
    """
    seg = unwrap_segmentor(segmentor)
    return accelerate(seg, channels_last, compile, SEGMENTOR_PARTS)


@dataclass
class AttackBatch:
    """A data batch in the attacks' terms.

    Attributes:
        model (SegmentorAttackModel): ``x -> logits`` at label resolution.
        x (Tensor): ``(B, 3, H, W)`` images in [0, 1] (padded right/bottom to
            a common size).
        y (Tensor): ``(B, H', W')`` labels, ``ignore_index`` where ignored or
            padded.
        mask (Tensor): ``(B, 1, H, W)`` bool, True on real (not padded)
            pixels: only those may be perturbed.
        sizes (list): ``(h, w)`` of each image before padding.
        ignore_index (int): The ignored label.
    """
    model: 'SegmentorAttackModel'
    x: Tensor
    y: Tensor
    mask: Tensor
    sizes: List[tuple]
    ignore_index: int

    def raw_images(self, x: Tensor) -> List[Tensor]:
        """Images ``x`` in [0, 1] back to unpadded float ``[0, 255]`` tensors
        as the data preprocessor expects them."""
        return [x[i, :, :h, :w] * 255.0 for i, (h, w) in enumerate(self.sizes)]

    @classmethod
    def from_data(cls,
                  segmentor: nn.Module,
                  data: dict,
                  mode: str = 'test',
                  ignore_index: Optional[int] = None,
                  channels_last: bool = False) -> 'AttackBatch':
        """Build images, labels, mask and model from a dataloader batch.

        Args:
            segmentor (nn.Module): The segmentor (or its wrapper).
            data (dict): ``dict(inputs=[(3, H, W) tensors in [0, 255]],
                data_samples=[SegDataSample with gt_sem_seg])`` as MMSeg's
                dataloaders yield it.
            mode (str): ``'test'`` or ``'train'`` (see
                :class:`SegmentorAttackModel`).
            ignore_index (int, optional): Label of ignored (and padded)
                pixels; default the final decode head's. The evaluation
                passes its metric's, so attack and metric ignore the same
                pixels.
            channels_last (bool): Feed the segmentor channels-last inputs
                (see :func:`accelerate_segmentor`).

        Returns:
            AttackBatch: Everything the attacks need.
        """
        seg = unwrap_segmentor(segmentor)
        pre = seg.data_preprocessor
        inputs = data['inputs']
        samples = data.get('data_samples')
        if samples is None or len(samples) != len(inputs):
            raise ValueError('the batch needs one data sample per image '
                             '(with gt_sem_seg) to be attacked')
        if isinstance(inputs, Tensor):
            inputs = list(inputs)
        missing = [i for i, s in enumerate(samples) if 'gt_sem_seg' not in s]
        if missing:
            raise ValueError(
                f'data samples {missing} have no gt_sem_seg: attacks need '
                'labels; add LoadAnnotations to the test pipeline')
        device = next((p.device for p in seg.parameters()),
                      torch.device('cpu'))
        if ignore_index is None:
            ignore_index = int(
                getattr(final_decode_head(seg), 'ignore_index', 255))
        sizes = [tuple(img.shape[-2:]) for img in inputs]
        if mode == 'train':
            h, w = _target_size(sizes, pre.size, pre.size_divisor)
        else:
            test_cfg = getattr(pre, 'test_cfg', None) or {}
            h, w = _target_size(sizes, test_cfg.get('size'),
                                test_cfg.get('size_divisor'))
        x = torch.stack(
            [_pad_to(img.to(device).float(), h, w, 0.0)
             for img in inputs]) / 255.0
        mask = torch.zeros((len(inputs), 1, h, w),
                           dtype=torch.bool,
                           device=device)
        for i, (ih, iw) in enumerate(sizes):
            mask[i, :, :ih, :iw] = True
        labels = [s.gt_sem_seg.data.to(device).long()[0] for s in samples]
        if mode == 'train':
            lh, lw = h, w
        else:
            lh = max(t.shape[0] for t in labels)
            lw = max(t.shape[1] for t in labels)
        y = torch.stack([_pad_to(t, lh, lw, ignore_index) for t in labels])
        model = SegmentorAttackModel(seg, samples, mask, mode, (lh, lw), sizes,
                                     channels_last)
        return cls(model, x.clamp_(0.0, 1.0), y, mask, sizes, ignore_index)


def _pad_to(t: Tensor, h: int, w: int, value: float) -> Tensor:
    return F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=value)


def _target_size(sizes: Sequence[tuple], size=None, size_divisor=None):
    """Common padded size, as :func:`mmseg.utils.stack_batch` computes it."""
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    if size is not None:
        h, w = max(h, size[-2]), max(w, size[-1])
    elif size_divisor is not None and size_divisor > 1:
        h = int(math.ceil(h / size_divisor)) * size_divisor
        w = int(math.ceil(w / size_divisor)) * size_divisor
    return h, w


class SegmentorAttackModel(nn.Module):
    """Differentiable ``x in [0, 1] -> logits`` of an MMSeg segmentor.

    Args:
        segmentor (nn.Module): An ``EncoderDecoder`` (or subclass), possibly
            inside a model wrapper.
        data_samples (list[SegDataSample]): The batch's data samples (their
            metainfo drives inference and post-processing).
        mask (Tensor): ``(B, 1, H, W)`` bool, real pixels of the padded
            batch; padded pixels get the preprocessor's ``pad_val``.
        mode (str): ``'test'``: the segmentor's inference (whole/slide) and
            post-processing, logits at the size of ``gt_sem_seg`` (or
            ``ori_shape``). ``'train'``: ``encode_decode`` on the padded
            batch, logits at the padded input size (adversarial training).
        label_size (tuple, optional): ``(H', W')`` the logits are padded to
            in test mode (largest label of the batch).
        sizes (list, optional): ``(h, w)`` of each image before padding
            (the real pixels of ``mask``); derived from ``mask`` if not
            given. Kept on the host so that no forward pass reads the
            device (docs/attacks.md, "Host synchronisation").
        channels_last (bool): Feed the segmentor channels-last inputs
            (pair it with weights in that layout, see
            :func:`~mmseg_robust.adapter.accelerate_segmentor`).
    """

    def __init__(self,
                 segmentor: nn.Module,
                 data_samples: list,
                 mask: Tensor,
                 mode: str = 'test',
                 label_size: Optional[tuple] = None,
                 sizes: Optional[Sequence[tuple]] = None,
                 channels_last: bool = False):
        super().__init__()
        if mode not in ('test', 'train'):
            raise ValueError(f"mode must be 'test' or 'train', got {mode!r}")
        segmentor = unwrap_segmentor(segmentor)
        if any(c.__name__ == 'DepthEstimator'
               for c in type(segmentor).__mro__):
            raise TypeError(
                f'{type(segmentor).__name__} (e.g. VPD) predicts depth, not '
                'class logits: SEA and adversarial training need a semantic '
                'segmentor (EncoderDecoder or a subclass)')
        for attr in ('data_preprocessor', 'encode_decode', 'inference'):
            if not hasattr(segmentor, attr):
                raise TypeError(f'{type(segmentor).__name__} is not an MMSeg '
                                f'EncoderDecoder-like segmentor (no `{attr}`)')
        # keep the segmentor out of this module's children so that
        # state_dict()/parameters() of the wrapper stay empty
        object.__setattr__(self, 'segmentor', segmentor)
        self.data_samples = list(data_samples)
        self.mask = mask
        self.mode = mode
        self.label_size = label_size
        if sizes is None:  # one read-back, at construction
            m = mask[:, 0]
            sizes = list(
                zip(m.any(2).sum(1).tolist(),
                    m.any(1).sum(1).tolist()))
        self.sizes = [tuple(int(v) for v in s) for s in sizes]
        self.padded = any(
            tuple(s) != tuple(mask.shape[-2:]) for s in self.sizes)
        self.channels_last = bool(channels_last)

    # ``training`` mirrors the segmentor so that attacks can warn
    @property
    def training(self) -> bool:  # type: ignore[override]
        return self.segmentor.training

    @training.setter
    def training(self, value: bool) -> None:
        pass

    def subset(self, idx: Union[Tensor,
                                Sequence[int]]) -> 'SegmentorAttackModel':
        """The same model restricted to images ``idx`` of the batch (a
        tensor of positions, or a list of them: no read-back)."""
        idx_list = idx.tolist() if isinstance(idx, Tensor) else list(idx)
        if idx_list == list(range(len(self.data_samples))):
            return self  # the whole batch: nothing to select
        return SegmentorAttackModel(
            self.segmentor, [self.data_samples[i] for i in idx_list],
            self.mask[torch.as_tensor(idx_list, device=self.mask.device)],
            self.mode, self.label_size, [self.sizes[i] for i in idx_list],
            self.channels_last)

    def normalize(self, x: Tensor) -> Tensor:
        """What ``SegDataPreProcessor`` does to ``x * 255``: channel order,
        mean/std, and ``pad_val`` on padded pixels."""
        pre = self.segmentor.data_preprocessor
        inputs = x * 255.0
        if getattr(pre, 'channel_conversion', False) and inputs.shape[1] == 3:
            inputs = inputs[:, [2, 1, 0]]
        if getattr(pre, '_enable_normalize', False):
            inputs = (inputs - pre.mean.to(inputs)) / pre.std.to(inputs)
        if self.padded:
            pad_val = float(getattr(pre, 'pad_val', 0))
            inputs = torch.where(
                self.mask.to(inputs.device), inputs,
                inputs.new_tensor(pad_val))
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def forward(self, x: Tensor) -> Tensor:
        inputs = self.normalize(x)
        if self.mode == 'train':
            metas = [
                dict(img_shape=inputs.shape[2:], pad_shape=inputs.shape[2:])
                for _ in range(inputs.shape[0])
            ]
            return self._binary_to_two_class(
                self.segmentor.encode_decode(inputs, metas))
        return self._test_forward(inputs)

    def _test_forward(self, inputs: Tensor) -> Tensor:
        seg = self.segmentor
        H, W = inputs.shape[2:]
        metas = []
        for sample, (h, w) in zip(self.data_samples, self.sizes):
            meta = dict(sample.metainfo)
            meta['img_padding_size'] = [0, W - w, 0, H - h]
            meta['pad_shape'] = (H, W)
            meta.setdefault('ori_shape', (h, w))
            meta.setdefault('img_shape', (h, w))
            metas.append(meta)
        seg_logits = seg.inference(inputs, metas)
        outs = []
        for i, (sample, meta) in enumerate(zip(self.data_samples, metas)):
            left, right, top, bottom = meta['img_padding_size']
            logit = seg_logits[i:i + 1, :, top:H - bottom, left:W - right]
            if meta.get('flip', False):
                dims = (3, ) if meta.get(
                    'flip_direction', 'horizontal') == 'horizontal' else (2, )
                logit = logit.flip(dims=dims)
            out_size = tuple(sample.gt_sem_seg.shape) \
                if 'gt_sem_seg' in sample else tuple(meta['ori_shape'][:2])
            logit = F.interpolate(
                logit,
                size=out_size,
                mode='bilinear',
                align_corners=seg.align_corners)
            outs.append(logit)
        lh = max(o.shape[2] for o in outs)
        lw = max(o.shape[3] for o in outs)
        if self.label_size is not None:
            lh, lw = max(lh, self.label_size[0]), max(lw, self.label_size[1])
        logits = torch.cat([_pad_to(o, lh, lw, 0.0) for o in outs])
        return self._binary_to_two_class(logits)

    def _binary_to_two_class(self, logits: Tensor) -> Tensor:
        """Single-channel (sigmoid) heads: logits ``[logit(t), u]`` so that
        argmax reproduces MMSeg's ``sigmoid(u) > threshold``."""
        if logits.shape[1] != 1:
            return logits
        t = getattr(final_decode_head(self.segmentor), 'threshold',
                    None) or 0.3
        return torch.cat(
            [torch.full_like(logits, math.log(t / (1 - t))), logits], dim=1)

    @classmethod
    def from_batch(cls,
                   segmentor: nn.Module,
                   data: dict,
                   mode: str = 'test',
                   ignore_index: Optional[int] = None) -> AttackBatch:
        """Same as :meth:`AttackBatch.from_data` (the earlier name, kept for
        a release)."""
        return AttackBatch.from_data(segmentor, data, mode, ignore_index)
