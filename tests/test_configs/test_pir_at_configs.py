"""``configs/pir_at/``: the released PIR-AT models under the paper's and
MMSeg's protocols, from a converted checkpoint to ``tools/test.py --eval
sea``.

Each published model is stood in for by a reference network with the
published layout and random weights (:mod:`tests.pir_at_reference`),
saved as the authors save it and converted with
``tools/convert_pir_at.py --config`` (which checks the strict fit). Every
config then runs ``tools/test.py CONFIG CONVERTED.pth --eval sea
--max-images 2 --n-iter 3`` on a fabricated PASCAL-VOC / ADE20K folder
(crops and windows shrunk to 64 pixels with ``--cfg-options``); under the
paper's protocol its clean numbers must equal those of the reference
network on the authors' own crops.
"""
import json
import os.path as osp
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmseg_robust  # noqa: F401  (registration)
from tests.conftest import load_tool
from tests.pir_at_data import (authors_val_sample, make_ade_folder,
                               make_voc_folder)
from tests.pir_at_reference import (DEPTHS_S, DEPTHS_T, RefSegmenter,
                                    RefUperNetConvNeXt, randomize_)

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / 'configs' / 'pir_at'
README = FOLDER / 'README.md'
CONFIGS = sorted(p for p in FOLDER.glob('*.py') if not p.name.startswith('_'))
NAME = re.compile(r'^(?P<model>upernet_convnext-[ts]-cvst|segmenter_vit-s)'
                  r'_pir-at_(?P<dataset>voc2012|ade20k)_'
                  r'(?P<protocol>paper|mmseg)-protocol$')
# the published models: (model, dataset)
PUBLISHED = [('upernet_convnext-t-cvst', 'voc2012'),
             ('upernet_convnext-s-cvst', 'voc2012'),
             ('upernet_convnext-t-cvst', 'ade20k'),
             ('upernet_convnext-s-cvst', 'ade20k'),
             ('segmenter_vit-s', 'ade20k')]
CLASSES = {'voc2012': 21, 'ade20k': 151}
SIZE = 64  # crop / window size of the end-to-end runs
N_IMAGES = 2


def _meta(path: Path) -> dict:
    m = NAME.match(path.stem)
    assert m, f'{path.name} does not follow the naming scheme'
    return m.groupdict()


pytestmark = pytest.mark.usefixtures('one_thread')

# --- what the configs say -------------------------------------------------


def test_one_config_per_model_and_protocol():
    found = sorted(
        (m['model'], m['dataset'], m['protocol']) for m in map(_meta, CONFIGS))
    expected = sorted((model, dataset, protocol)
                      for model, dataset in PUBLISHED
                      for protocol in ('paper', 'mmseg'))
    assert found == expected


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_says_what_its_name_says(path):
    cfg, meta = Config.fromfile(str(path)), _meta(path)
    model, pre = cfg.model, cfg.model.data_preprocessor
    assert cfg.custom_imports.imports == ['mmpretrain.models', 'mmseg_robust']
    # [0, 1] RGB inputs, as the models were trained (both protocols)
    assert (pre.mean, pre.std, pre.bgr_to_rgb) == ([0.] * 3, [255.] * 3, True)
    assert model.decode_head.num_classes == CLASSES[meta['dataset']]
    if meta['model'].startswith('upernet'):
        assert model.backbone.type == 'RobustConvNeXt'
        assert model.backbone.stem == 'conv'
        assert model.backbone.arch == {
            't': 'tiny',
            's': 'small'
        }[meta['model'].split('-')[1]]
        assert model.auxiliary_head.num_classes == \
            model.decode_head.num_classes
    else:
        assert model.backbone.type == 'VisionTransformer'
    dataset = cfg.test_dataloader.dataset
    pipeline = [t['type'] for t in dataset.pipeline]
    if meta['protocol'] == 'paper':
        assert model.type == 'EncoderDecoder'
        assert model.test_cfg.mode == 'whole'
        crop = next(t for t in dataset.pipeline
                    if t['type'] == 'ShortSideResizeCenterCrop')
        assert crop['size'] == (473 if meta['dataset'] == 'voc2012' else 512)
        assert dataset.pipeline[0]['imdecode_backend'] == 'pillow'
        if meta['dataset'] == 'voc2012':
            assert 'RemapLabels' in pipeline
            assert dataset.type == 'PascalVOCDataset'
        else:
            assert 'RemapLabels' not in pipeline
            assert dataset.type == 'ADE20KWithOtherDataset'
    else:
        assert 'ShortSideResizeCenterCrop' not in pipeline
        assert 'Resize' in pipeline
        if meta['dataset'] == 'ade20k':
            assert dataset.type == 'ADE20KDataset'
            assert model.type == 'ClassSubsetEncoderDecoder'
            assert model.drop_classes == [0]
            assert model.test_cfg.mode == 'slide'
        else:
            assert model.type == 'EncoderDecoder'
            assert model.test_cfg.mode == 'whole'
    assert cfg.get('train_dataloader') is None


