"""SEAMetric on hand-made records: same numbers as MMSeg's IoUMetric."""
import numpy as np
import pytest
import torch
from mmseg.evaluation.metrics import IoUMetric

from mmseg_robust.evaluation import SEAMetric
from mmseg_robust.evaluation import image_areas as areas
from mmseg_robust.evaluation import read_records, sea_tables
from mmseg_robust.evaluation.records import RecordWriter, dense_areas

K = 3


def _images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        label = torch.randint(0, K, (6, 7), generator=g)
        label[0] = 255
        preds = {
            name: torch.randint(0, K, (6, 7), generator=g)
            for name in ('clean', 'a', 'b')
        }
        out.append((label, preds))
    # an image with only ignored pixels
    label = torch.full((6, 7), 255)
    out.append((label, {
        n: torch.zeros(6, 7, dtype=torch.long)
        for n in ('clean', 'a', 'b')
    }))
    return out


def _record(i, label, preds):
    entry = {n: areas(preds[n], label, K, 255) for n in ('a', 'b')}
    worst = min(('a', 'b'), key=lambda n: entry[n]['correct'])
    entry = dict(worst=entry[worst], **entry)
    return dict(
        idx=i,
        valid=int((label != 255).sum()),
        clean=areas(preds['clean'], label, K, 255),
        eps={'4': entry},
        worst_attack={'4': worst})


def _iou_metric(pairs):
    metric = IoUMetric()
    metric.dataset_meta = dict(classes=('x', 'y', 'z'))
    for pred, label in pairs:
        metric.results.append(
            IoUMetric.intersect_and_union(pred, label, K, 255))
    return metric.compute_metrics(metric.results)


def test_areas_roundtrip_is_exact():
    label, preds = _images(1)[0]
    rec = areas(preds['a'], label, K, 255)
    dense = dense_areas(rec, K)
    ref = IoUMetric.intersect_and_union(preds['a'], label, K, 255)
    for d, r in zip(dense, ref):
        np.testing.assert_array_equal(d, r.numpy())
    assert rec['correct'] == int(((preds['a'] == label)).sum())


def test_metrics_equal_iou_metric():
    images = _images()
    metric = SEAMetric()
    metric.dataset_meta = dict(classes=('x', 'y', 'z'))
    records = [_record(i, *im) for i, im in enumerate(images)]
    metric.process({}, [dict(sea_record=r) for r in records])
    out = metric.evaluate(len(records))
    clean_ref = _iou_metric([(p['clean'], lab) for lab, p in images])
    assert out['sea/clean/mIoU'] == pytest.approx(clean_ref['mIoU'])
    assert out['sea/clean/aAcc'] == pytest.approx(clean_ref['aAcc'])
    a_ref = _iou_metric([(p['a'], lab) for lab, p in images])
    assert out['sea/eps4/a/mIoU'] == pytest.approx(a_ref['mIoU'])
    assert out['sea/eps4/a/mAcc'] == pytest.approx(a_ref['mAcc'])
    # worst case: per image the attack with fewer correct pixels
    worst_pairs = []
    for lab, p in images:
        ca = int(((p['a'] == lab) & (lab != 255)).sum())
        cb = int(((p['b'] == lab) & (lab != 255)).sum())
        worst_pairs.append((p['a'] if ca <= cb else p['b'], lab))
    w_ref = _iou_metric(worst_pairs)
    assert out['sea/eps4/worst/mIoU'] == pytest.approx(w_ref['mIoU'])
    assert out['sea/eps4/worst/aAcc'] <= min(out['sea/eps4/a/aAcc'],
                                             out['sea/eps4/b/aAcc'])
    assert out['sea/n_images'] == 5 and out['sea/n_no_valid'] == 1
    # mean of per-image accuracies skips the image without valid pixels
    accs = [
        float(((p['clean'] == lab) & (lab != 255)).sum() / (lab != 255).sum())
        for lab, p in images[:-1]
    ]
    assert out['sea/clean/mImgAcc'] == pytest.approx(
        round(100 * np.mean(accs), 2))
    assert 'worst aAcc' in sea_tables(out)['summary']


def test_duplicates_count_once():
    images = _images(2)
    records = [_record(i, *im) for i, im in enumerate(images)]
    metric = SEAMetric()
    metric.dataset_meta = dict(classes=('x', 'y', 'z'))
    metric.process({}, [dict(sea_record=r) for r in records + records[:1]])
    out = metric.evaluate(len(records))
    assert out['sea/n_images'] == len(records)


