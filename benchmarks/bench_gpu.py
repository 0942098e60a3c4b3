"""The attack engine at full size on one GPU, in one command (about 5
minutes on an H100-class card; not yet run on a GPU by this project, see
docs/benchmarks.md).

    python benchmarks/bench_gpu.py [--batch-sizes 8 16] [--size 512]
        [--n-iter 10] [--modes fp32 bf16 bf16_cl bf16_compile]
        [--device cuda] [--config CONFIG] [--time-budget 420]

UPerNet + ConvNeXt-T (MMSeg's ADE20K recipe, 150 classes, random weights,
whole-image inference) at 512 x 512. For every precision mode and batch
size: the floor (one forward + input-backward), SEA-2023's time per attack
iteration, images per second, peak memory; then the AT^2 / AT^5 training
iteration against a clean one; host synchronisations per SEA iteration
(``torch.cuda.set_sync_debug_mode`` and ``HostSyncCounter``); and the
projected hours of SEA-2023 (4 radii x 4 attacks x 300 iterations, every
image attacked at every radius: an upper bound) on PASCAL-VOC val (1,449
images) and ADE20K val (2,000 images, whole-image 512 x 512 here; MMSeg's
ADE20K test pipeline resizes to a short side of 512 and slides 512 x 512
windows, so long images cost proportionally more).

Modes: ``fp32``; ``bf16`` (autocast); ``bf16_cl`` (bf16 + channels-last
weights and inputs); ``bf16_compile`` (bf16 + ``torch.compile`` of the
backbone and heads; compilation is timed apart). Parts are skipped, and
said so, once ``--time-budget`` seconds are spent. ``--device cpu
--size 64 --batch-sizes 2 --n-iter 3 --modes fp32 bf16`` is a smoke run
on the CPU. Writes ``benchmarks/results/bench_gpu.json``.
"""
import argparse
import os.path as osp
import sys
import time
import warnings

import torch
from _common import (CONVNEXT_T, ROOT, build_segmentor, fake_attack_data,
                     median_time, write_json)

from mmseg_robust.adapter import AttackBatch, accelerate_segmentor
from mmseg_robust.attacks import SEA, HostSyncCounter, pgd_train

MODES = {
    'fp32': dict(amp=False, channels_last=False, compile=False),
    'bf16': dict(amp='bf16', channels_last=False, compile=False),
    'bf16_cl': dict(amp='bf16', channels_last=True, compile=False),
    'bf16_compile': dict(amp='bf16', channels_last=False, compile=True),
}
#: images of the validation sets the projection is made for
DATASETS = {'voc_val': 1449, 'ade20k_val': 2000}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--config', default=CONVNEXT_T)
    p.add_argument('--size', type=int, default=512)
    p.add_argument('--batch-sizes', type=int, nargs='+', default=[8, 16])
    p.add_argument(
        '--modes', nargs='+', default=list(MODES), choices=list(MODES))
    p.add_argument('--n-iter', type=int, default=10)
    p.add_argument('--at-steps', type=int, nargs='+', default=[2, 5])
    p.add_argument('--time-budget', type=float, default=420)
    p.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results'))
    return p.parse_args(argv)


def sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def timed(fn, device, repeats=3, warmup=1):
    """Median wall time of ``fn()`` on ``device`` (:func:`median_time`)."""
    return median_time(fn, repeats=repeats, warmup=warmup, device=device)


def peak_reset(device):
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device):
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def count_cuda_syncs(fn, device):
    """Synchronising CUDA calls during ``fn()`` as
    ``torch.cuda.set_sync_debug_mode('warn')`` reports them."""
    if not device.startswith('cuda'):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            fn()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum('synchroniz' in str(w.message) for w in caught)


