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
3. Memory: peak memory held by tensors during an SEA batch vs one training
   step on the same batch (``max_memory_allocated`` on CUDA, the torch
   profiler's allocation events on the CPU).
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time
from typing import Callable

import torch
from _common import (CONVNEXT_T, ROOT, build_segmentor, demo_batches,
                     demo_model, median_time, sync, write_json)
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
    return p.parse_args(argv)


def fake_attack_batch(model, batch_size: int, size: int):
    """A fabricated batch of ``size`` x ``size`` images for ``model`` as an
    attack batch."""
    from mmseg_robust.adapter import AttackBatch
    from mmseg_robust.testing import fake_batch
    data = fake_batch(
        batch_size, (size, size), num_classes=model.decode_head.num_classes)
    return AttackBatch.from_data(model, data)


def fb_fns(batch, device, amp):
    """One forward + input-backward, and one forward only, on the batch."""
    ctx = torch.autocast(
        device.split(':')[0],
        dtype=torch.float16 if device.startswith('cuda') else torch.bfloat16,
        enabled=amp)

    def fb():
        x = batch.x.detach().requires_grad_(True)
        with ctx:
            out = batch.model(x)
        torch.autograd.grad(out.float().sum(), x)

    def f():
        with torch.no_grad(), ctx:
            batch.model(batch.x)

    return fb, f


def timed(fn, device):
    """Result of ``fn()`` and its wall time."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def paired_ratio(attack, n_fb, fb, device, repeats):
    """Median over ``repeats`` of time(attack) / time(n_fb passes of fb in a
    loop), each pair measured back to back so that machine drift cancels."""
    fb()  # warm-up
    ratios, t_attack, t_floor = [], [], []
    res = None
    for _ in range(repeats):
        _, tf = timed(lambda: [fb() for _ in range(n_fb)], device)
        res, ta = timed(attack, device)
        ratios.append(ta / tf)
        t_attack.append(ta)
        t_floor.append(tf)
    return (res, statistics.median(ratios), statistics.median(t_attack),
            statistics.median(t_floor))


def overhead_rows(name, batch, n_iter, device, repeats, amp, eps=4 / 255):
    """APGD and SEA time against the same number of bare forward + input-
    backward passes. The attacks also make a few forward-only passes (the
    clean batch; the last iterate of every APGD run, which needs no
    gradient): counted in ``ratio``,
    removed in ``per_iter_overhead`` (what is left at 300 iterations)."""
    fb, f = fb_fns(batch, device, amp)
    t_f = median_time(f, repeats, 1, device)
    rows = []
    res, ratio, ta, tf = paired_ratio(
        lambda: apgd(
            batch.model,
            batch.x,
            batch.y,
            eps,
            n_iter,
            loss='mask_ce',
            mask=batch.mask,
            amp=amp,
            early_stop=False), n_iter, fb, device, repeats)
    rows.append(
        dict(
            model=name,
            attack='APGD mask_ce',
            n_iter=n_iter,
            n_fb=n_iter,
            n_forward=2,
            batch=batch.x.shape[0],
            time=ta,
            floor=tf,
            t_f=t_f,
            ratio=ratio,
            per_iter_overhead=(ta - 2 * t_f) / tf - 1))
    n = max(n_iter, 3)
    sea = SEA(
        batch.model,
        eps,
        n_iter=n,
        amp=amp,
        skip_broken=False,
        check_model=False,
        version='2023')
    n_fb = len(sea.attacks) * n
    n_forward = 1 + 3 * len(sea.attacks)  # clean + last iterate per stage
    res, ratio, ta, tf = paired_ratio(
        lambda: sea.run(batch.x, batch.y, mask=batch.mask), n_fb, fb, device,
        repeats)
    rows.append(
        dict(
            model=name,
            attack='SEA (4 x red-eps APGD)',
            n_iter=n,
            n_fb=n_fb,
            n_forward=n_forward,
            batch=batch.x.shape[0],
            time=ta,
            floor=tf,
            t_f=t_f,
            ratio=ratio,
            per_iter_overhead=(ta - n_forward * t_f) / tf - 1))
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
                sea = SEA(
                    b.model,
                    eps,
                    n_iter=n_iter,
                    skip_broken=skip,
                    check_model=False,
                    version='2023')
                res, dt = timed(lambda: sea.run(b.x, b.y, mask=b.mask), 'cpu')
                t += dt
                worst.append(res.correct)
                evals += sum(r.n_evals for r in res.attacks.values())
            out[skip] = (t, torch.cat(worst), evals)
        identical = torch.equal(out[False][1], out[True][1])
        broken = int((out[True][1] == 0).sum())
        rows.append(
            dict(
                eps=f'{eps * 255:g}/255',
                time_no_skip=out[False][0],
                time_skip=out[True][0],
                saving=1 - out[True][0] / out[False][0],
                evals_no_skip=out[False][2],
                evals_skip=out[True][2],
                images_broken=broken,
                images=len(out[True][1]),
                identical_worst_case=identical))
    return rows


def peak_tensor_mb(fn: Callable, device: str) -> float:
    """Peak of the memory held by live tensors while ``fn()`` runs (MB).

    CUDA: ``max_memory_allocated``. CPU: the allocation events of the torch
    profiler, replayed in time order -- process RSS is no measure here,
    because the allocator and oneDNN keep freed memory and caches.
    """
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile
    with profile(
            activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == '[memory]'),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def memory_rows(name, segmentor, batch, device, n_iter=3):
    """Peak tensor memory of an SEA batch vs one training step (AdamW) on
    the same images; the segmentor's weights are restored afterwards."""
    from mmengine.optim import OptimWrapper
    state = copy.deepcopy(segmentor.state_dict())
    data = dict(
        inputs=batch.raw_images(batch.x),
        data_samples=batch.model.data_samples)
    sea = SEA(
        batch.model, 4 / 255, n_iter=n_iter, check_model=False, version='2023')
    sea_mb = peak_tensor_mb(lambda: sea.run(batch.x, batch.y, mask=batch.mask),
                            device)
    optim = OptimWrapper(torch.optim.AdamW(segmentor.parameters(), 1e-4))

    def train_step():
        segmentor.train()
        segmentor.train_step(data, optim)
        segmentor.eval()

    train_mb = peak_tensor_mb(train_step, device)
    segmentor.load_state_dict(state)
    return dict(
        model=name, sea_mb=sea_mb, train_mb=train_mb, ratio=sea_mb / train_mb)


def main(argv=None):
    args = parse_args(argv)
    device = args.device
    results = dict(settings=vars(args))

    # 1. overhead vs the limit
    model = demo_model('at2', device)
    batch = demo_batches(model, batch_size=10, max_images=10)[0]
    rows = overhead_rows('demo AT^2 (128x128, batch 10)', batch, args.n_iter,
                         device, args.repeats, args.amp)
    big = big_batch = big_name = None
    if not args.skip_big:
        # UPerNet + ConvNeXt-T as in MMSeg's ADE20K config, random weights
        big = build_segmentor(CONVNEXT_T, device, whole=True).eval()
        big_batch = fake_attack_batch(big, 1, args.big_size)
        big_name = (f'UPerNet+ConvNeXt-T ({args.big_size}x{args.big_size}, '
                    'batch 1)')
        rows += overhead_rows(big_name, big_batch, args.big_n_iter, device,
                              1 if device == 'cpu' else args.repeats, args.amp)
    t = PrettyTable([
        'model', 'attack', 'n_iter', 'floor s', 'time s', 'ratio to floor',
        'per-iter overhead'
    ])
    for r in rows:
        t.add_row([
            r['model'], r['attack'], r['n_iter'], f'{r["floor"]:.2f}',
            f'{r["time"]:.2f}', f'{r["ratio"]:.3f}',
            f'{r["per_iter_overhead"]:+.1%}'
        ])
    print('1. attack time / time of n_attacks * n_iter bare forward + '
          'input-backward passes (median of paired runs)')
    print(t)
    results['overhead'] = rows

    # 2. skipping broken images (clean demo model)
    clean = demo_model('clean', device)
    batches = demo_batches(clean, batch_size=10, max_images=20)
    srows = skip_rows(batches, args.n_iter, [8 / 255, 16 / 255, 32 / 255])
    t = PrettyTable([
        'eps', 'images at 0 acc', 'time no skip s', 'time skip s', 'saving',
        'evals no skip', 'evals skip', 'identical'
    ])
    for r in srows:
        t.add_row([
            r['eps'], f'{r["images_broken"]}/{r["images"]}',
            f'{r["time_no_skip"]:.1f}', f'{r["time_skip"]:.1f}',
            f'{r["saving"]:.0%}', r['evals_no_skip'], r['evals_skip'],
            r['identical_worst_case']
        ])
    print('\n2. SEA with and without skipping images at zero accuracy '
          '(clean demo model, 20 tiles)')
    print(t)
    results['skip_broken'] = srows

    # 3. peak memory (the demo model, and the big one if built)
    mrows = [
        memory_rows('demo AT^2 (128x128, batch 10)', model, batch, device)
    ]
    if big is not None:
        # training needs 2 images (BatchNorm of the 1x1 pooling branch)
        big2 = fake_attack_batch(big, 2, args.big_size)
        mrows.append(
            memory_rows(
                big_name.replace('batch 1', 'batch 2'), big, big2, device))
    t = PrettyTable(
        ['model', 'SEA batch MB', 'training step MB', 'ratio', 'target'])
    for r in mrows:
        t.add_row([
            r['model'], f'{r["sea_mb"]:.0f}', f'{r["train_mb"]:.0f}',
            f'{r["ratio"]:.2f}', '<= 1.2'
        ])
    print('\n3. peak memory held by tensors: SEA (4 attacks, 3 iterations) '
          'vs one training step, same batch')
    print(t)
    results['memory'] = mrows
    path = write_json('bench_attacks', results, args.out)
    print(f'\nwrote {path}')


if __name__ == '__main__':
    sys.exit(main())
