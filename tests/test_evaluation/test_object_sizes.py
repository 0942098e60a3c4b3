"""Per-image mIoU and robustness by object size, against straightforward
re-derivations on fabricated labels: a flood fill written out here for the
objects, IoU counted pixel by pixel for the per-image mIoU."""
import json
from collections import deque
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmseg_robust.evaluation import (SEAMetric, image_areas, image_miou,
                                     sea_tables, size_buckets)
from mmseg_robust.evaluation.object_sizes import (SIZE_BUCKETS,
                                                  correct_by_size,
                                                  size_thresholds)
from mmseg_robust.evaluation.records import RecordWriter, read_records
from mmseg_robust.visualization import (has_size_metrics,
                                        plot_robustness_by_size)

K = 3
IGNORE = 255
CLASSES = ('x', 'y', 'z')


# -- re-derivations, written plainly ---------------------------------------
def flood_fill_objects(label):
    """Objects by breadth-first search over the 8 neighbours: a list of
    ``(class, [(row, col), ...])``; ignored pixels belong to none."""
    h, w = label.shape
    seen = np.zeros((h, w), bool)
    objects = []
    for r in range(h):
        for c in range(w):
            if seen[r, c] or label[r, c] == IGNORE:
                continue
            cls = label[r, c]
            pixels, queue = [], deque([(r, c)])
            seen[r, c] = True
            while queue:
                y, x = queue.popleft()
                pixels.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < h and 0 <= nx < w and \
                                not seen[ny, nx] and label[ny, nx] == cls:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            objects.append((cls, pixels))
    return objects


def bucket_of(area, image_area):
    """COCO's 32^2 / 96^2 px at 512 x 512, as fractions of the image."""
    frac = Fraction(area, image_area)
    if frac < Fraction(32 * 32, 512 * 512):
        return 'small'
    if frac < Fraction(96 * 96, 512 * 512):
        return 'medium'
    return 'large'


def reference_buckets(label, image_area=None):
    """``{pixel: bucket}`` and the number of objects per bucket."""
    image_area = image_area or label.size
    of_pixel, objects = {}, dict.fromkeys(SIZE_BUCKETS, 0)
    for _, pixels in flood_fill_objects(label):
        b = bucket_of(len(pixels), image_area)
        objects[b] += 1
        for p in pixels:
            of_pixel[p] = b
    return of_pixel, objects


def reference_image_miou(pred, label):
    """Mean over the classes in the label of intersection / union, counted
    pixel by pixel over the valid pixels."""
    ious = []
    for cls in sorted(set(label[label != IGNORE].tolist())):
        inter = union = 0
        for p, t in zip(pred.ravel(), label.ravel()):
            if t == IGNORE:
                continue
            inter += p == cls and t == cls
            union += p == cls or t == cls
        ious.append(inter / union)
    return float(np.mean(ious)) if ious else None


# -- a hand-made label map with known objects ------------------------------
def hand_made_label():
    """32 x 32, so the buckets are: small < 4 px, medium < 36 px, large
    otherwise. Background (0) surrounds every object (one large object)."""
    label = np.zeros((32, 32), np.int64)
    label[2, 2:4] = 1  # 2 px: small
    label[2:5, 8:11] = 1  # 3x3 = 9 px: medium
    label[8:14, 2:8] = 1  # 6x6 = 36 px: large (the edge itself)
    label[8:13, 12:19] = 2  # 5x7 = 35 px: medium (just below the edge)
    label[20, 20] = label[21, 21] = 2  # diagonal neighbours: one object, 2 px
    label[25:27, 2:11] = 1  # 2x9, cut by an ignored column: two objects
    label[25:27, 6] = IGNORE  # ... of 2x4 = 8 px each: medium
    label[0, :] = IGNORE  # ignored border row: in no object
    return label


def test_hand_made_objects_and_buckets():
    label = hand_made_label()
    assert size_thresholds(32, 32) == (4.0, 36.0)
    buckets, entry = size_buckets(label, IGNORE)
    valid = int((label != IGNORE).sum())
    small, medium, large = 2 + 2, 9 + 35 + 8 + 8, 36 + (
        valid - 2 - 9 - 36 - 35 - 2 - 16)
    assert entry == dict(valid=[small, medium, large], objects=[2, 4, 2])
    assert sum(entry['valid']) == valid
    assert buckets[2, 2] == 0 and buckets[3, 9] == 1 and buckets[9, 3] == 2
    assert buckets[20, 20] == buckets[21, 21] == 0  # one diagonal object
    assert buckets[8, 12] == 1 and buckets[25, 2] == buckets[25, 10] == 1
    assert (buckets[label == IGNORE] == -1).all()
    assert buckets[31, 31] == 2  # the background
    # the same label as a tensor: the same buckets, on its device
    tb, tentry = size_buckets(torch.from_numpy(label), IGNORE)
    assert isinstance(tb, torch.Tensor) and tentry == entry
    np.testing.assert_array_equal(tb.numpy(), buckets)