def attack_rows(args, mode, segmentor, batch_size, count_syncs):
    """Floor, SEA per iteration, memory (and, with ``count_syncs``, host
    synchronisations) for one mode and batch size."""
    opts = MODES[mode]
    num_classes = segmentor.decode_head.num_classes
    data = fake_attack_data(batch_size, args.size, num_classes)
    batch = AttackBatch.from_data(
        segmentor, data, channels_last=opts['channels_last'])
    amp = opts['amp']
    device_type = args.device.split(':')[0]

    def fb():
        x = batch.x.detach().requires_grad_(True)
        with torch.autocast(
                device_type, dtype=torch.bfloat16, enabled=bool(amp)):
            out = batch.model(x)
        torch.autograd.grad(out.float().sum(), x)

    row = dict(mode=mode, batch_size=batch_size)
    t0 = time.perf_counter()
    fb()  # compiles in the compile mode
    sync(args.device)
    row['first_pass_seconds'] = time.perf_counter() - t0
    peak_reset(args.device)
    row['floor_seconds'] = timed(fb, args.device)
    row['floor_peak_gib'] = peak_gib(args.device)
    seeds = list(range(batch_size))

    def run(n_iter):
        return SEA(
            batch.model,
            8 / 255,
            n_iter=n_iter,
            amp=amp,
            check_model=False,
            version='2023').run(
                batch.x, batch.y, mask=batch.mask, seed=seeds)

    run(3)  # warm-up: cuDNN's choices, recompilation for the subsets
    peak_reset(args.device)
    t_sea = timed(lambda: run(args.n_iter), args.device, repeats=1, warmup=0)
    iters = 4 * args.n_iter
    row['sea_seconds_per_iteration'] = t_sea / iters
    row['sea_over_floor'] = t_sea / (iters * row['floor_seconds'])
    row['images_per_second'] = batch_size / row['sea_seconds_per_iteration']
    row['sea_peak_gib'] = peak_gib(args.device)
    if count_syncs:
        with HostSyncCounter() as c:
            run(args.n_iter)
        row['host_syncs_per_iteration'] = c.total / iters
        syncs = count_cuda_syncs(lambda: run(args.n_iter), args.device)
        row['cuda_syncs_per_iteration'] = None if syncs is None else \
            syncs / iters
    per_image = row['sea_seconds_per_iteration'] / batch_size
    row['projected_hours'] = {
        name: n * 4 * 4 * 300 * per_image / 3600
        for name, n in DATASETS.items()
    }
    return row


def training_rows(args, segmentor, batch_size):
    """Seconds per training iteration: clean, and with AT^k's attack in
    front (bf16 autocast as AmpOptimWrapper would; the attack runs in eval
    mode like AdvTrainingHook)."""
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    cuda = args.device.startswith('cuda')
    optim = torch.optim.SGD(segmentor.parameters(), lr=1e-4)
    wrapper = AmpOptimWrapper(
        optimizer=optim, dtype='bfloat16') if cuda else OptimWrapper(optim)
    data = fake_attack_data(batch_size, args.size,
                            segmentor.decode_head.num_classes)

    def step(k):
        batch = dict(
            inputs=list(data['inputs']), data_samples=data['data_samples'])
        if k:
            ab = AttackBatch.from_data(segmentor, batch, mode='train')
            segmentor.eval()
            with wrapper.optim_context(segmentor):
                x_adv, _ = pgd_train(
                    ab.model, ab.x, ab.y, 4 / 255, k, mask=ab.mask)
            segmentor.train()
            batch['inputs'] = ab.raw_images(x_adv)
        segmentor.train_step(batch, wrapper)

    segmentor.train()
    rows = dict(batch_size=batch_size)
    peak_reset(args.device)
    rows['clean_seconds'] = timed(lambda: step(0), args.device, repeats=2)
    for k in args.at_steps:
        rows[f'at{k}_seconds'] = timed(lambda: step(k), args.device, repeats=2)
        rows[f'at{k}_over_clean'] = rows[f'at{k}_seconds'] / rows[
            'clean_seconds']
    rows['peak_gib'] = peak_gib(args.device)
    segmentor.eval()
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        sys.exit('error: no CUDA device; --device cpu for a smoke run')
    start = time.perf_counter()
    spent = lambda: time.perf_counter() - start  # noqa: E731
    results = dict(settings=vars(args), attacks=[], training=None, skipped=[])
    if args.device.startswith('cuda'):
        results['card'] = torch.cuda.get_device_name(0)
        torch.backends.cudnn.benchmark = True
    for mode in args.modes:
        # a fresh segmentor per mode: channels-last / compile change it
        segmentor = build_segmentor(
            args.config, args.device, crop=args.size, whole=True).eval()
        if MODES[mode]['channels_last'] or MODES[mode]['compile']:
            accelerate_segmentor(segmentor, MODES[mode]['channels_last'],
                                 MODES[mode]['compile'])
        for b in args.batch_sizes:
            if spent() > args.time_budget:
                results['skipped'].append(f'{mode} batch {b}')
                continue
            count = not any('host_syncs_per_iteration' in r
                            for r in results['attacks'])
            row = attack_rows(args, mode, segmentor, b, count)
            results['attacks'].append(row)
            print(f'[{spent():.0f} s] {row}', flush=True)
        del segmentor
        if args.device.startswith('cuda'):
            torch.cuda.empty_cache()
    if spent() <= args.time_budget:
        segmentor = build_segmentor(
            args.config, args.device, crop=args.size, whole=True)
        # BatchNorm of the pooled branch needs 2 images in training
        results['training'] = training_rows(args, segmentor,
                                            max(min(args.batch_sizes), 2))
        print(f'[{spent():.0f} s] training {results["training"]}', flush=True)
    else:
        results['skipped'].append('training')
    results['seconds'] = spent()
    path = write_json('bench_gpu', results, args.out)
    print(f'wrote {path} ({spent():.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
