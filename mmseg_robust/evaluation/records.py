"""Per-image SEA result records: what the evaluation stores for each image
and attack so that metrics can be recomputed, resumed and merged.

A record is a JSON-friendly dict::

    {'idx': 12, 'img_path': '...', 'valid': 2511, 'time': 31.2,
     'clean': AREAS,
     'eps': {'4': {'worst': AREAS, 'mask_ce': AREAS, ...}, ...},
     'worst_attack': {'4': 'js', ...}}

where ``AREAS`` holds the pixel counts MMSeg's ``IoUMetric`` accumulates,
sparse over the classes with a non-empty union, plus the image's correct
pixel count: ``{'c': [classes], 'i': [...], 'u': [...], 'p': [...],
'l': [...], 'correct': n}``.
"""
import json
import os
from typing import Iterable, List, Tuple

import numpy as np
import torch
from mmseg.evaluation.metrics import IoUMetric
from torch import Tensor

__all__ = [
    'eps_key', 'image_areas', 'dense_areas', 'read_records', 'RecordWriter',
    'sum_areas'
]


def eps_key(eps: float) -> str:
    """``4/255 -> '4'``, ``0.5/255 -> '0.5'``: radii in units of 1/255."""
    return f'{round(eps * 255, 6):g}'


def image_areas(pred: Tensor, label: Tensor, num_classes: int,
                ignore_index: int) -> dict:
    """One image's entry of a record: its sparse intersection, union,
    prediction and label areas per class (what MMSeg's ``IoUMetric``
    accumulates) and its correct pixel count."""
    inter, union, pred_area, label_area = IoUMetric.intersect_and_union(
        pred, label, num_classes, ignore_index)
    classes = torch.nonzero(union > 0).flatten()
    valid = label != ignore_index
    correct = int(((pred == label) & valid).sum())
    return dict(
        c=classes.tolist(),
        i=inter[classes].long().tolist(),
        u=union[classes].long().tolist(),
        p=pred_area[classes].long().tolist(),
        l=label_area[classes].long().tolist(),
        correct=correct)


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