def test_edges_scale_with_the_image_and_ignore_padding():
    """A padded label keeps the buckets of the image it came from: the
    edges scale with the given image size, not the padded shape."""
    label = hand_made_label()
    padded = np.full((40, 48), IGNORE, np.int64)
    padded[:32, :32] = label
    buckets, entry = size_buckets(padded, IGNORE, image_size=(32, 32))
    ref_buckets, ref_entry = size_buckets(label, IGNORE)
    assert entry == ref_entry
    np.testing.assert_array_equal(buckets[:32, :32], ref_buckets)
    assert (buckets[32:] == -1).all() and (buckets[:, 32:] == -1).all()
    # at 4x the image area every edge is 4x larger (in pixels)
    assert size_thresholds(64, 64) == (16.0, 144.0)
    assert size_thresholds(512, 512) == (32.0**2, 96.0**2)
    _, big = size_buckets(label, IGNORE, image_size=(64, 64))
    # 2, 2 (small), 9, 8, 8 (small now), 35, 36 (medium), background
    assert big['objects'] == [5, 2, 1]


label_maps = st.integers(
    0, 2**31 - 1).map(lambda seed: _random_label(np.random.default_rng(seed)))


def _random_label(rng):
    """A random label map with blobs of a few classes and ignored pixels
    (block-upsampled noise, so objects of several sizes appear)."""
    h, w = rng.integers(4, 24, size=2)
    block = int(rng.integers(1, 5))
    coarse = rng.integers(0, K, size=(h // block + 1, w // block + 1))
    label = np.kron(coarse, np.ones((block, block), np.int64))[:h, :w]
    label = np.where(
        rng.random((h, w)) < 0.1, rng.integers(0, K, (h, w)), label)
    label[rng.random((h, w)) < rng.choice([0.0, 0.1, 1.0])] = IGNORE
    return label


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
@given(label=label_maps, scale=st.sampled_from([None, 1, 3]))
def test_buckets_equal_a_flood_fill(label, scale):
    """Every pixel's bucket and the object counts equal the flood fill's;
    the buckets' pixels add up to the valid pixels."""
    h, w = label.shape
    size = None if scale is None else (h * scale, w * scale)
    image_area = h * w if scale is None else h * w * scale * scale
    buckets, entry = size_buckets(label, IGNORE, image_size=size)
    of_pixel, objects = reference_buckets(label, image_area)
    valid = int((label != IGNORE).sum())
    assert sum(entry['valid']) == valid
    assert entry['objects'] == [objects[b] for b in SIZE_BUCKETS]
    expected = np.full(label.shape, -1)
    for (r, c), b in of_pixel.items():
        expected[r, c] = SIZE_BUCKETS.index(b)
    np.testing.assert_array_equal(buckets, expected)
    assert entry['valid'] == [
        int((expected == i).sum()) for i in range(len(SIZE_BUCKETS))
    ]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
@given(label=label_maps, seed=st.integers(0, 2**16))
def test_correct_by_size_and_image_miou_equal_pixel_counts(label, seed):
    rng = np.random.default_rng(seed)
    pred = np.where(
        rng.random(label.shape) < 0.3, rng.integers(0, K, label.shape),
        np.where(label == IGNORE, 0, label))
    buckets, entry = size_buckets(label, IGNORE)
    of_pixel, _ = reference_buckets(label)
    expected = dict.fromkeys(SIZE_BUCKETS, 0)
    for (r, c), b in of_pixel.items():
        expected[b] += int(pred[r, c] == label[r, c])
    counts = correct_by_size(pred, label, buckets)
    assert counts == [expected[b] for b in SIZE_BUCKETS]
    areas = image_areas(
        torch.from_numpy(pred), torch.from_numpy(label), K, IGNORE,
        torch.from_numpy(buckets))
    assert areas['size_correct'] == counts
    assert sum(counts) == areas['correct']
    ref = reference_image_miou(pred, label)
    got = image_miou(areas)
    if ref is None:
        assert got is None and entry['valid'] == [0, 0, 0]
    else:
        assert got == pytest.approx(ref)
        assert 0.0 <= got <= 1.0


def test_image_miou_by_hand():
    """Class 2 is predicted but absent from the label: not a class of the
    image's mean, but its pixel lowers class 0's IoU."""
    label = torch.tensor([[0, 0, 1], [1, 1, IGNORE]])
    pred = torch.tensor([[0, 2, 1], [1, 0, 2]])
    areas = image_areas(pred, label, K, IGNORE)
    # class 0: I = 1 (0,0), U = 3 (0,0), (0,1), (1,1): 1/3
    # class 1: I = 2 (0,2), (1,0), U = 3 (+ (1,1)): 2/3
    assert image_miou(areas) == pytest.approx((1 / 3 + 2 / 3) / 2)
    # MMSeg's mIoU of this one image counts class 2 with IoU 0
    metric = _metric()
    metric.process({}, [dict(sea_record=_record(0, label, {'clean': pred}))])
    out = metric.evaluate(1)
    assert out['sea/clean/mIoU'] == pytest.approx(
        100 * (1 / 3 + 2 / 3) / 3, abs=0.01)
    assert out['sea/clean/mImgIoU'] == 50.0
    assert image_miou(
        image_areas(pred, torch.full_like(label, IGNORE), K, IGNORE)) is None


# -- the metric -------------------------------------------------------------
def _metric(**kwargs):
    metric = SEAMetric(**kwargs)
    metric.dataset_meta = dict(classes=CLASSES)
    return metric


def _record(idx, label, preds, sizes=True):
    """A record of one radius ('4') with attacks 'a' and 'b' (where given),
    built as SEATestLoop builds it."""
    buckets, entry = size_buckets(label, IGNORE)
    if not sizes:
        buckets = None

    def areas(name):
        return image_areas(preds[name], label, K, IGNORE, buckets)

    rec = dict(
        idx=idx,
        valid=int((label != IGNORE).sum()),
        clean=areas('clean'),
        eps={},
        worst_attack={})
    if sizes:
        rec['size'] = entry
    if 'a' in preds:
        ent = {n: areas(n) for n in ('a', 'b')}
        worst = min('ab', key=lambda n: ent[n]['correct'])
        rec['eps']['4'] = dict(worst=ent[worst], **ent)
        rec['worst_attack']['4'] = worst
    return rec


def _images(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        label = torch.from_numpy(_random_label(rng))
        preds = {}
        for name, noise in (('clean', 0.1), ('a', 0.5), ('b', 0.6)):
            flip = torch.from_numpy(rng.random(tuple(label.shape)) < noise)
            other = torch.from_numpy(rng.integers(0, K, tuple(label.shape)))
            preds[name] = torch.where(flip | (label == IGNORE), other, label)
        out.append((label, preds))
    return out


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), n=st.integers(1, 5))
def test_metric_equals_direct_counts(seed, n):
    """Pooled accuracy per bucket, per-image mIoU and the object counts of
    SEAMetric equal those counted directly from the label maps."""
    images = _images(n, seed)
    metric = _metric()
    metric.process(
        {}, [dict(sea_record=_record(i, *im)) for i, im in enumerate(images)])
    out = metric.evaluate(n)
    worst = []
    for label, p in images:
        correct = {
            k: int(((p[k] == label) & (label != IGNORE)).sum())
            for k in 'ab'
        }
        worst.append(p['a'] if correct['a'] <= correct['b'] else p['b'])
    for row, preds in (('clean', [p['clean'] for _, p in images]),
                       ('eps4/a', [p['a'] for _, p in images]), ('eps4/worst',
                                                                 worst)):
        correct = dict.fromkeys(SIZE_BUCKETS, 0)
        valid = dict.fromkeys(SIZE_BUCKETS, 0)
        objects = dict.fromkeys(SIZE_BUCKETS, 0)
        ious = []
        for (label, _), pred in zip(images, preds):
            lab, prd = label.numpy(), pred.numpy()
            of_pixel, objs = reference_buckets(lab)
            for (r, c), b in of_pixel.items():
                valid[b] += 1
                correct[b] += int(prd[r, c] == lab[r, c])
            for b in SIZE_BUCKETS:
                objects[b] += objs[b]
            miou = reference_image_miou(prd, lab)
            if miou is not None:
                ious.append(miou)
        for b in SIZE_BUCKETS:
            assert out[f'sea/n_px_{b}'] == valid[b]
            assert out[f'sea/n_objects_{b}'] == objects[b]
            if valid[b]:
                assert out[f'sea/{row}/aAcc_{b}'] == pytest.approx(
                    round(100 * correct[b] / valid[b], 2))
            else:  # a bucket without pixels has no accuracy (no NaN)
                assert f'sea/{row}/aAcc_{b}' not in out
        # the buckets' pixels are the valid pixels
        assert sum(valid.values()) == sum(
            int((lab != IGNORE).sum()) for lab, _ in images)
        if ious:
            assert out[f'sea/{row}/mImgIoU'] == pytest.approx(
                round(100 * np.mean(ious), 2))
            assert 0.0 <= out[f'sea/{row}/mImgIoU'] <= 100.0
    assert not any(np.isnan(v) for k, v in out.items() if 'aAcc_' in k)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
@given(label=label_maps, seed=st.integers(0, 2**16))
def test_single_image_per_image_miou_vs_pooled(label, seed):
    """For one image, per-image mIoU equals MMSeg's pooled mIoU when the
    prediction uses only classes of the label, and is never below it."""
    rng = np.random.default_rng(seed)
    label = torch.from_numpy(label)
    present = torch.unique(label[label != IGNORE])
    if len(present) == 0:
        return
    own = present[torch.from_numpy(
        rng.integers(0, len(present), tuple(label.shape)))]
    anything = torch.from_numpy(rng.integers(0, K, tuple(label.shape)))
    for pred, equal in ((own, True), (anything, False)):
        metric = _metric()
        metric.process({},
                       [dict(sea_record=_record(0, label, {'clean': pred}))])
        out = metric.evaluate(1)
        if equal:
            assert out['sea/clean/mImgIoU'] == pytest.approx(
                out['sea/clean/mIoU'], abs=0.011)
        else:
            assert out['sea/clean/mImgIoU'] >= out['sea/clean/mIoU'] - 0.011


def test_old_records_without_sizes_still_give_every_other_metric(caplog):
    """Records written before size buckets existed: the same metrics as
    before, per-image mIoU included, and no bucket keys; a mix of old and
    new records leaves the buckets out too (with a warning)."""
    images = _images(4, seed=3)
    new = [_record(i, *im) for i, im in enumerate(images)]
    old = [_record(i, *im, sizes=False) for i, im in enumerate(images)]
    assert all('size' not in r and 'size_correct' not in r['clean']
               for r in old)
    outs = []
    for records in (new, old, new[:2] + old[2:]):
        metric = _metric()
        metric.process({}, [dict(sea_record=r) for r in records])
        outs.append(metric.evaluate(len(records)))
    with_sizes, without, mixed = outs
    assert has_size_metrics(with_sizes)
    assert not has_size_metrics(without) and not has_size_metrics(mixed)
    bucket_keys = {
        k
        for k in with_sizes if '_small' in k or '_medium' in k or '_large' in k
    }
    assert 'sea/eps4/worst/aAcc_large' in bucket_keys
    assert without == {
        k: v
        for k, v in with_sizes.items() if k not in bucket_keys
    }
    assert mixed == without
    assert 'sea/eps4/worst/mImgIoU' in without
    assert 'large' not in sea_tables(without)['size']
    assert 'mIoU/img' in sea_tables(without)['size']


def test_records_with_sizes_survive_the_file(tmp_path):
    images = _images(2, seed=5)
    records = [_record(i, *im) for i, im in enumerate(images)]
    path = str(tmp_path / 'rank0.jsonl')
    writer = RecordWriter(path, {'n_iter': 1})
    writer.write(records)
    writer.close()
    _, back, bad = read_records(path)
    assert bad == 0 and back == json.loads(json.dumps(records))
    for rec in back:
        assert sum(rec['size']['valid']) == rec['valid']
        for entry in [rec['clean']] + list(rec['eps']['4'].values()):
            assert sum(entry['size_correct']) == entry['correct']


def test_size_table_and_plot(tmp_path):
    images = _images(3, seed=7)
    metric = _metric()
    metric.process(
        {}, [dict(sea_record=_record(i, *im)) for i, im in enumerate(images)])
    out = metric.evaluate(3)
    table = sea_tables(out)['size']
    lines = table.splitlines()
    header = [c.strip() for c in lines[-5].split('|')[1:-1]]
    buckets = [b for b in SIZE_BUCKETS if out[f'sea/n_px_{b}']]
    assert header == ['radius', 'mIoU', 'mIoU/img', 'aAcc'] + buckets
    clean = [c.strip() for c in lines[-3].split('|')[1:-1]]
    assert clean[:3] == [
        'clean', f'{out["sea/clean/mIoU"]:.2f}',
        f'{out["sea/clean/mImgIoU"]:.2f}'
    ]
    worst = [c.strip() for c in lines[-2].split('|')[1:-1]]
    assert worst[0] == '4/255' and worst[4:] == [
        f'{out[f"sea/eps4/worst/aAcc_{b}"]:.2f}' for b in buckets
    ]
    assert f'{buckets[0]} {out[f"sea/n_objects_{buckets[0]}"]} (' in table
    png = plot_robustness_by_size({None: out}, str(tmp_path / 's.png'), 't')
    two = plot_robustness_by_size({
        'A': out,
        'B': out
    },
                                  str(tmp_path / 's2.png'),
                                  colors={'A': 'red'})
    for path in (png, two):
        with open(path, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