def test_every_config_has_a_readme_entry():
    text = README.read_text()
    names = set(re.findall(r'`([a-z0-9_.-]+_pir-at_[a-z0-9_-]+)`', text))
    stems = {p.stem for p in CONFIGS}
    assert stems <= names, f'configs not in README.md: {stems - names}'
    assert names <= stems, f'README.md names missing configs: {names - stems}'


# --- converted checkpoints, end to end ----------------------------------


def _reference(model: str, dataset: str, seed: int) -> torch.nn.Module:
    classes = CLASSES[dataset]
    if model == 'segmenter_vit-s':
        ref = RefSegmenter(classes)
    else:
        depths = DEPTHS_T if '-t-' in model else DEPTHS_S
        ref = RefUperNetConvNeXt(depths, classes)
    return randomize_(ref, seed=seed)


def _clean_metrics(preds, labels, num_classes: int) -> dict:
    """aAcc / mIoU / mAcc (%) as MMSeg's IoUMetric pools them."""
    inter, pred_area, label_area = (np.zeros(num_classes) for _ in range(3))
    for pred, label in zip(preds, labels):
        valid = label != 255
        p, t = pred[valid], label[valid]
        inter += np.bincount(t[p == t], minlength=num_classes)
        pred_area += np.bincount(p, minlength=num_classes)
        label_area += np.bincount(t, minlength=num_classes)
    union = pred_area + label_area - inter
    with np.errstate(invalid='ignore', divide='ignore'):
        iou, acc = inter / union, inter / label_area
    return {
        'aAcc': 100 * inter.sum() / label_area.sum(),
        'mIoU': 100 * np.nanmean(iou),
        'mAcc': 100 * np.nanmean(acc)
    }


@pytest.fixture(scope='module')
def data_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp('pir_at_data')
    return dict(
        voc2012=make_voc_folder(str(root)), ade20k=make_ade_folder(str(root)))


def _favour_background(ref: torch.nn.Module, logits: torch.Tensor) -> None:
    """Raise the output bias of class 0 (background / "other", the most
    frequent label of the fabricated scenes) so that it wins about half of
    the pixels: a random network would otherwise predict classes that are
    absent, and clean accuracy would be 0 whatever the crops."""
    margin = (logits[:, 1:].amax(1) - logits[:, 0]).flatten().sort().values
    # the widest gap between neighbouring margins near the median: no pixel
    # is then close to a tie between class 0 and the others
    mid, half = margin.numel() // 2, margin.numel() // 20
    window = margin[mid - half:mid + half + 1]
    k = mid - half + int((window[1:] - window[:-1]).argmax())
    shift = (margin[k] + margin[k + 1]) / 2
    if isinstance(ref, RefSegmenter):
        bias = ref.decoder.mask_norm.bias
    else:
        bias = ref.decode_head.classifier.bias
    bias.data[0] += shift


