"""The training configs under ``configs/``: they parse, build, train two
iterations on the CPU, and say what their names say (paper Tables 2-3).

Nothing here downloads: pretrained ``init_cfg`` entries are dropped (or, for
robust init, pointed at a fabricated checkpoint) and http(s) checkpoint
loading is refused for the whole module.
"""
import copy
import functools
import math
import os.path as osp
import re
import uuid
from pathlib import Path

import mmseg
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.utils import digit_version
from mmseg.registry import MODELS

import mmseg_robust  # noqa: F401  (compat fixes, registration)
from mmseg_robust.testing import make_toy_dataset, toy_dataset_cfg

REPO = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO / 'configs'
README = CONFIG_ROOT / 'upernet_convnext_at' / 'README.md'
# MMSeg's own ConvNeXt-T recipe, which our model and optimiser restate
STOCK_CONVNEXT_T = osp.join(
    osp.dirname(mmseg.__file__), '.mim', 'configs', 'convnext',
    'convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py')

# every training config (smoke tests) and the paper's recipes (recipe
# tests); configs/pir_at/ evaluates released checkpoints and has its own
# tests (test_pir_at_configs.py)
ALL_LEAVES = sorted(
    p for p in CONFIG_ROOT.rglob('*.py') if '_base_' not in p.parts
    and not p.name.startswith('_') and p.parent.name != 'pir_at')
LEAVES = [p for p in ALL_LEAVES if p.parent.name == 'upernet_convnext_at']

# training-set sizes behind the epoch -> iteration conversion
TRAIN_IMAGES = {'voc12aug': 10582, 'ade20k': 20210}
NUM_CLASSES = {'voc12aug': 21, 'ade20k': 150, 'scratch-assay': 3}
# the demo configs: configs/demo/upernet_convnext-demo_<recipe>_...
DEMO_NAME = re.compile(r'^upernet_convnext-demo_(?:clean|at(?P<steps>\d+))_'
                       r'.*_(?P<dataset>scratch-assay)-\d+x\d+$')
TOTAL_BATCH = 32  # 4 GPUs x 8 images
NAME = re.compile(r'^upernet_convnext-t_(?P<recipe>clean|at(?P<steps>\d+)-'
                  r'(?P<init>clean|robust)-init)_4xb8-(?P<epochs>\d+)ep_'
                  r'(?P<dataset>voc12aug|ade20k)-512x512$')

TINY_ARCH = dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64])
ROBUST_MEAN_STD = ([0., 0., 0.], [255., 255., 255.])


def _meta(path: Path) -> dict:
    demo = DEMO_NAME.match(path.stem)
    if demo:
        steps = demo.group('steps')
        return dict(
            steps=int(steps) if steps else None,
            init='clean',
            epochs=None,
            dataset=demo.group('dataset'))
    m = NAME.match(path.stem)
    assert m, f'{path.name} does not follow the naming scheme'
    steps = m.group('steps')
    return dict(
        steps=int(steps) if steps else None,
        init=m.group('init') or 'clean',
        epochs=int(m.group('epochs')),
        dataset=m.group('dataset'))


@pytest.fixture(scope='module', autouse=True)
def _config_env():
    """No checkpoint downloads, one thread."""

    def refuse(filename, *args, **kwargs):
        raise AssertionError(f'a test tried to download {filename}')

    # the toy-sized convolutions run ~50x slower with several intra-op
    # threads when the cores are shared
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        for scheme in ('http://', 'https://'):
            mp.setitem(CheckpointLoader._schemes, scheme, refuse)
        yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _load_cached(path: str) -> Config:
    cfg = Config.fromfile(path)
    # no yapf formatting: the Runner prints its config 4 times, ~1 s each
    # (fromfile ignores format_python_code for old-style configs)
    return Config(
        cfg.to_dict(),
        cfg_text=cfg.text,
        filename=cfg.filename,
        format_python_code=False)


def load(path) -> Config:
    """``Config.fromfile``, parsed once per path; a copy to modify."""
    return copy.deepcopy(_load_cached(str(path)))


