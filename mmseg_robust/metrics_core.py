"""Dataset metrics in plain NumPy, importable without OpenMMLab: the
worst-case mIoU over an ensemble's outputs (SEA-2024 aggregation).

It is a metric (``SEAMetric``'s ``worst_miou`` row), but it lives beside
:mod:`mmseg_robust.evaluation` rather than in it: importing that package
imports MMSeg (it registers ``SEAMetric``), and users of the plain-PyTorch
attacks (benchmarks, notebooks) need this search without MMSeg.

The per-image worst case by pixel accuracy is not the worst case by the
dataset mIoU: mIoU pools intersections and unions over the dataset and
averages over classes, so which attack's output an image contributes can
matter more for a rare class than for the image's own accuracy. The
authors' ECCV'24 evaluation therefore chooses, per image, which attack's
output enters the dataset metric so as to minimise the dataset mIoU, by a
local search over the per-image choices (docs/attacks.md).

This module does that search on per-image areas (plain NumPy):

* mIoU is MMSeg's: the mean over classes with a non-empty union of
  ``sum(intersection) / sum(union)``, so a class that enters the union only
  through a wrong prediction counts with IoU 0 (the authors' search skips
  such classes);
* deterministic: images are visited in index order; an image switches to
  the candidate that lowers the dataset mIoU most (ties keep the current
  choice) and passes repeat until none changes;
* it starts from every given start (e.g. the per-image worst case by
  accuracy) and from every "all images take candidate a" choice and returns
  the lowest result, so it is never above any of its starts.
"""
from typing import Dict, Optional, Sequence

import numpy as np

__all__ = ['worst_case_miou', 'dataset_miou']


def dataset_miou(inter: np.ndarray, union: np.ndarray) -> float:
    """MMSeg's mIoU from summed ``(K,)`` intersections and unions (NaN if
    no class has a non-empty union)."""
    present = union > 0
    if not present.any():
        return float('nan')
    return float((inter[present] / union[present]).mean())


def _search(inter: np.ndarray, union: np.ndarray, touched, choice,
            max_passes: int):
    """Local search from ``choice``; totals are updated incrementally over
    the classes an image touches (its non-empty unions under any
    candidate), so a move costs O(candidates x classes of the image)."""
    n_img = inter.shape[0]
    rows = np.arange(n_img)
    tot_i = inter[rows, choice].sum(0)
    tot_u = union[rows, choice].sum(0)
    present = tot_u > 0
    iou = np.divide(tot_i, tot_u, out=np.zeros_like(tot_i), where=present)
    sum_iou, n_present = float(iou.sum()), int(present.sum())
    current = sum_iou / n_present if n_present else np.inf
    passes = 0
    for passes in range(1, max_passes + 1):
        changed = False
        for i in range(n_img):
            cls = touched[i]
            if not len(cls):
                continue
            c = choice[i]
            ti, tu = tot_i[cls], tot_u[cls]
            cand_i = ti - inter[i, c, cls] + inter[i][:, cls]  # (A, T)
            cand_u = tu - union[i, c, cls] + union[i][:, cls]
            pres = cand_u > 0
            cand_iou = np.divide(
                cand_i, cand_u, out=np.zeros_like(cand_i), where=pres)
            old_pres = tu > 0
            old_iou = np.divide(ti, tu, out=np.zeros_like(ti), where=old_pres)
            sums = sum_iou - old_iou.sum() + cand_iou.sum(1)
            counts = n_present - int(old_pres.sum()) + pres.sum(1)
            values = np.full(len(sums), np.inf)
            np.divide(sums, counts, out=values, where=counts > 0)
            best = int(np.argmin(values))
            # strict improvement beyond rounding: no cycling
            if best != c and values[best] < current - 1e-12:
                choice[i] = best
                tot_i[cls], tot_u[cls] = cand_i[best], cand_u[best]
                sum_iou, n_present = float(sums[best]), int(counts[best])
                current = float(values[best])
                changed = True
        if not changed:
            break
    # recompute from scratch: no drift from the incremental sums
    final = dataset_miou(inter[rows, choice].sum(0), union[rows,
                                                           choice].sum(0))
    return choice, final, passes


def worst_case_miou(inter: np.ndarray,
                    union: np.ndarray,
                    starts: Optional[Sequence[np.ndarray]] = None,
                    uniform_starts: bool = True,
                    max_passes: int = 100) -> Dict[str, object]:
    """Choose one candidate output per image to minimise the dataset mIoU.

    Args:
        inter (np.ndarray): ``(N, A, K)`` intersection areas of image ``n``
            under candidate ``a`` (e.g. each attack's output) for class
            ``k``.
        union (np.ndarray): ``(N, A, K)`` union areas, same layout.
        starts (Sequence[np.ndarray], optional): Starting choices, each an
            ``(N,)`` array of candidate indices (e.g. the per-image worst
            case by accuracy). The result is never above any of them.
        uniform_starts (bool): Also start from "every image takes candidate
            a", for every candidate.
        max_passes (int): Upper bound on the passes over the images of one
            search (each pass that changes nothing ends it).

    Returns:
        dict: ``choice`` (``(N,)`` candidate per image), ``miou`` (the
        dataset mIoU of that choice, in [0, 1]), ``passes`` (of the search
        that gave it) and ``start`` (which start it came from: an index into
        ``starts``, or ``len(starts) + a`` for "all take candidate a").
        With no start and no candidate the mIoU is NaN.
    """
    inter = np.asarray(inter, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    if inter.ndim != 3 or inter.shape != union.shape:
        raise ValueError('inter and union must both be (N, A, K) arrays, '
                         f'got {inter.shape} and {union.shape}')
    n_img, n_cand, _ = inter.shape
    starts = [np.asarray(s, dtype=np.int64) for s in (starts or [])]
    for s in starts:
        if s.shape != (n_img, ) or (n_img and
                                    (s.min() < 0 or s.max() >= n_cand)):
            raise ValueError(f'each start must be {n_img} candidate indices '
                             f'in [0, {n_cand}), got shape {s.shape}')
    all_starts = starts + (
        [np.full(n_img, a, dtype=np.int64)
         for a in range(n_cand)] if uniform_starts else [])
    touched = [np.nonzero(union[i].any(0))[0] for i in range(n_img)]
    best = None
    for k, start in enumerate(all_starts):
        choice, value, passes = _search(inter, union, touched, start.copy(),
                                        max_passes)
        if not np.isfinite(value):
            continue
        if best is None or value < best['miou'] - 1e-12:
            best = dict(
                choice=choice, miou=float(value), passes=passes, start=k)
    if best is None or not np.isfinite(best['miou']):
        return dict(
            choice=np.zeros(n_img, dtype=np.int64),
            miou=float('nan'),
            passes=0,
            start=0)
    return best
