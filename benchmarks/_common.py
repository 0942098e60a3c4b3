"""Shared helpers of the benchmark scripts (imported as a sibling module:
``python benchmarks/bench_*.py`` puts this folder on ``sys.path``)."""
import glob
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, List

import torch

import mmseg_robust

# the benchmarks build MMSeg models and runners: the compatibility patches and
# the plugin's registration, explicitly (docs/compat.md)
mmseg_robust.register_all_modules()

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'work_dirs', 'demo')
DEMO_CONFIGS = {
    'clean':
    osp.join(
        ROOT, 'configs', 'demo', 'upernet_convnext-demo_clean_1xb8-400it_'
        'scratch-assay-64x64.py'),
    'at2':
    osp.join(ROOT, 'configs', 'demo', 'upernet_convnext-demo_at2_1xb8-400it_'
             'scratch-assay-64x64.py'),
}

#: The models of the strength benchmarks (bench_strength.py)
STRENGTH_MODELS = ['texture_clean', 'texture_at', 'demo_clean', 'demo_at2']


def add_strength_args(parser, out: str) -> None:
    """The options bench_strength.py and bench_before_after.py share: which
    models, radii (in 1/255), iterations, seed and threads, and ``--out``."""
    parser.add_argument('--models', nargs='+', default=STRENGTH_MODELS)
    parser.add_argument('--eps', type=float, nargs='+', default=[4, 8, 12, 16])
    parser.add_argument('--n-iter', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--out', default=out)


def add_starts_arg(parser) -> None:
    """``--starts``: how the authors' SEA gets its random starts."""
    parser.add_argument(
        '--starts',
        default='same',
        choices=['same', 'own'],
        help="the authors' random starts: ours per attack (paired "
        'comparison, default) or drawn by their code from the seed')


def sea_noise(x, seeds):
    """The start noise our SEA draws for each attack (by loss name) on the
    images ``x`` with per-image ``seeds``: ``authors_sea(starts=...)`` gives
    the authors' SEA the same starts, so that a comparison is paired."""
    from mmseg_robust.attacks import derive_seed, start_noise
    return lambda loss: start_noise(x, derive_seed(seeds, loss))


#: UPerNet + ConvNeXt-T as MMSeg's ADE20K recipe (150 classes)
CONVNEXT_T = osp.join(ROOT, 'configs', 'upernet_convnext_at',
                      'upernet_convnext-t_clean_4xb8-128ep_ade20k-512x512.py')


def build_segmentor(config: str,
                    device: str,
                    crop: int = None,
                    whole: bool = False):
    """A segmentor of ``config`` with random weights (no pretrained
    checkpoint) and BatchNorm instead of SyncBN in the heads, so it runs in
    one process. ``crop`` fixes the preprocessor's pad size, ``whole``
    makes inference whole-image."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    if crop is not None:
        cfg.model.data_preprocessor.size = (crop, crop)
    if whole:
        cfg.model.test_cfg = dict(mode='whole')
    for head in ('decode_head', 'auxiliary_head'):
        cfg.model[head].norm_cfg = dict(type='BN', requires_grad=True)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model).to(device)


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def median_time(fn: Callable,
                repeats: int = 5,
                warmup: int = 1,
                device: str = 'cpu') -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (seconds)."""
    for _ in range(warmup):
        fn()
        sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> dict:
    info = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads())
    try:
        with open('/proc/cpuinfo') as f:
            names = [
                ln.split(':', 1)[1].strip() for ln in f
                if ln.startswith('model name')
            ]
        if names:
            info['cpu'] = names[0]
    except OSError:
        pass
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def demo_checkpoint(name: str) -> str:
    path = osp.join(DEMO, 'train', name, 'final.pth')
    if not osp.isfile(path):
        sys.exit(f'error: {path} not found: run `make demo` first (it '
                 'trains the demo models these benchmarks attack)')
    return path


def demo_model(name: str, device: str = 'cpu'):
    """The demo's trained clean or AT^2 model, in eval mode."""
    from mmseg.apis import init_model
    return init_model(
        DEMO_CONFIGS[name], demo_checkpoint(name), device=device).eval()


