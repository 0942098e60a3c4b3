"""ScratchAssayDataset / prepare_scratch_assay on the real ndev-sampledata
frames (CPU, ~1 s)."""
import os
import os.path as osp
import sys

import numpy as np
import pytest

from ..conftest import scratch_assay_sample_or_skip

pytest.importorskip('tifffile')
cv2 = pytest.importorskip('cv2')
# the data file itself (importing ndev_sampledata would need bioio)
SAMPLE = scratch_assay_sample_or_skip()

import mmseg_robust  # noqa: E402,F401  (compat fixes + registration)
from mmseg_robust.datasets import ScratchAssayDataset  # noqa: E402
from mmseg_robust.datasets import (load_scratch_assay, prepare_scratch_assay,
                                   read_meta)

SPLITS = ('train', 'val')


def _names(root, kind, split):
    return sorted(os.listdir(osp.join(root, kind, split)))


def _frame(name):
    return int(name.split('_')[0][1:])  # 't03_y000_x112.png' -> 3


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return prepare_scratch_assay(str(tmp_path_factory.mktemp('scratch')))


def test_source_frames():
    images, labels = load_scratch_assay()
    # read from the installed file without importing the package, whose
    # __init__ needs bioio (left out by make install)
    assert osp.basename(SAMPLE) == 'scratch-assay-labeled-10T-2Ch.tiff'
    assert 'ndev_sampledata' not in sys.modules
    assert images.shape == (10, 210, 576, 3) and images.dtype == np.uint8
    assert labels.shape == (10, 210, 576) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1, 2}


def test_layout_counts_and_values(data_root):
    meta = read_meta(data_root)
    assert meta['params']['size'] == 128
    for split in SPLITS:
        imgs = _names(data_root, 'img_dir', split)
        assert imgs == _names(data_root, 'ann_dir', split)
        assert imgs == sorted(meta['files'][split])
    # 2 x 5 tiles of 128 per 210 x 576 frame, 8 / 2 frames
    assert len(meta['files']['train']) == 80
    assert len(meta['files']['val']) == 20

    counts = {}
    for split in SPLITS:
        hist = np.zeros(3, np.int64)
        for name in _names(data_root, 'img_dir', split):
            img = cv2.imread(
                osp.join(data_root, 'img_dir', split, name),
                cv2.IMREAD_UNCHANGED)
            lbl = cv2.imread(
                osp.join(data_root, 'ann_dir', split, name),
                cv2.IMREAD_UNCHANGED)
            assert img.dtype == np.uint8 and img.shape == (128, 128, 3)
            assert lbl.dtype == np.uint8 and lbl.shape == (128, 128)
            assert set(np.unique(lbl)) <= {0, 1, 2}
            hist += np.bincount(lbl.ravel(), minlength=3)
        counts[split] = hist
        assert hist.tolist() == meta['class_pixel_counts'][split]
    for split, hist in counts.items():
        freq = ', '.join(
            f'{c} {f:.3f}'
            for c, f in zip(ScratchAssayDataset.METAINFO['classes'], hist /
                            hist.sum()))
        print(f'\nscratch-assay {split} class frequencies: {freq}')


def test_split_by_frame(data_root):
    train = {_frame(n) for n in _names(data_root, 'img_dir', 'train')}
    val = {_frame(n) for n in _names(data_root, 'img_dir', 'val')}
    assert val == {3, 7}
    assert train == set(range(10)) - val


def test_cache_and_force(tmp_path):
    root = str(tmp_path / 'scratch')
    prepare_scratch_assay(root, size=96, val_frames=(9, ))
    paths = [
        osp.join(root, kind, split, n) for kind in ('img_dir', 'ann_dir')
        for split in SPLITS for n in _names(root, kind, split)
    ] + [osp.join(root, 'meta.json')]
    # 210 x 576 -> 3 x 6 tiles of 96 per frame
    assert len(_names(root, 'img_dir', 'val')) == 18
    # push mtimes into the past so any rewrite is visible
    for p in paths:
        os.utime(p, (1e9, 1e9))
    prepare_scratch_assay(root, size=96, val_frames=(9, ))
    assert all(os.stat(p).st_mtime == 1e9 for p in paths)

    prepare_scratch_assay(root, size=96, val_frames=(9, ), force=True)
    assert all(os.stat(p).st_mtime > 1e9 for p in paths)

    # other parameters rebuild and drop the stale tiles
    prepare_scratch_assay(root, size=128, val_frames=(9, ))
    assert len(_names(root, 'img_dir', 'val')) == 10
    assert _names(root, 'img_dir', 'train') == _names(root, 'ann_dir', 'train')
    assert len(_names(root, 'img_dir', 'train')) == 90

    # an incomplete dataset is not mistaken for a cache
    os.remove(
        osp.join(root, 'ann_dir', 'val',
                 _names(root, 'ann_dir', 'val')[0]))
    prepare_scratch_assay(root, size=128, val_frames=(9, ))
    assert len(_names(root, 'ann_dir', 'val')) == 10


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        prepare_scratch_assay(str(tmp_path), val_frames=())
    with pytest.raises(ValueError):
        prepare_scratch_assay(str(tmp_path), val_frames=(10, ))
    with pytest.raises(ValueError):
        prepare_scratch_assay(str(tmp_path), val_frames=range(10))


@pytest.mark.parametrize('missing', ['ndev_sampledata', 'tifffile'])
def test_missing_package_message(tmp_path, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes it unimportable
    with pytest.raises(
            ImportError, match='pip install --no-deps ndev-sampledata'):
        prepare_scratch_assay(str(tmp_path))


def test_mmseg_loads_it(data_root):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')
    ]
    for split, n in (('train', 80), ('val', 20)):
        ds = DATASETS.build(
            dict(
                type='ScratchAssayDataset',
                data_root=data_root,
                data_prefix=dict(
                    img_path=f'img_dir/{split}',
                    seg_map_path=f'ann_dir/{split}'),
                pipeline=pipeline))
        assert isinstance(ds, ScratchAssayDataset)
        assert len(ds) == n
        assert ds.metainfo['classes'] == ('background', 'cytoplasm', 'nucleus')
        sample = ds[0]
        assert tuple(sample['inputs'].shape) == (3, 128, 128)
        seg = sample['data_samples'].gt_sem_seg.data
        assert tuple(seg.shape) == (1, 128, 128)
        assert set(seg.unique().tolist()) <= {0, 1, 2}