def test_per_class_table():
    images = _images(2)
    metric = SEAMetric(per_class=True)
    metric.dataset_meta = dict(classes=('x', 'y', 'z'))
    metric.process(
        {}, [dict(sea_record=_record(i, *im)) for i, im in enumerate(images)])
    out = metric.evaluate(3)
    assert 'worst IoU 4/255' in sea_tables(out)['per_class']


def test_process_rejects_plain_predictions():
    metric = SEAMetric()
    with pytest.raises(ValueError, match='SEATestLoop'):
        metric.process({}, [dict(pred_sem_seg=1)])


def test_record_file_survives_partial_lines(tmp_path):
    path = str(tmp_path / 'r.jsonl')
    w = RecordWriter(path, {'n_iter': 3})
    w.write([{'idx': 0, 'x': 1}, {'idx': 1, 'x': 2}])
    w.close()
    with open(path, 'a') as f:
        f.write('{"idx": 2, "x": ')  # interrupted write
    header, records, bad = read_records(path)
    assert header == {'n_iter': 3} and bad == 1
    assert [r['idx'] for r in records] == [0, 1]
    # rewriting keeps the good records and drops the partial line
    w = RecordWriter(path, header, records)
    w.write([{'idx': 2, 'x': 3}])
    w.close()
    header, records, bad = read_records(path)
    assert bad == 0 and [r['idx'] for r in records] == [0, 1, 2]


def _two_radius_records(n=8, seed=1):
    """Records at 4/255 and 8/255; at 8/255 each attack's output is at
    least as wrong as at 4/255 for some pixels (random), like a chained
    evaluation whose worst never rises."""
    g = torch.Generator().manual_seed(seed)
    images, records = [], []
    for i in range(n):
        label = torch.randint(0, K, (6, 7), generator=g)
        label[0, :3] = 255
        preds = {}
        for e in ('4', '8'):
            for name in ('a', 'b'):
                preds[e, name] = torch.randint(0, K, (6, 7), generator=g)
        eps = {}
        worst_attack = {}
        prev = None
        for e in ('4', '8'):
            entry = {
                n_: areas(preds[e, n_], label, K, 255)
                for n_ in ('a', 'b')
            }
            cands = [(entry[n_], n_, preds[e, n_]) for n_ in ('a', 'b')]
            if prev is not None:
                cands.append(prev)
            best = min(cands, key=lambda c: c[0]['correct'])
            eps[e] = dict(worst=best[0], **entry)
            worst_attack[e] = best[1]
            prev = (best[0], 'smaller_eps', best[2])
        images.append((label, preds))
        records.append(
            dict(
                idx=i,
                valid=int((label != 255).sum()),
                clean=areas(label.clone(), label, K, 255),
                eps=eps,
                worst_attack=worst_attack))
    return images, records


def test_worst_miou_row():
    images, records = _two_radius_records()
    metric = SEAMetric(table='per_radius')
    metric.dataset_meta = dict(classes=('x', 'y', 'z'))
    metric.process({}, [dict(sea_record=r) for r in records])
    out = metric.evaluate(len(records))
    for e in ('4', '8'):
        # never above the per-image worst by accuracy
        assert out[f'sea/eps{e}/worst_miou/mIoU'] <= \
            out[f'sea/eps{e}/worst/mIoU']
    # monotone: 8/255 may use every output of 4/255
    assert out['sea/eps8/worst_miou/mIoU'] <= out['sea/eps4/worst_miou/mIoU']
    assert out['sea/eps8/worst/aAcc'] <= out['sea/eps4/worst/aAcc']
    # the row is MMSeg's IoUMetric on some per-image choice of outputs:
    # the brute-force minimum over choices at 4/255 is a lower bound
    import itertools
    best = min(
        _iou_metric([(images[i][1]['4', c], images[i][0])
                     for i, c in enumerate(choice)])['mIoU']
        for choice in itertools.product('ab', repeat=len(images)))
    assert out['sea/eps4/worst_miou/mIoU'] >= best - 0.01
    assert 'worst_miou' in sea_tables(out, 'per_radius')['summary']


@pytest.mark.parametrize('table', ['compact', 'per_radius', 'wide'])
def test_table_layouts(table):
    _, records = _two_radius_records(3)
    metric = SEAMetric(table=table)
    metric.protocol = 'SEA-2023, 6 it./attack: a, b'
    metric.dataset_meta = dict(classes=('x', 'y', 'z'))
    metric.process({}, [dict(sea_record=r) for r in records])
    out = metric.evaluate(3)
    text = sea_tables(out, table, metric.protocol)['summary']
    assert '8/255' in text and 'worst' in text
    width = max(len(line) for line in text.splitlines())
    if table != 'wide':
        assert width < 100
    with pytest.raises(ValueError, match='compact'):
        SEAMetric(table='huge')
