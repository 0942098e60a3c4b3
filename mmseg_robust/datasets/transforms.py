"""Data transforms of the paper's evaluation protocol.

The authors of the paper (Croce, Singh & Hein, 2023) evaluate their released
models on one square crop per validation image, produced by their loaders'
validation transform (``_val_sync_transform`` of their
``SegmentationDataset``): with ``S`` the crop size,

1. resize the image with PIL so that its **short side** is ``S``; the long
   side becomes ``int(long * S / short)`` (truncated). The image uses PIL's
   bilinear filter, the label PIL's nearest neighbour;
2. cut the centred ``S x S`` window, with offsets
   ``int(round((size - S) / 2))`` (Python's ``round``: halves go to the
   even integer);
3. feed the crop as ``ToTensor()`` does (``[0, 1]``, no mean/std; in MMSeg:
   a data preprocessor with mean 0 and std 255).

Their PASCAL-VOC loader then sets the boundary label 255 to 0 (background);
their ADE20K loader keeps label 0 ("other") as a class.

:class:`ShortSideResizeCenterCrop` is steps 1-2 as an MMSeg transform and
:class:`RemapLabels` the label change; ``configs/pir_at/`` uses them after
``LoadImageFromFile(imdecode_backend='pillow',
color_type='color_ignore_orientation')`` (PIL's decoder and no EXIF
rotation, as ``Image.open(...).convert('RGB')``) and ``LoadAnnotations``.
"""
from typing import Dict, Mapping

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from PIL import Image

__all__ = ['ShortSideResizeCenterCrop', 'RemapLabels']


def short_side_size(width: int, height: int, size: int) -> tuple:
    """``(new_width, new_height)`` with the short side equal to ``size``,
    as the authors' loader computes it (the long side truncated; a square
    image or a portrait one scales its width to ``size``)."""
    if width > height:
        return int(1.0 * width * size / height), size
    return size, int(1.0 * height * size / width)


def center_offset(length: int, size: int) -> int:
    """Offset of a centred window of ``size`` in ``length`` (Python
    ``round``, halves to even, as the authors' loader)."""
    return int(round((length - size) / 2.0))


@TRANSFORMS.register_module()
class ShortSideResizeCenterCrop(BaseTransform):
    """Resize the short side to ``size`` with PIL, then crop the centre.

    Reproduces the validation crop of the paper's released loaders (module
    doc): the image is resized with PIL's bilinear filter (which, like
    ``Image.resize``, smooths when it shrinks), the segmentation maps with
    PIL's nearest neighbour, and the centred ``size x size`` window is kept.
    An image smaller than ``size`` is enlarged the same way, so the output
    is always ``size x size``.

    The crop *is* the evaluated image: ``img_shape`` and ``ori_shape``
    become ``(size, size)``, so MMSeg neither resizes predictions back to
    the original image nor compares them with uncropped labels.

    Required keys: ``img`` (``uint8``, ``H x W x 3`` or ``H x W``).
    Modified keys: ``img``, ``img_shape``, ``ori_shape``, every key of
    ``seg_fields`` (e.g. ``gt_seg_map``).
    Added keys: ``scale_factor`` (``(w_scale, h_scale)`` of the resize),
    ``crop_bbox`` (``(x1, y1, x2, y2)`` in the resized image),
    ``ori_img_shape`` (the shape before this transform).

    Args:
        size (int): Side of the square crop (the authors: 473 for
            PASCAL-VOC, 512 for ADE20K).
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f'ShortSideResizeCenterCrop: size must be a positive int '
                f'(the side of the square crop, e.g. 473), got {size!r}')
        self.size = size

    @staticmethod
    def _resize(array: np.ndarray, width: int, height: int, resample: int,
                key: str) -> np.ndarray:
        if array.dtype != np.uint8:
            raise TypeError(
                f'ShortSideResizeCenterCrop: {key} must be uint8 to be '
                f'resized by PIL as the authors do, got {array.dtype}; load '
                "images without to_float32 and put this transform before "
                'any float conversion')
        # np.array: a writable copy (np.asarray of a PIL image is read-only)
        return np.array(
            Image.fromarray(array).resize((width, height), resample))

    def _crop(self, array: np.ndarray, x1: int, y1: int) -> np.ndarray:
        return np.ascontiguousarray(array[y1:y1 + self.size,
                                          x1:x1 + self.size])

    def transform(self, results: Dict) -> Dict:
        """Resize and crop ``results`` in place (see the class doc)."""
        img = results['img']
        height, width = img.shape[:2]
        new_w, new_h = short_side_size(width, height, self.size)
        x1 = center_offset(new_w, self.size)
        y1 = center_offset(new_h, self.size)

        img = self._resize(img, new_w, new_h, Image.BILINEAR, 'img')
        results['img'] = self._crop(img, x1, y1)
        for key in results.get('seg_fields', []):
            seg = results[key]
            if seg.shape[:2] != (height, width):
                raise ValueError(
                    f'ShortSideResizeCenterCrop: {key} has shape '
                    f'{seg.shape[:2]} but the image {(height, width)}; '
                    'image and label must have the same size')
            seg = self._resize(seg, new_w, new_h, Image.NEAREST, key)
            results[key] = self._crop(seg, x1, y1)

        crop_shape = results['img'].shape[:2]
        results['ori_img_shape'] = (height, width)
        results['img_shape'] = crop_shape
        results['ori_shape'] = crop_shape
        results['scale_factor'] = (new_w / width, new_h / height)
        results['crop_bbox'] = (x1, y1, x1 + self.size, y1 + self.size)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


@TRANSFORMS.register_module()
class RemapLabels(BaseTransform):
    """Replace label values in the segmentation maps.

    ``RemapLabels(mapping={255: 0})`` counts PASCAL-VOC's boundary pixels as
    background, as the paper's released VOC loader does. Values not in
    ``mapping`` are kept; all replacements are read from the input map, so
    ``{1: 2, 2: 1}`` swaps.

    Required keys: ``seg_fields`` and the maps they name.
    Modified keys: those maps.

    Args:
        mapping (dict[int, int]): ``{old: new}`` label values in [0, 255].
    """

    def __init__(self, mapping: Mapping[int, int]) -> None:
        if not isinstance(mapping, Mapping) or not mapping:
            raise ValueError(
                'RemapLabels: mapping must be a non-empty dict {old: new}, '
                f'e.g. {{255: 0}}; got {mapping!r}')
        for old, new in mapping.items():
            for value in (old, new):
                if isinstance(value, bool) or not isinstance(
                        value, (int, np.integer)) or not 0 <= value <= 255:
                    raise ValueError(
                        'RemapLabels: labels must be ints in [0, 255], got '
                        f'{old!r}: {new!r}')
        self.mapping = {int(k): int(v) for k, v in mapping.items()}
        self._lut = np.arange(256, dtype=np.uint8)
        for old, new in self.mapping.items():
            self._lut[old] = new

    def transform(self, results: Dict) -> Dict:
        """Apply the mapping to every map of ``seg_fields``."""
        for key in results.get('seg_fields', []):
            seg = results[key]
            if seg.dtype == np.uint8:
                results[key] = self._lut[seg]
            else:
                out = seg.copy()
                for old, new in self.mapping.items():
                    out[seg == old] = new
                results[key] = out
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(mapping={self.mapping})'