def shrink_model(cfg: Config) -> dict:
    """The config's model with a 1-block-per-stage ConvNeXt, 16-channel
    heads, BN instead of SyncBN, no checkpoint and 32x32 inputs."""
    model = copy.deepcopy(cfg.model)
    model.backbone.arch = dict(TINY_ARCH)
    model.backbone.init_cfg = None
    channels = TINY_ARCH['channels']
    bn = dict(type='BN', requires_grad=True)
    model.decode_head.update(in_channels=channels, channels=16, norm_cfg=bn)
    aux = model.auxiliary_head
    aux.update(in_channels=channels[aux.in_index], channels=16, norm_cfg=bn)
    model.data_preprocessor.size = (32, 32)
    if model.test_cfg.get('mode') == 'slide':
        model.test_cfg.update(crop_size=(32, 32), stride=(21, 21))
    return model


def build(model_cfg) -> torch.nn.Module:
    init_default_scope('mmseg')
    return MODELS.build(model_cfg)


def without_scope(obj):
    """Drop the ``_scope_`` keys that `mmseg::` bases add."""
    if isinstance(obj, dict):
        return {k: without_scope(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return type(obj)(without_scope(v) for v in obj)
    return obj


def adv_hooks(cfg: Config) -> list:
    return [
        h for h in cfg.get('custom_hooks', None) or []
        if h['type'] == 'AdvTrainingHook'
    ]


# --- every config --------------------------------------------------------


def test_configs_found():
    assert len(LEAVES) >= 13, LEAVES
    assert len(ALL_LEAVES) > len(LEAVES)  # and the demo's


@pytest.mark.parametrize('path', ALL_LEAVES, ids=lambda p: p.stem)
def test_config_builds(path):
    cfg = load(path)
    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports == dict(
        imports=['mmpretrain.models', 'mmseg_robust'],
        allow_failed_imports=False)
    assert cfg.model.type == 'EncoderDecoder'
    assert cfg.model.decode_head.type == 'UPerHead'
    model = build(shrink_model(cfg))
    model.init_weights()
    assert type(model).__name__ == 'EncoderDecoder'
    assert type(model.decode_head).__name__ == 'UPerHead'
    meta = _meta(path)
    assert model.decode_head.num_classes == NUM_CLASSES[meta['dataset']]
    expected = 'RobustConvNeXt' if meta['init'] == 'robust' else 'ConvNeXt'
    assert type(model.backbone).__name__ == expected


@pytest.mark.parametrize('path', LEAVES, ids=lambda p: p.stem)
def test_config_says_what_its_name_says(path):
    cfg, meta = load(path), _meta(path)
    # schedule: ceil(epochs * images / total batch) iterations
    assert cfg.train_dataloader.batch_size * 4 == TOTAL_BATCH
    max_iters = math.ceil(meta['epochs'] * TRAIN_IMAGES[meta['dataset']] /
                          TOTAL_BATCH)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == max_iters
    warmup, poly = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and poly.type == 'PolyLR'
    assert warmup.begin == 0 and warmup.end == poly.begin
    assert 0 < warmup.end < max_iters // 4
    assert poly.end == max_iters
    # AMP + AdamW + layer-wise lr decay
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.constructor == \
        'LearningRateDecayOptimizerConstructor'
    # adversarial training
    hooks = adv_hooks(cfg)
    if meta['steps'] is None:
        assert hooks == []
    else:
        assert len(hooks) == 1
        assert hooks[0]['eps'] == pytest.approx(4 / 255)
        assert hooks[0]['steps'] == meta['steps']
    # initialisation and the matching input normalisation
    backbone, pre = cfg.model.backbone, cfg.model.data_preprocessor
    assert backbone.arch == 'tiny'
    assert pre.bgr_to_rgb is True
    if meta['init'] == 'robust':
        assert backbone.type == 'RobustConvNeXt'
        assert backbone.stem == 'conv'
        assert backbone.init_cfg == dict(
            type='RobustPretrained',
            checkpoint='checkpoints/convnext_tiny_cvst_robust.pt')
        assert (pre.mean, pre.std) == ROBUST_MEAN_STD
    else:
        stock = _load_cached(STOCK_CONVNEXT_T)
        assert without_scope(backbone) == \
            without_scope(stock.model.backbone)
        assert (pre.mean, pre.std) == (stock.model.data_preprocessor.mean,
                                       stock.model.data_preprocessor.std)


def test_model_and_optimiser_match_mmseg_convnext_t():
    """Our restated UPerNet + ConvNeXt-T recipe has not drifted from
    MMSeg's; the ADE20K clean model is exactly MMSeg's."""
    stock = _load_cached(STOCK_CONVNEXT_T)
    for path in LEAVES:
        cfg = load(path)
        assert without_scope(cfg.optim_wrapper) == \
            without_scope(stock.optim_wrapper), path.name
        if path.stem.startswith('upernet_convnext-t_clean') and \
                'ade20k' in path.stem:
            assert without_scope(cfg.model) == without_scope(stock.model)
        model = without_scope(cfg.model)
        for head in ('decode_head', 'auxiliary_head'):
            model[head]['num_classes'] = stock.model[head].num_classes
            assert model[head] == without_scope(stock.model[head]), \
                (path.name, head)


@pytest.mark.parametrize('init', ['clean', 'robust'])
def test_full_size_model_runs(init):
    """Real ConvNeXt-T widths and head channels fit together (the other
    tests shrink them); random weights, no checkpoint."""
    path = next(
        p for p in LEAVES
        if _meta(p)['init'] == init and _meta(p)['dataset'] == 'voc12aug')
    cfg = load(path)
    cfg.model.backbone.init_cfg = None
    bn = dict(type='BN', requires_grad=True)
    cfg.model.decode_head.norm_cfg = cfg.model.auxiliary_head.norm_cfg = bn
    model = build(cfg.model).eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64), mode='tensor')
    assert logits.shape == (1, 21, 16, 16)


