"""The computations :class:`SEAMetric` makes from per-image records: one
output's metrics, the object-size totals and the worst case by mIoU."""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from mmengine.logging import print_log
from mmseg.evaluation.metrics import IoUMetric

from mmseg_robust.metrics_core import worst_case_miou
from ..object_sizes import SIZE_BUCKETS
from ..records import dense_areas, image_miou, sum_areas

__all__ = ['sorted_eps', 'output_summary', 'size_totals', 'worst_miou_choice']


def sorted_eps(keys) -> List[str]:
    """Radius keys in increasing order."""
    return sorted(keys, key=float)


def output_summary(records: List[dict],
                   select: Callable[[dict], dict],
                   num_classes: int,
                   correct_of: Callable[[dict], int],
                   iou_metrics: Sequence[str],
                   nan_to_num: Optional[int] = None,
                   beta: int = 1,
                   sizes: bool = False) -> Dict[str, float]:
    """One output's metrics (``select(record)``: its areas) as MMSeg's
    :class:`IoUMetric` defines them, in percent, plus ``mImgAcc``,
    ``mImgIoU`` and, with ``sizes``, the accuracy per object-size bucket;
    ``_IoU`` holds the per-class IoU (for the per-class table)."""
    inter, union, pred, label = sum_areas(records, select, num_classes)
    ret = IoUMetric.total_area_to_metrics(inter, union, pred, label,
                                          iou_metrics, nan_to_num, beta)
    out = OrderedDict()
    for key, val in ret.items():
        name = key if key == 'aAcc' else 'm' + key
        with np.errstate(invalid='ignore'):
            value = np.nanmean(val) if np.size(val) else np.nan
        out[name] = float(np.round(value * 100, 2))
    img_acc = [correct_of(r) / r['valid'] for r in records if r['valid'] > 0]
    out['mImgAcc'] = float(np.round(np.mean(img_acc) * 100, 2)) \
        if img_acc else float('nan')
    img_iou = [image_miou(select(r)) for r in records if r['valid'] > 0]
    out['mImgIoU'] = float(np.round(np.mean(img_iou) * 100, 2)) \
        if img_iou else float('nan')
    if sizes:
        correct = np.zeros(len(SIZE_BUCKETS), np.int64)
        valid = np.zeros(len(SIZE_BUCKETS), np.int64)
        for r in records:
            correct += select(r)['size_correct']
            valid += r['size']['valid']
        for name, c, v in zip(SIZE_BUCKETS, correct, valid):
            if v > 0:  # no key for a bucket without pixels (no NaN)
                out[f'aAcc_{name}'] = float(np.round(100 * c / v, 2))
    out['_IoU'] = ret.get('IoU')
    return out


def size_totals(results: List[dict]) -> Optional[Dict[str, int]]:
    """``n_px_<bucket>`` and ``n_objects_<bucket>`` over the dataset;
    ``None`` (and a warning) if some records lack size buckets (written by
    a version without them)."""
    old = sum(1 for r in results if 'size' not in r)
    if old:
        print_log(
            f'{old} of {len(results)} per-image records have no '
            'object-size buckets (written by an earlier version): '
            'accuracy by object size is left out; evaluate again '
            'without --resume for it',
            logger='current',
            level=30)
        return None
    out: Dict[str, int] = OrderedDict()
    for key in ('px', 'objects'):
        field = 'valid' if key == 'px' else 'objects'
        totals = np.sum([r['size'][field] for r in results], axis=0)
        for name, n in zip(SIZE_BUCKETS, totals):
            out[f'n_{key}_{name}'] = int(n)
    return out


def worst_miou_choice(results: List[dict], eps_keys: List[str],
                      names: List[str], num_classes: int) -> Dict[str, list]:
    """Per radius, the record entry each image contributes to the worst
    case by mIoU: ``{eps: [(eps_key, name) per image]}``."""
    n = len(results)
    cands: List[tuple] = []
    inter = np.zeros((n, 0, num_classes))
    union = np.zeros((n, 0, num_classes))
    prev = None
    out = {}
    for e in eps_keys:
        new = [(e, name) for name in names]
        block_i = np.zeros((n, len(new), num_classes))
        block_u = np.zeros((n, len(new), num_classes))
        for i, rec in enumerate(results):
            for a, (ek, name) in enumerate(new):
                d_i, d_u, _, _ = dense_areas(rec['eps'][ek][name], num_classes)
                block_i[i, a], block_u[i, a] = d_i, d_u
        first_new = len(cands)
        cands += new
        inter = np.concatenate([inter, block_i], 1)
        union = np.concatenate([union, block_u], 1)
        # starts: the per-image worst case by accuracy, the smaller
        # radius's selection, and "every image takes attack a" here
        starts = [np.full(n, first_new + names.index('worst'))]
        if prev is not None:
            starts.append(prev)
        starts += [np.full(n, first_new + a) for a in range(len(new))]
        found = worst_case_miou(
            inter, union, starts=starts, uniform_starts=False)
        prev = found['choice']
        out[e] = [cands[c] for c in prev]
    return out
