"""Attack cost against its physical limit, the saving of skipping broken
images, and peak memory of an SEA batch vs a training step.

    python benchmarks/bench_attacks.py [--device cpu|cuda] [--amp]
        [--n-iter 20] [--big-size 512] [--big-n-iter 2] [--skip-big]

Needs the demo models (`make demo`). Prints tables and writes
``benchmarks/results/bench_attacks.json``.

1. Overhead: the floor of an n-iteration attack is n forward + input-
   backward passes of the model. Reported: ``time(run) / (n_attacks *
   n_iter * t_fb)`` with ``t_fb`` the median time of one forward +
   input-backward on the same batch, for the demo model and for UPerNet +
   ConvNeXt-T (random weights, 150 classes). Each APGD run also evaluates its
   start and its last iterate, and SEA the clean batch: a fixed cost of a few
   passes that vanishes at the paper's 300 iterations, reported separately as
   the per-iteration overhead.
2. Skipping: SEA on the clean demo model with and without skipping images
   already at zero accuracy; the worst case must be identical.
3. Memory: peak memory of an SEA batch vs one training step on the same
   batch (fresh processes, peak RSS above the state before the step on the
   CPU; ``max_memory_allocated`` on CUDA).
"""
import argparse
import json
import os.path as osp
import resource
import sys
import time

import torch
from _common import (ROOT, demo_batches, demo_model, median_time, sync,
                     write_json)
from prettytable import PrettyTable

from mmseg_robust.attacks import SEA, apgd


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--amp', action='store_true')
    p.add_argument('--n-iter', type=int, default=20)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--big-size', type=int, default=512)
    p.add_argument('--big-n-iter', type=int, default=2)
    p.add_argument('--skip-big', action='store_true')
    p.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results'))
    p.add_argument('--memory-probe', choices=['sea', 'train'],
                   help=argparse.SUPPRESS)
    p.add_argument('--probe-model', default='demo', help=argparse.SUPPRESS)
    return p.parse_args(argv)