def test_robust_checkpoint_and_stem_are_one_option_each():
    """What the README tells users to pass with --cfg-options."""
    path = next(p for p in LEAVES if '-robust-init_' in p.name)
    cfg = load(path)
    cfg.merge_from_dict({
        'model.backbone.init_cfg.checkpoint': 'elsewhere/robust.pth',
        'model.backbone.stem': 'patch',
    })
    assert cfg.model.backbone.init_cfg == dict(
        type='RobustPretrained', checkpoint='elsewhere/robust.pth')
    model = build(shrink_model(cfg))
    assert model.backbone.stem_type == 'patch'


def test_every_config_has_a_readme_row():
    rows = [
        line for line in README.read_text().splitlines()
        if line.startswith('|')
    ]
    names = {n for row in rows for n in re.findall(r'`([^`]+)`', row)}
    missing = [p.stem for p in LEAVES if p.stem not in names]
    assert not missing, f'configs without a README row: {missing}'
    stale = [
        n for n in names
        if n.startswith('upernet_') and n not in {p.stem
                                                  for p in LEAVES}
    ]
    assert not stale, f'README rows of missing configs: {stale}'


def test_mmseg_scope_resolves_with_the_package_alone():
    """After ``import mmseg_robust`` (as in tools/train.py) the configs'
    `mmseg::` bases resolve, with or without ``pkg_resources``
    (setuptools >= 81 dropped it)."""
    path = Config._get_cfg_path('mmseg::_base_/default_runtime.py', '')[0]
    assert osp.isfile(path) and path.endswith(
        osp.join('_base_', 'default_runtime.py'))


# --- two training iterations through a real Runner --------------------------

#: torch 2.1's oneDNN (mkldnn) CPU convolutions now and then let uninitialised
#: memory into a training step of the robust ConvNeXt's ConvStem (NaN weights
#: after the first AdamW step, in about 1 of 5 runs of the suite with
#: ``-n 2``). Measured on torch 2.1.2 with the allocator filled with NaN
#: before each test: 9 of 15 robust-init configs failed over 3 runs with
#: oneDNN on, 0 of 20 with it off; torch 2.14: 0 of 15 with it on
#: (README, "Known issues"). Not this package's code: gated to the torch
#: that shows it.
ONEDNN_READS_GARBAGE = digit_version(torch.__version__) < digit_version('2.2')