def demo_batches(model, batch_size: int = 10, max_images: int = 20) -> List:
    """Validation tiles of the demo dataset as attack batches."""
    from mmengine.dataset import Compose

    from mmseg_robust import models
    from mmseg_robust.datasets import prepare_scratch_assay
    root = prepare_scratch_assay(osp.join(DEMO, 'data'))
    files = sorted(glob.glob(osp.join(root, 'img_dir', 'val', '*.png')))
    files = files[:max_images]
    pipeline = Compose(model.cfg.test_dataloader.dataset.pipeline)
    out = []
    for i in range(0, len(files), batch_size):
        items = [
            pipeline(
                dict(
                    img_path=f,
                    seg_map_path=f.replace('img_dir', 'ann_dir'),
                    reduce_zero_label=False,
                    seg_fields=[])) for f in files[i:i + batch_size]
        ]
        data = dict(
            inputs=[d['inputs'] for d in items],
            data_samples=[d['data_samples'] for d in items])
        out.append(attack_batch(models, model, data))
    return out


def mmseg_robust_models():
    """``mmseg_robust.models`` (imported late: the benchmarks also run
    other checkouts)."""
    from mmseg_robust import models
    return models


def fake_attack_data(batch_size: int, size: int, num_classes: int) -> dict:
    """A fabricated dataloader batch of ``size`` x ``size`` images."""
    from mmseg_robust.testing import fake_batch
    return fake_batch(batch_size, (size, size), num_classes=num_classes)


def attack_batch(models, segmentor, data):
    """``AttackBatch.from_data``, or ``SegmentorAttackModel.from_batch`` in
    checkouts before it (bench_speed / bench_before_after run those)."""
    if hasattr(models, 'AttackBatch') and hasattr(models.AttackBatch,
                                                  'from_data'):
        return models.AttackBatch.from_data(segmentor, data)
    return models.SegmentorAttackModel.from_batch(segmentor, data)


def read_runs(name: str, out_dir: str) -> list:
    """The ``runs`` already in ``<out_dir>/<name>.json`` (none if it does
    not exist yet): benchmarks that keep one entry per setting add to them."""
    path = osp.join(out_dir, f'{name}.json')
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return json.load(f).get('runs', [])


def replace_run(entries: list, entry: dict, key) -> list:
    """``entries`` without those whose settings have ``entry``'s
    ``key(settings)``, then ``entry``: one entry per setting."""
    mine = key(entry['settings'])
    return [e for e in entries if key(e['settings']) != mine] + [entry]


def write_json(name: str, payload: dict, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = osp.join(out_dir, f'{name}.json')
    payload = dict(
        payload, machine=machine(), date=time.strftime('%Y-%m-%d %H:%M'))
    with open(path, 'w') as f:
        json.dump(payload, f, indent=2, default=float)
    return path


def light_segnet(num_classes: int = 21, seed: int = 0):
    """The light encoder-decoder of the engine benchmarks (plain PyTorch):
    three stride-2 stages of two 3x3 conv + BN + ReLU (32, 64, 128
    channels), so features at stride 8, a 1x1 classifier and bilinear
    upsampling to the input size; inputs in [0, 1], random weights, eval
    mode."""
    import torch.nn as nn
    import torch.nn.functional as F

    def stage(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU())

    class LightSegNet(nn.Module):

        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(
                stage(3, 32), stage(32, 64), stage(64, 128))
            self.classifier = nn.Conv2d(128, num_classes, 1)

        def forward(self, x):
            logits = self.classifier(self.encoder((x - 0.5) / 0.25))
            return F.interpolate(
                logits, size=x.shape[2:], mode='bilinear', align_corners=False)

    torch.manual_seed(seed)
    return LightSegNet().eval()


def worker_result(cmd: List[str],
                  env: dict,
                  cwd: str,
                  label: str,
                  capture_stderr: bool = False) -> dict:
    """Run a benchmark's worker process and return its ``RESULT {json}``
    line (``capture_stderr``: its stderr goes into the error, not to the
    terminal)."""
    proc = subprocess.run(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_stderr else None,
        text=True,
        env=env,
        cwd=cwd)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[7:])
    err = f'\n{proc.stderr[-3000:]}' if capture_stderr else ''
    raise SystemExit(
        f'error: {label} failed in {cwd}:\n{proc.stdout[-3000:]}{err}')


def checkouts(other: str = None) -> dict:
    """The checkouts a before/after benchmark runs: this one, and
    ``other`` (a path) where given."""
    found = {'this': ROOT}
    if other:
        found['other'] = osp.abspath(other)
    return found