def big_model(device: str, size: int):
    """UPerNet + ConvNeXt-T as in MMSeg's ADE20K config, random weights,
    and one fabricated batch at ``size`` x ``size``."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmseg.registry import MODELS
    from mmseg_robust.models import SegmentorAttackModel
    from mmseg_robust.testing import fake_batch
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'upernet_convnext_at',
                 'upernet_convnext-t_clean_4xb8-128ep_ade20k-512x512.py'))
    cfg.model.backbone.init_cfg = None
    for head in ('decode_head', 'auxiliary_head'):
        cfg.model[head].norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.test_cfg = dict(mode='whole')
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(device).eval()
    data = fake_batch(1, (size, size), num_classes=150)
    return model, SegmentorAttackModel.from_batch(model, data)


def fb_times(batch, device, repeats, amp):
    """Median time of forward + input-backward, and of forward only."""
    ctx = torch.autocast(device.split(':')[0], dtype=torch.float16 if
                         device.startswith('cuda') else torch.bfloat16,
                         enabled=amp)

    def fb():
        x = batch.x.detach().requires_grad_(True)
        with ctx:
            out = batch.model(x)
        torch.autograd.grad(out.float().sum(), x)

    def f():
        with torch.no_grad(), ctx:
            batch.model(batch.x)

    return median_time(fb, repeats, 1, device), median_time(f, repeats, 1,
                                                            device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def overhead_rows(name, batch, n_iter, device, repeats, amp, eps=4 / 255):
    t_fb, t_f = fb_times(batch, device, repeats, amp)
    B = batch.x.shape[0]
    rows = []
    res, t_apgd = timed(
        lambda: apgd(batch.model, batch.x, batch.y, eps, n_iter,
                     loss='mask_ce', mask=batch.mask, amp=amp,
                     early_stop=False), device)
    # fixed extras of one run: clean pass + last iterate (forward only)
    extra = 2 * t_f
    rows.append(
        dict(model=name, attack='APGD mask_ce', n_iter=n_iter, batch=B,
             t_fb=t_fb, t_f=t_f, time=t_apgd,
             ratio=t_apgd / (n_iter * t_fb),
             per_iter_overhead=(t_apgd - extra) / (n_iter * t_fb) - 1))
    sea = SEA(batch.model, eps, n_iter=max(n_iter, 3), amp=amp,
              skip_broken=False, check_model=False)
    res, t_sea = timed(lambda: sea.run(batch.x, batch.y, mask=batch.mask),
                       device)
    n = max(n_iter, 3)
    # clean pass + per red-eps stage one forward-only last iterate
    extra = t_f * (1 + 3 * len(sea.attacks))
    evals = sum(r.n_evals for r in res.attacks.values())
    rows.append(
        dict(model=name, attack='SEA (4 x red-eps APGD)', n_iter=n, batch=B,
             t_fb=t_fb, t_f=t_f, time=t_sea,
             ratio=t_sea / (4 * n * t_fb),
             per_iter_overhead=(t_sea - extra) / (4 * n * t_fb) - 1,
             evaluations_per_image=evals / B))
    return rows


def skip_rows(batches, n_iter, eps_list):
    rows = []
    for eps in eps_list:
        out = {}
        for skip in (False, True):
            t = 0.0
            worst = []
            evals = 0
            for b in batches:
                sea = SEA(b.model, eps, n_iter=n_iter, skip_broken=skip,
                          check_model=False)
                res, dt = timed(lambda: sea.run(b.x, b.y, mask=b.mask),
                                'cpu')
                t += dt
                worst.append(res.correct)
                evals += sum(r.n_evals for r in res.attacks.values())
            out[skip] = (t, torch.cat(worst), evals)
        identical = torch.equal(out[False][1], out[True][1])
        rows.append(
            dict(eps=f'{eps * 255:g}/255', time_no_skip=out[False][0],
                 time_skip=out[True][0],
                 saving=1 - out[True][0] / out[False][0],
                 evals_no_skip=out[False][2], evals_skip=out[True][2],
                 identical_worst_case=identical))
    return rows


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_probe(kind: str, args) -> dict:
    """Peak memory of one SEA batch or one training step (this process)."""
    from mmengine.optim import OptimWrapper
    device = args.device
    model = demo_model('at2', device)
    batch = demo_batches(model, batch_size=10, max_images=10)[0]
    data = dict(inputs=batch.raw_images(batch.x),
                data_samples=batch.model.data_samples)
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated() / 2**20
    else:
        base = _rss_mb()
    if kind == 'sea':
        SEA(batch.model, 4 / 255, n_iter=3, check_model=False).run(
            batch.x, batch.y, mask=batch.mask)
    else:
        model.train()
        optim = OptimWrapper(torch.optim.AdamW(model.parameters(), 1e-4))
        model.train_step(data, optim)
    if device.startswith('cuda'):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _rss_mb()
    return dict(kind=kind, base_mb=base, peak_mb=peak, extra_mb=peak - base)


def main(argv=None):
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args)))
        return
    device = args.device
    results = dict(settings=vars(args))

    # 1. overhead vs the limit
    model = demo_model('at2', device)
    batch = demo_batches(model, batch_size=10, max_images=10)[0]
    rows = overhead_rows('demo AT^2 (128x128, batch 10)', batch,
                         args.n_iter, device, args.repeats, args.amp)
    if not args.skip_big:
        big, big_batch = big_model(device, args.big_size)
        rows += overhead_rows(
            f'UPerNet+ConvNeXt-T ({args.big_size}x{args.big_size}, '
            'batch 1)', big_batch, args.big_n_iter, device,
            1 if device == 'cpu' else args.repeats, args.amp)
        del big, big_batch
    t = PrettyTable(['model', 'attack', 'n_iter', 't(fwd+in-bwd) s',
                     'time s', 'ratio to floor', 'per-iter overhead'])
    for r in rows:
        t.add_row([r['model'], r['attack'], r['n_iter'], f'{r["t_fb"]:.3f}',
                   f'{r["time"]:.2f}', f'{r["ratio"]:.3f}',
                   f'{r["per_iter_overhead"]:+.1%}'])
    print('1. attack time / (n_attacks * n_iter * t(fwd + input-bwd))')
    print(t)
    results['overhead'] = rows

    # 2. skipping broken images (clean demo model)
    clean = demo_model('clean', device)
    batches = demo_batches(clean, batch_size=10, max_images=20)
    srows = skip_rows(batches, args.n_iter, [4 / 255, 8 / 255])
    t = PrettyTable(['eps', 'time no skip s', 'time skip s', 'saving',
                     'evals no skip', 'evals skip', 'identical'])
    for r in srows:
        t.add_row([r['eps'], f'{r["time_no_skip"]:.1f}',
                   f'{r["time_skip"]:.1f}', f'{r["saving"]:.0%}',
                   r['evals_no_skip'], r['evals_skip'],
                   r['identical_worst_case']])
    print('\n2. SEA with and without skipping images at zero accuracy '
          '(clean demo model, 20 tiles)')
    print(t)
    results['skip_broken'] = srows

    # 3. peak memory, fresh processes
    script = osp.abspath(__file__)
    common = ['--device', device]
    sea_mem = _probe(script, 'sea', common)
    train_mem = _probe(script, 'train', common)
    ratio = sea_mem['extra_mb'] / train_mem['extra_mb']
    t = PrettyTable(['step', 'peak above start (MB)'])
    t.add_row(['SEA batch (10 tiles 128x128, 4 attacks)',
               f'{sea_mem["extra_mb"]:.0f}'])
    t.add_row(['training step (same batch)', f'{train_mem["extra_mb"]:.0f}'])
    print('\n3. peak memory (demo AT^2 model)')
    print(t)
    print(f'   ratio SEA / training step: {ratio:.2f} (target <= 1.2)')
    results['memory'] = dict(sea=sea_mem, train=train_mem, ratio=ratio)
    path = write_json('bench_attacks', results, args.out)
    print(f'\nwrote {path}')


def _probe(script, kind, common):
    from _common import in_subprocess
    return in_subprocess([script, '--memory-probe', kind] + common)


if __name__ == '__main__':
    sys.exit(main())
