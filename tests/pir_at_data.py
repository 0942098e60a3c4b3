"""Fabricated PASCAL-VOC and ADE20K folders, and the authors' validation
crop re-derived independently of the package, for the paper-protocol tests.

:func:`authors_val_sample` restates, from the authors' released loaders
(``SegmentationDataset._val_sync_transform`` and the ``pascalvoc`` /
``ADE20K`` datasets of ``nmndeep/Robust-Segmentation`` with
``transform=ToTensor()``), what one validation sample is: PIL decoding,
short side resized to the crop size, centre crop, ``[0, 1]`` tensor, VOC's
255 set to 0. It is deliberately written with plain PIL / numpy calls and
shares no code with :mod:`mmseg_robust.datasets.transforms`.
"""
import os
import os.path as osp
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

__all__ = [
    'VOC_SIZES', 'ADE_SIZES', 'make_voc_folder', 'make_ade_folder',
    'authors_val_sample', 'voc_palette'
]

# (width, height): landscape and portrait, one square, one smaller than the
# crop (upscaled), sizes whose resized long side leaves an odd margin (the
# centre offset is then a half, rounded to even) and one with an even margin
VOC_SIZES = [(500, 375), (353, 500), (400, 400), (200, 150), (500, 333)]
ADE_SIZES = [(683, 512), (512, 768), (300, 300), (640, 427), (256, 171)]


def voc_palette() -> List[int]:
    """PASCAL-VOC's colour map (the palette of its label PNGs)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _scene(rng: np.random.Generator, width: int, height: int, num_classes: int,
           first_class: int, boundary: bool) -> Tuple[np.ndarray, np.ndarray]:
    """A smooth colour image with a few filled shapes and their labels."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    img = np.stack([
        128 + 60 * np.sin(xx / rng.uniform(15, 40) + rng.uniform(0, 6)) +
        40 * np.cos(yy / rng.uniform(10, 30)) for _ in range(3)
    ],
                   axis=-1)
    label = np.full((height, width), first_class, np.uint8)
    for _ in range(4):
        cls = int(rng.integers(first_class + 1, num_classes))
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry = rng.uniform(0.1, 0.35) * height
        rx = rng.uniform(0.1, 0.35) * width
        inside = ((yy - cy) / ry)**2 + ((xx - cx) / rx)**2 <= 1
        img[inside] = rng.uniform(0, 255, 3)
        label[inside] = cls
        if boundary:  # VOC marks object outlines with 255
            ring = (((yy - cy) / (ry + 3))**2 + ((xx - cx) /
                                                 (rx + 3))**2 <= 1) & ~inside
            label[ring] = 255
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label


def make_voc_folder(root: str,
                    sizes: Sequence[Tuple[int, int]] = VOC_SIZES,
                    seed: int = 0) -> str:
    """Write ``root/VOCdevkit/VOC2012`` as PASCAL-VOC 2012 lays it out:
    ``JPEGImages/*.jpg``, palette PNG labels in ``SegmentationClass/``
    (classes 0-20, object outlines 255) and
    ``ImageSets/Segmentation/val.txt``.

    Returns:
        str: The ``VOC2012`` folder (MMSeg's ``data_root``).
    """
    voc = osp.join(root, 'VOCdevkit', 'VOC2012')
    for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        os.makedirs(osp.join(voc, sub), exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i, (w, h) in enumerate(sizes):
        name = f'2007_{i:06d}'
        img, label = _scene(rng, w, h, 21, 0, boundary=True)
        Image.fromarray(img).save(
            osp.join(voc, 'JPEGImages', name + '.jpg'), quality=90)
        png = Image.fromarray(label)
        png.putpalette(voc_palette())  # 'L' -> 'P', as VOC's label files
        png.save(osp.join(voc, 'SegmentationClass', name + '.png'))
        names.append(name)
    with open(osp.join(voc, 'ImageSets', 'Segmentation', 'val.txt'), 'w') as f:
        f.write('\n'.join(names) + '\n')
    return voc


def make_ade_folder(root: str,
                    sizes: Sequence[Tuple[int, int]] = ADE_SIZES,
                    seed: int = 1) -> str:
    """Write ``root/ade/ADEChallengeData2016`` as ADE20K lays it out:
    ``images/validation/*.jpg`` and grey PNG labels (0 = other, 1-150) in
    ``annotations/validation/``.

    Returns:
        str: The ``ADEChallengeData2016`` folder (MMSeg's ``data_root``).
    """
    ade = osp.join(root, 'ade', 'ADEChallengeData2016')
    for sub in ('images/validation', 'annotations/validation'):
        os.makedirs(osp.join(ade, sub), exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (w, h) in enumerate(sizes):
        name = f'ADE_val_{i + 1:08d}'
        img, label = _scene(rng, w, h, 151, 0, boundary=False)
        # some "other" (0) pixels inside objects too
        label[rng.random(label.shape) < 0.02] = 0
        Image.fromarray(img).save(
            osp.join(ade, 'images', 'validation', name + '.jpg'), quality=90)
        Image.fromarray(label).save(
            osp.join(ade, 'annotations', 'validation', name + '.png'))
    return ade


def authors_val_sample(img_path: str, mask_path: str, crop: int,
                       voc: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """One validation sample as the authors' loaders produce it.

    Args:
        img_path (str): The JPEG.
        mask_path (str): The label PNG.
        crop (int): Crop size (473 for VOC, 512 for ADE20K).
        voc (bool): Apply the VOC loader's ``target[target == 255] = 0``.

    Returns:
        tuple: ``x`` ``(3, crop, crop)`` float in [0, 1] (RGB, as
        ``ToTensor``) and ``y`` ``(crop, crop)`` long labels.
    """
    img = Image.open(img_path).convert('RGB')
    mask = Image.open(mask_path)
    w, h = img.size
    if w > h:
        oh, ow = crop, int(1.0 * w * crop / h)
    else:
        ow, oh = crop, int(1.0 * h * crop / w)
    img = img.resize((ow, oh), Image.BILINEAR)
    mask = mask.resize((ow, oh), Image.NEAREST)
    x1 = int(round((ow - crop) / 2.0))
    y1 = int(round((oh - crop) / 2.0))
    img = img.crop((x1, y1, x1 + crop, y1 + crop))
    mask = mask.crop((x1, y1, x1 + crop, y1 + crop))
    target = np.array(mask).astype('int32')
    if voc:
        target[target == 255] = 0
    return to_tensor(img), torch.from_numpy(target).long()
