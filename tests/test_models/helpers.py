"""Dataloader-style batches for the adapter tests and the family sweep."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def make_batch(n: int,
               size: Tuple[int, int],
               label_size: Optional[Tuple[int, int]] = None,
               flips: Optional[Tuple[bool, ...]] = None,
               seed: int = 0,
               num_classes: int = 4,
               edges: bool = False,
               ignore: bool = True) -> dict:
    """A dataloader-style batch as MMSeg's pipelines pack it.

    Args:
        n (int): Images.
        size (tuple): ``(h, w)`` of the images (after the pipeline's resize).
        label_size (tuple, optional): ``(h, w)`` of the labels, also the
            ``ori_shape`` (test pipelines load labels at the original size).
        flips (tuple, optional): Per image, whether the pipeline flipped it
            horizontally (``flip`` metainfo).
        seed (int): Seed of the images and labels.
        num_classes (int): Labels are drawn from ``range(num_classes)``, a
            few pixels are 255 (ignored).
        edges (bool): Add ``gt_edge_map`` (PIDNet's training needs it).
        ignore (bool): Mark a few label pixels 255 (ignored).

    Returns:
        dict: ``dict(inputs=[uint8 (3, h, w)], data_samples=[SegDataSample])``.
    """
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    label_size = tuple(label_size or size)
    flips = flips or (False, ) * n
    inputs, samples = [], []
    for i in range(n):
        # smooth images: a low-resolution pattern upsampled, plus noise
        low = torch.rand((1, 3, 4, 4), generator=g) * 255
        img = F.interpolate(
            low, size=size, mode='bilinear', align_corners=False)[0]
        img = img + torch.randn(img.shape, generator=g) * 10
        inputs.append(img.clamp(0, 255).round().to(torch.uint8))
        label = torch.randint(0, num_classes, (1, ) + label_size, generator=g)
        if ignore:
            label[:, :2, :3] = 255
        s = SegDataSample()
        s.set_metainfo(
            dict(
                img_path=f'img_{i}.png',
                ori_shape=label_size,
                img_shape=tuple(size),
                scale_factor=(size[1] / label_size[1],
                              size[0] / label_size[0]),
                flip=bool(flips[i]),
                flip_direction='horizontal' if flips[i] else None))
        s.gt_sem_seg = PixelData(data=label)
        if edges:
            s.gt_edge_map = PixelData(
                data=(label != torch.roll(label, 1, -1)).long())
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)