def _shrink_pipeline(pipeline: list) -> list:
    """The config's train pipeline at toy size (32x32 crops)."""
    pipeline = copy.deepcopy(pipeline)
    for t in pipeline:
        if t['type'] == 'RandomResize':
            t['scale'] = (128, 32)
        elif t['type'] == 'RandomCrop':
            t['crop_size'] = (32, 32)
        elif t['type'] == 'Pad':
            t['size'] = (32, 32)
    return pipeline


def _fake_robust_checkpoint(path: str, stem: str) -> dict:
    """A tiny RobustConvNeXt's weights saved as a checkpoint."""
    from mmseg_robust.models import RobustConvNeXt
    torch.manual_seed(1)
    backbone = RobustConvNeXt(
        arch=dict(TINY_ARCH),
        stem=stem,
        out_indices=[0, 1, 2, 3],
        gap_before_final_norm=False)
    backbone.init_weights()
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    torch.save({'state_dict': state}, path)
    return state


def _runner_cfg(cfg: Config, tmp_path: Path, data_root: str) -> Config:
    cfg.model = shrink_model(cfg)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = f'test_configs_{uuid.uuid4().hex[:12]}'
    cfg.log_level = 'WARNING'
    load_ann = next(t for t in cfg.train_pipeline
                    if t['type'] == 'LoadAnnotations')
    dataset = toy_dataset_cfg(data_root, 'train', train=True)
    dataset.update(
        pipeline=_shrink_pipeline(cfg.train_pipeline),
        reduce_zero_label=load_ann.get('reduce_zero_label', False))
    cfg.train_dataloader = dict(
        batch_size=2,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dataset)
    for split in ('val', 'test'):
        cfg[f'{split}_dataloader'] = None
        cfg[f'{split}_cfg'] = None
        cfg[f'{split}_evaluator'] = None
    cfg.train_cfg.update(max_iters=2, val_interval=10**6)
    # AmpOptimWrapper needs CUDA
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.optim_wrapper.pop('loss_scale', None)
    cfg.default_hooks.checkpoint = None
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    cfg.randomness = dict(seed=0)
    cfg.load_from, cfg.resume = None, False
    return cfg


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    return make_toy_dataset(
        str(tmp_path_factory.mktemp('toy_configs')), n_train=4, n_val=1)


@pytest.mark.parametrize('path', ALL_LEAVES, ids=lambda p: p.stem)
def test_config_trains_two_iterations(path, tmp_path, toy_root):
    cfg, meta = load(path), _meta(path)
    cfg = _runner_cfg(cfg, tmp_path, toy_root)
    saved = None
    if meta['init'] == 'robust':
        # keep the robust init_cfg, pointed at a fabricated checkpoint
        ckpt = str(tmp_path / 'robust_backbone.pth')
        saved = _fake_robust_checkpoint(ckpt, cfg.model.backbone.stem)
        cfg.model.backbone.init_cfg = dict(
            load(path).model.backbone.init_cfg, checkpoint=ckpt)

    runner = Runner.from_cfg(cfg)
    with torch.backends.mkldnn.flags(enabled=not ONEDNN_READS_GARBAGE):
        runner.train()

    assert runner.iter == 2
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss)
    hooks = [h for h in runner.hooks if type(h).__name__ == 'AdvTrainingHook']
    if meta['steps'] is None:
        assert hooks == []
    else:
        assert len(hooks) == 1
        assert hooks[0].eps == pytest.approx(4 / 255)
        assert hooks[0].steps == meta['steps']
    pre = runner.model.data_preprocessor
    if meta['init'] == 'robust':
        assert pre.mean.flatten().tolist() == ROBUST_MEAN_STD[0]
        assert pre.std.flatten().tolist() == ROBUST_MEAN_STD[1]
        # the backbone started from the checkpoint: two warm-up steps
        # (lr <= 1e-4 * 1e-3) move the weights by far less than 1e-5
        trained = runner.model.backbone.state_dict()
        for key in ('downsample_layers.0.0.weight',
                    'stages.3.0.pointwise_conv2.weight'):
            torch.testing.assert_close(
                trained[key], saved[key], atol=1e-5, rtol=0)
