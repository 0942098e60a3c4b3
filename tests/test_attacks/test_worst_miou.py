"""Worst-case mIoU over the attacks' outputs (SEA-2024 aggregation)."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmseg_robust.attacks import worst_case_miou
from mmseg_robust.attacks.worst_miou import dataset_miou


def _miou(inter, union, choice):
    rows = np.arange(len(choice))
    i = inter[rows, choice].sum(0)
    u = union[rows, choice].sum(0)
    present = u > 0
    return float(np.mean(i[present] / u[present])) if present.any() \
        else math.nan


def _problem(seed, n, a, k):
    rng = np.random.default_rng(seed)
    inter = rng.integers(0, 20, (n, a, k))
    union = inter + rng.integers(0, 20, (n, a, k))
    empty = rng.random((n, a, k)) < 0.3
    return np.where(empty, 0, inter), np.where(empty, 0, union)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 10**6), st.integers(1, 5), st.integers(1, 3),
    st.integers(1, 4))
def test_never_above_its_starts_nor_below_the_optimum(seed, n, a, k):
    inter, union = _problem(seed, n, a, k)
    start = np.random.default_rng(seed).integers(0, a, n)
    res = worst_case_miou(inter, union, starts=[start])
    values = [
        _miou(inter, union, np.array(c))
        for c in itertools.product(range(a), repeat=n)
    ]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        assert math.isnan(res['miou'])
        return
    assert res['miou'] == pytest.approx(_miou(inter, union, res['choice']))
    assert res['miou'] >= min(values) - 1e-12
    if not math.isnan(_miou(inter, union, start)):
        assert res['miou'] <= _miou(inter, union, start) + 1e-12
    # local optimum: no single image can switch and lower the mIoU
    for i in range(n):
        for b in range(a):
            other = res['choice'].copy()
            other[i] = b
            v = _miou(inter, union, other)
            assert math.isnan(v) or v >= res['miou'] - 1e-12


def test_a_spurious_class_counts_as_iou_zero():
    """MMSeg's mIoU counts a class that only a wrong prediction brings into
    the union with IoU 0: the search uses that (the authors' skips it)."""
    # one image, class 0 correct under both candidates; candidate 1 also
    # predicts 1 pixel of class 1, absent from the labels
    inter = np.array([[[10, 0], [9, 0]]])
    union = np.array([[[10, 0], [10, 1]]])
    res = worst_case_miou(inter, union, starts=[np.array([0])])
    assert list(res['choice']) == [1]
    assert res['miou'] == pytest.approx((0.9 + 0.0) / 2)
    assert dataset_miou(inter[0, 1], union[0, 1]) == res['miou']


def test_deterministic_on_an_ade20k_like_problem():
    rng = np.random.default_rng(0)
    n, a, k = 300, 4, 151
    inter = rng.integers(0, 500, (n, a, k))
    union = inter + rng.integers(0, 500, (n, a, k))
    # about 20 classes per image, as in ADE20K
    sparse = rng.random((n, 1, k)) < 0.87
    inter[np.broadcast_to(sparse, inter.shape)] = 0
    union[np.broadcast_to(sparse, union.shape)] = 0
    start = rng.integers(0, a, n)
    one = worst_case_miou(inter, union, starts=[start])
    two = worst_case_miou(inter, union, starts=[start])
    assert np.array_equal(one['choice'], two['choice'])
    assert one['miou'] < _miou(inter, union, start)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r'\(N, A, K\)'):
        worst_case_miou(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match='candidate indices'):
        worst_case_miou(
            np.zeros((2, 2, 3)),
            np.zeros((2, 2, 3)),
            starts=[np.array([0, 5])])
