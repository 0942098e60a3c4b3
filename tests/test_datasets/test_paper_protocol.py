"""The paper's evaluation protocol as MMSeg transforms and configs.

The configs in ``configs/pir_at/*_paper-protocol.py`` must hand the model
exactly the crops and labels that the authors' loaders produce; the
reference is :func:`tests.pir_at_data.authors_val_sample`, written from the
authors' loaders independently of the package, applied to fabricated
PASCAL-VOC and ADE20K folders (JPEG images, palette / grey PNG labels).
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS
from PIL import Image

import mmseg_robust  # noqa: F401  (registration)
from mmseg_robust.datasets import (ADE20KWithOtherDataset, RemapLabels,
                                   ShortSideResizeCenterCrop)
from mmseg_robust.datasets.transforms import center_offset, short_side_size
from tests.pir_at_data import (ADE_SIZES, VOC_SIZES, authors_val_sample,
                               make_ade_folder, make_voc_folder)

CONFIGS = Path(__file__).resolve().parents[2] / 'configs' / 'pir_at'
PAPER = sorted(CONFIGS.glob('[!_]*_paper-protocol.py'))
STOCK = sorted(CONFIGS.glob('[!_]*_mmseg-protocol.py'))


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory):
    return make_voc_folder(str(tmp_path_factory.mktemp('voc')))


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    return make_ade_folder(str(tmp_path_factory.mktemp('ade')))


def _dataset_and_preprocessor(config: Path, data_root: str):
    cfg = Config.fromfile(str(config))
    init_default_scope('mmseg')
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.data_root = data_root
    return DATASETS.build(ds_cfg), MODELS.build(cfg.model.data_preprocessor)


# --- the transforms -------------------------------------------------------


def test_short_side_size_truncates_the_long_side():
    assert short_side_size(500, 375, 473) == (630, 473)  # 630.67
    assert short_side_size(353, 500, 473) == (473, 669)  # 669.97
    assert short_side_size(400, 400, 473) == (473, 473)  # square: width
    assert short_side_size(200, 150, 473) == (630, 473)  # upscaled


@pytest.mark.parametrize('length, offset', [(473, 0), (474, 0), (475, 1),
                                            (476, 2), (630, 78), (631, 79),
                                            (632, 80)])
def test_center_offset_rounds_halves_to_even(length, offset):
    # (length - 473) / 2 = 0.5 -> 0, 1.5 -> 2, 78.5 -> 78, 79.5 -> 80
    assert center_offset(length, 473) == offset


def test_resize_crop_of_an_image_and_its_label():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (150, 200), dtype=np.uint8)
    out = ShortSideResizeCenterCrop(size=60)(
        dict(
            img=bgr.copy(),
            gt_seg_map=label.copy(),
            seg_fields=['gt_seg_map'],
            img_shape=(150, 200),
            ori_shape=(150, 200)))
    assert out['img'].shape == (60, 60, 3) and out['img'].dtype == np.uint8
    assert out['gt_seg_map'].shape == (60, 60)
    assert out['img_shape'] == out['ori_shape'] == (60, 60)
    assert out['ori_img_shape'] == (150, 200)
    assert out['scale_factor'] == (80 / 200, 60 / 150)
    assert out['crop_bbox'] == (10, 0, 70, 60)
    # the image: PIL's bilinear on each channel, whatever the channel order
    rgb = np.asarray(
        Image.fromarray(bgr[..., ::-1].copy()).resize(
            (80, 60), Image.BILINEAR))[:, 10:70]
    np.testing.assert_array_equal(out['img'], rgb[..., ::-1])
    # the label: nearest neighbour, no new values
    expected = np.asarray(
        Image.fromarray(label).resize((80, 60), Image.NEAREST))[:, 10:70]
    np.testing.assert_array_equal(out['gt_seg_map'], expected)
    assert set(np.unique(out['gt_seg_map'])) <= set(np.unique(label))


def test_resize_crop_enlarges_small_images():
    out = ShortSideResizeCenterCrop(size=64)(
        dict(img=np.zeros((10, 30, 3), np.uint8), seg_fields=[]))
    assert out['img'].shape == (64, 64, 3)
    assert out['crop_bbox'] == (64, 0, 128, 64)  # resized to 192 x 64


def test_resize_crop_rejects_bad_input():
    with pytest.raises(ValueError, match='positive int'):
        ShortSideResizeCenterCrop(size=0)
    with pytest.raises(ValueError, match='positive int'):
        ShortSideResizeCenterCrop(size=47.3)
    t = ShortSideResizeCenterCrop(size=8)
    with pytest.raises(TypeError, match='must be uint8.*to_float32'):
        t(dict(img=np.zeros((16, 16, 3), np.float32), seg_fields=[]))
    with pytest.raises(ValueError, match='same size'):
        t(
            dict(
                img=np.zeros((16, 16, 3), np.uint8),
                gt_seg_map=np.zeros((8, 16), np.uint8),
                seg_fields=['gt_seg_map']))


def test_remap_labels():
    seg = np.array([[0, 1, 2, 255]], np.uint8)
    out = RemapLabels(mapping={255: 0})(
        dict(gt_seg_map=seg.copy(), seg_fields=['gt_seg_map']))
    np.testing.assert_array_equal(out['gt_seg_map'], [[0, 1, 2, 0]])
    # all replacements read the input: a swap
    out = RemapLabels(mapping={
        1: 2,
        2: 1
    })(
        dict(gt_seg_map=seg.copy(), seg_fields=['gt_seg_map']))
    np.testing.assert_array_equal(out['gt_seg_map'], [[0, 2, 1, 255]])
    # non-uint8 maps too
    out = RemapLabels(mapping={255: 0})(
        dict(gt_seg_map=seg.astype(np.int64), seg_fields=['gt_seg_map']))
    np.testing.assert_array_equal(out['gt_seg_map'], [[0, 1, 2, 0]])
    for bad in ({}, {256: 0}, {255: -1}, {'a': 0}, [(255, 0)]):
        with pytest.raises(ValueError, match='RemapLabels'):
            RemapLabels(mapping=bad)


def test_ade20k_with_other_keeps_151_classes(ade_root):
    ds = ADE20KWithOtherDataset(
        data_root=ade_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=[])
    assert len(ds.metainfo['classes']) == 151
    assert ds.metainfo['classes'][0] == 'other'
    assert ds.metainfo['classes'][1] == 'wall'
    assert len(ds.metainfo['palette']) == 151
    assert ds.reduce_zero_label is False
    assert len(ds) == len(ADE_SIZES)


# --- the configs' pipelines against the authors' loaders -----------------


def test_paper_and_stock_configs_found():
    assert len(PAPER) == 5 and len(STOCK) == 5, (PAPER, STOCK)


@pytest.mark.parametrize('protocol', ['paper-protocol', 'mmseg-protocol'])
@pytest.mark.parametrize('dataset', ['voc2012', 'ade20k'])
def test_models_of_a_dataset_share_its_data_settings(dataset, protocol):
    """So that testing one config per dataset and protocol (below) covers
    them all."""
    configs = sorted(CONFIGS.glob(f'[!_]*_{dataset}_{protocol}.py'))
    assert len(configs) == (2 if dataset == 'voc2012' else 3)
    first = Config.fromfile(str(configs[0]))
    for path in configs[1:]:
        cfg = Config.fromfile(str(path))
        assert cfg.test_dataloader == first.test_dataloader, path.name
        assert cfg.model.data_preprocessor == \
            first.model.data_preprocessor, path.name


def _one_config(dataset: str, protocol: str) -> Path:
    return CONFIGS / f'upernet_convnext-t-cvst_pir-at_{dataset}_{protocol}.py'


def _both_datasets(protocol: str):
    """Parametrise ``config`` over the VOC and ADE20K configs of a
    protocol."""
    return pytest.mark.parametrize(
        'config', [_one_config(d, protocol) for d in ('voc2012', 'ade20k')],
        ids=lambda p: p.stem)


@_both_datasets('paper-protocol')
def test_paper_pipeline_equals_authors_loader(config, voc_root, ade_root):
    """Every crop and label, bit for bit, after the data preprocessor."""
    voc = 'voc2012' in config.stem
    root, sizes = (voc_root, VOC_SIZES) if voc else (ade_root, ADE_SIZES)
    crop = 473 if voc else 512
    dataset, preprocessor = _dataset_and_preprocessor(config, root)
    assert len(dataset) == len(sizes)
    n_boundary = n_other = 0
    for i in range(len(dataset)):
        item = dataset[i]
        sample = item['data_samples']
        x_ref, y_ref = authors_val_sample(sample.img_path, sample.seg_map_path,
                                          crop, voc)
        data = preprocessor(
            dict(inputs=[item['inputs']], data_samples=[sample]), False)
        x = data['inputs'][0]
        assert x.shape == (3, crop, crop)
        assert torch.equal(x, x_ref), (config.stem, sample.img_path)
        y = sample.gt_sem_seg.data[0].long()
        assert torch.equal(y, y_ref), (config.stem, sample.img_path)
        assert sample.img_shape == sample.ori_shape == (crop, crop)
        # what the label rule acted on: VOC outlines (255) in the crop
        _, y_raw = authors_val_sample(
            sample.img_path, sample.seg_map_path, crop, voc=False)
        n_boundary += int((y_raw == 255).sum())
        n_other += int((y_raw == 0).sum())
        assert int(y.max()) <= (20 if voc else 150)
    if voc:
        assert n_boundary > 0  # 255 was there and became background
    else:
        assert n_other > 0  # "other" is a class, not ignored


@_both_datasets('mmseg-protocol')
def test_stock_pipeline_keeps_mmseg_labels(config, voc_root, ade_root):
    """The stock protocol: full-size labels, 255 / "other" ignored."""
    voc = 'voc2012' in config.stem
    dataset, _ = _dataset_and_preprocessor(config,
                                           voc_root if voc else ade_root)
    sample = dataset[0]['data_samples']
    label = sample.gt_sem_seg.data[0]
    assert tuple(label.shape) == tuple(sample.ori_shape)  # not cropped
    raw = np.array(Image.open(sample.seg_map_path)).astype(np.int64)
    if voc:
        np.testing.assert_array_equal(label.numpy(), raw)  # 255 stays
    else:  # reduce_zero_label: 0 -> 255, k -> k - 1
        np.testing.assert_array_equal(label.numpy(),
                                      np.where(raw == 0, 255, raw - 1))