def _first_images(config: Path, data_root: str) -> list:
    """``(img_path, seg_map_path)`` of the ``N_IMAGES`` images that
    ``--max-images`` evaluates."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(str(config))
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.update(data_root=data_root, pipeline=[])
    init_default_scope('mmseg')
    dataset = DATASETS.build(ds_cfg)
    infos = [dataset.get_data_info(i) for i in range(N_IMAGES)]
    return [(i['img_path'], i['seg_map_path']) for i in infos]


def _published(model: str, dataset: str, data_root: str, tmp_dir: Path,
               seed: int) -> dict:
    """A stand-in for a published model, saved as the authors save it and
    converted with tools/convert_pir_at.py (``--config`` checks the strict
    fit); also the reference network's clean metrics on the authors' crops
    (at ``SIZE``) of the images the runs evaluate."""
    ref = _reference(model, dataset, seed)
    config = FOLDER / f'{model}_pir-at_{dataset}_paper-protocol.py'
    samples = [
        authors_val_sample(
            img_path, seg_map_path, SIZE, voc=dataset == 'voc2012')
        for img_path, seg_map_path in _first_images(config, data_root)
    ]
    with torch.no_grad():
        x = torch.stack([x for x, _ in samples])
        _favour_background(ref, ref(x))
        preds = [p.numpy() for p in ref(x).argmax(1)]
    labels = [y.numpy() for _, y in samples]
    assert 0.2 < np.mean([(p == 0).mean() for p in preds]) < 0.8

    src = tmp_dir / 'published.pth'
    dst = tmp_dir / 'converted.pth'
    torch.save(ref.state_dict(), src)
    load_tool('convert_pir_at')([str(src), str(dst), '--config', str(config)])
    src.unlink()
    return dict(
        checkpoint=str(dst),
        clean=_clean_metrics(preds, labels, CLASSES[dataset]))


def _shrink_options(meta: dict, data_root: str) -> list:
    """``--cfg-options`` for a fast run on the fabricated folder."""
    opts = [
        f'test_dataloader.dataset.data_root={data_root}',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        'log_level=WARNING',
    ]
    if meta['protocol'] == 'paper':
        # pipeline: load image, load label, crop, ...
        opts += [
            f'test_dataloader.dataset.pipeline.2.size={SIZE}',
            f'test_dataloader.batch_size={N_IMAGES}'
        ]
    else:
        # pipeline: load image, resize, load label, pack
        opts.append(
            f'test_dataloader.dataset.pipeline.1.scale=({4 * SIZE},{SIZE})')
        if meta['dataset'] == 'ade20k':
            opts += [
                f'model.test_cfg.crop_size=({SIZE},{SIZE})',
                f'model.test_cfg.stride=({SIZE * 3 // 4},{SIZE * 3 // 4})'
            ]
    return opts


def _run_sea(config: Path, checkpoint: str, data_root: str,
             work_dir: Path) -> dict:
    """``tools/test.py CONFIG CKPT --eval sea --max-images 2 --n-iter 3``
    (at 4/255, shrunk to ``SIZE``); the metrics of ``summary.json``."""
    load_tool('test')([
        str(config), checkpoint, '--eval', 'sea', '--max-images',
        str(N_IMAGES), '--n-iter', '3', '--eps', '4', '--work-dir',
        str(work_dir), '--cfg-options'
    ] + _shrink_options(_meta(config), data_root))
    with open(osp.join(work_dir, 'sea', 'summary.json')) as f:
        metrics = json.load(f)['metrics']
    assert metrics['sea/n_images'] == N_IMAGES
    for name in ('aAcc', 'mIoU', 'mAcc'):
        for key in (f'sea/clean/{name}', f'sea/eps4/worst/{name}'):
            assert 0 <= metrics[key] <= 100, key
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize(
    'model, dataset', PUBLISHED, ids=[f'{m}_{d}' for m, d in PUBLISHED])
def test_published_model_end_to_end(model, dataset, data_roots, tmp_path):
    """Convert once, then ``tools/test.py --eval sea`` with both configs of
    the model (one test per model: each converted file is made once, on
    one worker)."""
    root = data_roots[dataset]
    published = _published(
        model, dataset, root, tmp_path, seed=PUBLISHED.index((model, dataset)))
    paper = FOLDER / f'{model}_pir-at_{dataset}_paper-protocol.py'
    mmseg = FOLDER / f'{model}_pir-at_{dataset}_mmseg-protocol.py'

    metrics = _run_sea(paper, published['checkpoint'], root,
                       tmp_path / 'paper')
    # the converted model on the config's crops scores what the reference
    # network scores on the authors' crops
    for name, value in published['clean'].items():
        assert metrics[f'sea/clean/{name}'] == pytest.approx(
            value, abs=0.006), name

    _run_sea(mmseg, published['checkpoint'], root, tmp_path / 'mmseg')

    if model == 'upernet_convnext-t-cvst':
        # without --eval sea: MMSeg's own test loop and IoUMetric
        options = _shrink_options(_meta(paper), root)
        options.append(f'test_dataloader.dataset.indices={N_IMAGES}')
        plain = load_tool('test')([
            str(paper), published['checkpoint'], '--work-dir',
            str(tmp_path / 'plain'), '--cfg-options'
        ] + options)
        for name, value in published['clean'].items():
            assert plain[name] == pytest.approx(value, abs=0.006), name
