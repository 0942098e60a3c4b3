"""Robustness by object size: the ground-truth objects of an image (the
connected components of each class), bucketed by area relative to the
image, and the pixels of each bucket a prediction gets right.

Definitions (docs/evaluation.md, "Where models break"):

* an *object* is an 8-connected component of the pixels of one class in
  the label map; ignored pixels belong to no object (an object cut by an
  ignored line counts as two);
* its bucket is decided by its area ``a`` in pixels against the image area
  ``H * W`` (of the label map, before padding): COCO's edges 32^2 and 96^2
  pixels at a 512 x 512 reference image, scaled by ``H * W / 512^2``::

      small   a * 512^2 <  32^2 * H * W   (a < 0.39% of the image)
      medium  a * 512^2 <  96^2 * H * W   (a < 3.52% of the image)
      large   otherwise

  (integer arithmetic, so no pixel falls on the wrong side by rounding);
* every valid pixel is in exactly one object, hence in exactly one bucket:
  the buckets' pixel counts add up to the image's valid pixels.
"""
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    'SIZE_BUCKETS', 'SIZE_EDGES', 'REFERENCE_SIZE', 'size_thresholds',
    'size_buckets', 'correct_by_size'
]

#: Bucket names, smallest first (their index is the bucket id).
SIZE_BUCKETS = ('small', 'medium', 'large')
#: COCO's bucket edges in pixels (side of a square) at REFERENCE_SIZE.
SIZE_EDGES = (32, 96)
#: ``(H, W)`` of the image at which SIZE_EDGES hold as they are.
REFERENCE_SIZE = (512, 512)
#: 8-connectivity: diagonal neighbours of the same class are one object.
CONNECTIVITY = np.ones((3, 3), dtype=bool)


def size_thresholds(height: int, width: int) -> Tuple[float, float]:
    """The areas (pixels) at which the medium and the large bucket start
    for an image of ``height x width`` pixels.

    Args:
        height (int): Image height.
        width (int): Image width.

    Returns:
        tuple: ``(small_below, medium_below)``; e.g. ``(1024.0, 9216.0)``
        at 512 x 512, ``(64.0, 576.0)`` at 128 x 128.
    """
    scale = height * width / (REFERENCE_SIZE[0] * REFERENCE_SIZE[1])
    return tuple(float(e * e * scale) for e in SIZE_EDGES)


def _bucket_of_areas(areas: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bucket id of each object area (integer comparisons)."""
    ref = REFERENCE_SIZE[0] * REFERENCE_SIZE[1]
    scaled = areas.astype(np.int64) * ref
    hw = int(height) * int(width)
    out = np.zeros(len(areas), np.int8)
    for edge in SIZE_EDGES:
        out += (scaled >= edge * edge * hw).astype(np.int8)
    return out


def size_buckets(
    label: Union[Tensor, np.ndarray],
    ignore_index: int,
    image_size: Optional[Sequence[int]] = None
) -> Tuple[Union[Tensor, np.ndarray], dict]:
    """Bucket every valid pixel of a label map by the size of its object.

    Args:
        label (Tensor | np.ndarray): ``(H', W')`` label map (possibly padded
            with ``ignore_index``).
        ignore_index (int): The ignored label.
        image_size (Sequence[int], optional): ``(H, W)`` of the image before
            padding, whose area scales the bucket edges (default: the
            label map's shape).

    Returns:
        tuple: ``(buckets, entry)``: ``buckets`` has the label's shape, type
        (int8; a tensor on the label's device for a tensor) and holds each
        pixel's bucket id (index into :data:`SIZE_BUCKETS`), -1 where
        ignored; ``entry`` is the record's ``size`` entry, ``{'valid':
        [pixels per bucket], 'objects': [objects per bucket]}``.
    """
    from scipy import ndimage
    is_tensor = isinstance(label, Tensor)
    lab = label.detach().cpu().numpy() if is_tensor else np.asarray(label)
    if lab.ndim != 2:
        raise ValueError(f'expected an (H, W) label map, got {lab.shape}')
    h, w = lab.shape if image_size is None else image_size
    buckets = np.full(lab.shape, -1, np.int8)
    objects = np.zeros(len(SIZE_BUCKETS), np.int64)
    valid = lab != ignore_index
    # each class's bounding box (classes as labels 1, 2, ...), then its
    # components inside the box only
    classes = np.unique(lab[valid])
    dense = np.zeros(lab.shape, np.int32)
    dense[valid] = np.searchsorted(classes, lab[valid]) + 1
    for k, box in enumerate(ndimage.find_objects(dense)):
        comp, n = ndimage.label(dense[box] == k + 1, structure=CONNECTIVITY)
        areas = np.bincount(comp.ravel(), minlength=n + 1)[1:]
        ids = _bucket_of_areas(areas, h, w)
        objects += np.bincount(ids, minlength=len(SIZE_BUCKETS))
        inside = comp > 0
        buckets[box][inside] = ids[comp[inside] - 1]
    counts = np.bincount(
        buckets[valid].astype(np.int64), minlength=len(SIZE_BUCKETS))
    entry = dict(valid=counts.tolist(), objects=objects.tolist())
    if is_tensor:
        return torch.from_numpy(buckets).to(label.device), entry
    return buckets, entry


def correct_by_size(pred: Union[Tensor, np.ndarray], label: Union[Tensor,
                                                                  np.ndarray],
                    buckets: Union[Tensor, np.ndarray]) -> List[int]:
    """Correctly predicted valid pixels per bucket.

    Args:
        pred (Tensor | np.ndarray): ``(H', W')`` predicted classes.
        label (Tensor | np.ndarray): ``(H', W')`` label map.
        buckets (Tensor | np.ndarray): :func:`size_buckets` of ``label``.

    Returns:
        list: One count per bucket of :data:`SIZE_BUCKETS`.
    """
    n = len(SIZE_BUCKETS)
    if isinstance(buckets, Tensor):
        ok = (pred == label) & (buckets >= 0)
        return torch.bincount(buckets[ok].long(), minlength=n).tolist()
    ok = (np.asarray(pred) == np.asarray(label)) & (buckets >= 0)
    return np.bincount(buckets[ok].astype(np.int64), minlength=n).tolist()
