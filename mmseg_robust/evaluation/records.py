"""Per-image SEA result records: what the evaluation stores for each image
and attack so that metrics can be recomputed, resumed and merged.

A record is a JSON-friendly dict::

    {'idx': 12, 'img_path': '...', 'valid': 2511, 'time': 31.2,
     'size': {'valid': [120, 871, 1520], 'objects': [9, 4, 2]},
     'clean': AREAS,
     'eps': {'4': {'worst': AREAS, 'mask_ce': AREAS, ...}, ...},
     'worst_attack': {'4': 'js', ...}}

where ``AREAS`` holds the pixel counts MMSeg's ``IoUMetric`` accumulates,
sparse over the classes with a non-empty union, plus the image's correct
pixel count and its correct pixels per object-size bucket:
``{'c': [classes], 'i': [...], 'u': [...], 'p': [...], 'l': [...],
'correct': n, 'size_correct': [small, medium, large]}``. ``size`` holds
the image's valid pixels and ground-truth objects per bucket
(:mod:`~mmseg_robust.evaluation.object_sizes`; its ``valid`` adds up to
``valid``). Records written before size buckets existed lack ``size`` and
``size_correct``: they load, resume and give every other metric.
"""
import json
import os
from typing import Iterable, List, Optional, Tuple

import numpy as np
import torch
from mmseg.evaluation.metrics import IoUMetric
from torch import Tensor

from .object_sizes import correct_by_size

__all__ = [
    'eps_key', 'radius_label', 'RADIUS_AXIS', 'image_areas', 'dense_areas',
    'read_records', 'RecordWriter', 'sum_areas', 'image_miou'
]


def eps_key(eps: float, norm: str = 'linf') -> str:
    """``4/255 -> '4'``, ``0.5/255 -> '0.5'``: l_inf radii in units of
    1/255; l_2 radii as they are (``0.5 -> '0.5'``; results record the
    norm in their settings)."""
    return f'{round(eps * 255 if norm == "linf" else eps, 6):g}'


#: The radius axis of tables and plots per threat model.
RADIUS_AXIS = {'linf': 'eps (x 1/255)', 'l2': 'l2 radius'}


def radius_label(key: str, norm: str = 'linf') -> str:
    """A radius key (:func:`eps_key`) as printed: ``'4/255'``,
    ``'l2 0.5'``."""
    return f'{key}/255' if norm == 'linf' else f'l2 {key}'


def image_areas(pred: Tensor,
                label: Tensor,
                num_classes: int,
                ignore_index: int,
                buckets: Optional[Tensor] = None) -> dict:
    """One image's entry of a record: its sparse intersection, union,
    prediction and label areas per class (what MMSeg's ``IoUMetric``
    accumulates) and its correct pixel count.

    Args:
        pred (Tensor): ``(H, W)`` predicted classes.
        label (Tensor): ``(H, W)`` label map.
        num_classes (int): Number of classes.
        ignore_index (int): The ignored label.
        buckets (Tensor, optional): The label's object-size buckets
            (:func:`~mmseg_robust.evaluation.object_sizes.size_buckets`);
            given, the entry also holds ``size_correct``, the correct
            pixels per bucket.

    Returns:
        dict: The sparse ``AREAS`` entry (module docstring).
    """
    inter, union, pred_area, label_area = IoUMetric.intersect_and_union(
        pred, label, num_classes, ignore_index)
    classes = torch.nonzero(union > 0).flatten()
    valid = label != ignore_index
    correct = int(((pred == label) & valid).sum())
    out = dict(
        c=classes.tolist(),
        i=inter[classes].long().tolist(),
        u=union[classes].long().tolist(),
        p=pred_area[classes].long().tolist(),
        l=label_area[classes].long().tolist(),
        correct=correct)
    if buckets is not None:
        out['size_correct'] = correct_by_size(pred, label, buckets)
    return out


def image_miou(areas: dict) -> Optional[float]:
    """An image's mIoU (a fraction) from its sparse areas: the mean over
    the classes present in its label (label area > 0) of intersection /
    union.

    A class predicted on the image but absent from its label is not a
    class of the mean; its pixels still lower the IoU of the classes they
    belong to (they are in those classes' unions, not their
    intersections). docs/evaluation.md, "Where models break".

    Args:
        areas (dict): An ``AREAS`` entry of a record.

    Returns:
        float | None: The mIoU, ``None`` for an image without valid
        pixels (no class present).
    """
    label = np.asarray(areas['l'], np.float64)
    present = label > 0
    if not present.any():
        return None
    inter = np.asarray(areas['i'], np.float64)[present]
    union = np.asarray(areas['u'], np.float64)[present]
    return float(np.mean(inter / union))


def dense_areas(rec: dict, num_classes: int) -> Tuple[np.ndarray, ...]:
    """The four dense ``(num_classes,)`` area arrays of a sparse record."""
    out = [np.zeros(num_classes, np.int64) for _ in range(4)]
    c = np.asarray(rec['c'], np.int64)
    for arr, key in zip(out, 'iupl'):
        if len(c):
            arr[c] = rec[key]
    return tuple(out)


def read_records(path: str) -> Tuple[dict, List[dict], int]:
    """Read a results file written by :class:`RecordWriter`.

    Returns:
        tuple: ``(header, records, n_bad)``; unreadable lines (an
        interrupted write leaves a partial last line) are skipped and
        counted, so their images are attacked again.
    """
    header, records, bad = None, [], 0
    if not os.path.exists(path):
        return header, records, bad
    with open(path, encoding='utf-8') as f:
        for line in f:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(item, dict):
                bad += 1
            elif 'header' in item:
                header = item['header']
            elif 'idx' in item:
                records.append(item)
            else:
                bad += 1
    return header, records, bad


class RecordWriter:
    """Append-only JSON-lines file of records, flushed after every batch.

    Args:
        path (str): The file.
        header (dict): Settings written as the first line.
        keep (Iterable[dict]): Records to keep when the file is (re)written
            (on resume: the good records already there).
    """

    def __init__(self, path: str, header: dict, keep: Iterable[dict] = ()):
        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
        tmp = path + '.tmp'
        # rewrite atomically: drops partial lines, keeps good records
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(json.dumps({'header': header}) + '\n')
            for rec in keep:
                f.write(json.dumps(rec) + '\n')
        os.replace(tmp, path)
        self.path = path
        self._f = open(path, 'a', encoding='utf-8')

    def write(self, records: Iterable[dict]) -> None:
        for rec in records:
            self._f.write(json.dumps(rec) + '\n')
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def sum_areas(records: Iterable[dict], select,
              num_classes: int) -> List[Tensor]:
    """Sum the areas ``select(record)`` over records, as the four float64
    tensors :meth:`IoUMetric.total_area_to_metrics` takes."""
    total = [np.zeros(num_classes, np.int64) for _ in range(4)]
    for rec in records:
        for acc, arr in zip(total, dense_areas(select(rec), num_classes)):
            acc += arr
    return [torch.from_numpy(t.astype(np.float64)) for t in total]
