"""The attack engine on any device and precision: host synchronisations per
iteration, input-gradient fidelity under float16 / bfloat16 autocast, the
cost of the bookkeeping against the floor, channels-last and
``torch.compile``, and attack strength under reduced precision.

    python benchmarks/bench_engine.py [--parts syncs fidelity overhead
        accel amp amp512] [--other ../old_checkout] [--threads 1]
        [--repeats 5] [--amp-seeds 1 2 3] [--amp-n-iter 20]

Every part runs in a fresh subprocess with the checkout on ``PYTHONPATH``;
``--other`` runs every part but ``accel`` in another
checkout too (before / after; ``HostSyncCounter`` is loaded from this
checkout by file path, so the other needs none). Needs the demo models
(``make demo``) for the MMSeg-adapter rows and ``amp``, and trains the
texture U-Net of ``_texture.py`` once (cached in ``work_dirs/bench``).
Writes ``benchmarks/results/bench_engine.json``.

1. ``syncs``: operations that make the host wait for the device
   (``HostSyncCounter``: ``.item()``/``bool``, ``nonzero``, boolean-mask
   indexing, ``.tolist()``...) per attack iteration, at batch 8: red-eps
   APGD ``mask_ce`` and SEA-2023 on the light encoder-decoder (plain
   PyTorch), and SEA-2023 on the demo's UPerNet through the MMSeg adapter;
   100 iterations per attack, all syncs of the call divided by its
   iterations (so per-attack set-up is amortised over 100 iterations).
2. ``fidelity``: the texture U-Net at 512 x 512 (its own labels, most valid
   pixels with p_y > 0.99; ``T`` multiplies the logits to make it more
   confident): sign agreement of one ``pgd_train`` step (CE, the AT attack,
   under an autocast context as ``AmpOptimWrapper`` sets it) with float32,
   and of the ``mask_ce`` input gradient (first evaluation, and the second,
   after the per-image gradient scaling has adapted), over the elements
   where the float32 value is non-zero; ``zero``: how many of those are 0
   under reduced precision.
3. ``overhead``: SEA-2023, the default preset (``sea_default``) and APGD
   ``mask_ce`` time over the floor, the
   same number of bare forward + input-backward passes, on the light
   encoder-decoder (stride-8 features, 21 classes, 96 x 96, batch 4,
   n = 24, ``--overhead-n`` adds longer runs); median of paired repeats;
   also against the CE floor
   (forward + fused ``F.cross_entropy`` + input backward, the cheapest
   pass of a loss-based attack) and that floor against the bare one.
   ``--convnext``: also UPerNet + ConvNeXt-T (random weights, 256 x 256,
   batch 1, n = 6, 2 repeats; SEA-2023 only).
4. ``accel``: the same SEA with channels-last weights and inputs and with
   ``torch.compile`` (``FastModel``), as ratios to the eager run and to its
   own floor; compilation (warm-up run) timed apart.
5. ``amp``: the demo AT^2 model, 20 validation tiles: worst-case aAcc of
   APGD ``mask_ce`` (constant radius) and SEA-2023 in float32, bfloat16 and
   float16 autocast at 8/255, paired seeds (``--amp-seeds``); the reported
   predictions are float32 (``result_precision='fp32'``).
6. ``amp512``: APGD ``mask_ce`` at 12/255, 30 iterations, on 2 texture
   images of 512 x 512 with the clean texture U-Net's logits tripled (a
   confident model), float32 / bfloat16 / float16, paired seeds: where
   float16 loses unscaled gradients.
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import statistics
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
PARTS = ('syncs', 'fidelity', 'overhead', 'accel', 'amp', 'amp512')
#: parts that also run in --other (the others need this checkout's API)
BEFORE_AFTER = ('syncs', 'fidelity', 'overhead', 'amp', 'amp512')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--parts', nargs='+', default=list(PARTS), choices=PARTS)
    p.add_argument('--other', help='another checkout (before / after)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--sync-n-iter', type=int, default=100)
    p.add_argument(
        '--overhead-n',
        type=int,
        nargs='+',
        default=[24],
        help='iterations per attack of the light model in the overhead part '
        '(the issue: 24; a longer run shows the per-iteration part)')
    p.add_argument('--amp-seeds', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--amp-n-iter', type=int, default=20)
    p.add_argument('--amp-images', type=int, default=20)
    p.add_argument(
        '--convnext',
        action='store_true',
        help='overhead: also UPerNet + ConvNeXt-T (256 x 256, batch 1, '
        '6 iterations; minutes)')
    p.add_argument('--out', default=osp.join(HERE, 'results'))
    p.add_argument('--worker', help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- helpers run inside the workers -----------------------------------------
def _sync_counter():
    """This checkout's HostSyncCounter, loaded by file path (works in a
    checkout that has none)."""
    path = osp.join(ROOT, 'mmseg_robust', 'attacks', 'host_sync.py')
    spec = importlib.util.spec_from_file_location('_host_sync', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HostSyncCounter


def _light_batch(batch_size: int, size: int = 96):
    import torch
    from _common import light_segnet
    model = light_segnet()
    x = torch.rand(
        batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def part_syncs(args) -> dict:
    import _common

    from mmseg_robust.attacks import SEA, apgd_red_eps
    counter = _sync_counter()
    n = args.sync_n_iter
    out = {}
    model, x, y = _light_batch(8)
    seeds = list(range(8))
    runs = {
        'red_eps_mask_ce_plain':
        (lambda: apgd_red_eps(model, x, y, 8 / 255, n, loss='mask_ce'), n),
        'sea2023_plain':
        (lambda: SEA(model, 8 / 255, n_iter=n, version='2023').run(
            x, y, seed=seeds), 4 * n),
    }
    seg = _common.demo_model('at2')
    b = _common.demo_batches(seg, batch_size=8, max_images=8)[0]
    runs['sea2023_mmseg_adapter'] = (
        lambda: SEA(b.model, 8 / 255, n_iter=n, version='2023').run(
            b.x, b.y, mask=b.mask, seed=seeds), 4 * n)
    for name, (fn, iters) in runs.items():
        with counter() as c:
            fn()
        out[name] = dict(
            syncs=c.total,
            iterations=iters,
            per_iteration=c.total / iters,
            by_op=dict(c.by_op))
        print(f'[syncs] {name}: {out[name]}', file=sys.stderr, flush=True)
    return out


def _input_grad(obj, x):
    """The objective's input gradient (this checkout's API or the earlier
    one with batch positions)."""
    import torch
    try:
        return obj.evaluate(x, step=1, total_steps=10).grad
    except TypeError:
        return obj.evaluate(
            x, torch.arange(x.shape[0]), step=1, total_steps=10).grad


def part_fidelity(args) -> dict:
    import torch
    from _texture import make_image, texture_model

    from mmseg_robust.attacks import pgd_train
    from mmseg_robust.attacks.core import Objective
    base = texture_model('texture_clean', osp.join(ROOT, 'work_dirs', 'bench'))
    x, y = make_image(5, 512)
    x, y = x[None], y[None]

    class Sharp(torch.nn.Module):

        def __init__(self, T):
            super().__init__()
            self.T = T

        def forward(self, inp):
            return base(inp) * self.T

    def agree(a, ref):
        nz = ref != 0
        return dict(
            agree=float((a.sign() == ref.sign())[nz].float().mean()),
            zero=float((a == 0)[nz].float().mean()))

    out = {}
    for T in (1.0, 3.0):
        model = Sharp(T).eval()
        with torch.no_grad():
            logits = model(x)
        valid = y != 255
        p_y = logits.softmax(1).gather(1,
                                       torch.where(valid, y, 0)[:, None])[:, 0]
        row = dict(confident=float((p_y[valid] > 0.99).float().mean()))
        step32 = pgd_train(model, x, y, 4 / 255, 1)[0] - x
        g32 = _input_grad(Objective(model, y, loss='mask_ce'), x)
        for dtype in (torch.float16, torch.bfloat16):
            name = str(dtype).split('.')[-1]
            with torch.autocast('cpu', dtype=dtype):
                step = pgd_train(model, x, y, 4 / 255, 1)[0] - x
            row[f'pgd_train_ce_{name}'] = agree(step, step32)
            obj = Objective(model, y, loss='mask_ce', amp=dtype)
            row[f'mask_ce_{name}_first'] = agree(_input_grad(obj, x), g32)
            row[f'mask_ce_{name}_second'] = agree(_input_grad(obj, x), g32)
        out[f'T={T:g}'] = row
        print(f'[fidelity] T={T:g}: {row}', file=sys.stderr, flush=True)
    return out


def _paired_ratio(fn, floor, repeats):
    """Median of time(fn) / time(floor), each pair measured back to back."""
    ratios, times, floors = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        floor()
        tf = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn()
        ta = time.perf_counter() - t0
        ratios.append(ta / tf)
        times.append(ta)
        floors.append(tf)
    return dict(
        ratio=statistics.median(ratios),
        ratios=ratios,
        seconds=statistics.median(times),
        floor_seconds=statistics.median(floors))


def _overhead_runs(model, x, y, n, repeats, only=None):
    """Paired time ratios of the attacks to their floors (``only``: the
    names of the ratios to measure; all by default)."""
    import torch

    from mmseg_robust.attacks import SEA, apgd
    seeds = list(range(x.shape[0]))

    def fb():
        xx = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xx).float().sum(), xx)

    def fb_ce():
        # the cheapest pass a loss-based attack can make: the fused CE
        xx = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(
            model(xx).float(), y, ignore_index=255)
        torch.autograd.grad(loss, xx)

    # the loop builds its ensemble once (the model check runs on the first
    # batch only): time runs after a warm-up run
    sea = SEA(model, 8 / 255, n_iter=n, version='2023')
    # the default preset (SEA-R1 since it exists): also 4 attacks x n
    default = SEA(model, 8 / 255, n_iter=n)

    def run_apgd():
        apgd(model, x, y, 8 / 255, n, loss='mask_ce')

    # (attack, floor, passes of the floor)
    runs = dict(
        sea2023=(lambda: sea.run(x, y, seed=seeds), fb, 4 * n),
        sea_default=(lambda: default.run(x, y, seed=seeds), fb, 4 * n),
        apgd_mask_ce=(run_apgd, fb, n),
        # against the CE floor: passes of forward + fused CE + input
        # backward (docs/benchmarks.md, section 7)
        ce_floor=(lambda: [fb_ce() for _ in range(n)], fb, n),
        sea2023_ce_floor=(lambda: sea.run(x, y, seed=seeds), fb_ce, 4 * n),
        apgd_mask_ce_ce_floor=(run_apgd, fb_ce, n))
    out = {}
    for name, (attack, floor, passes) in runs.items():
        if only is not None and name not in only:
            continue
        # the loop builds its ensemble once (the model check runs on the
        # first batch only): time runs after a warm-up run
        attack()
        floor()
        out[name] = _paired_ratio(attack,
                                  lambda: [floor() for _ in range(passes)],
                                  repeats)
    return out


def part_overhead(args) -> dict:
    model, x, y = _light_batch(4)
    out = {}
    for n in args.overhead_n:
        key = 'light' if n == 24 else f'light_n{n}'
        out[key] = _overhead_runs(model, x, y, n, args.repeats)
        print(f'[overhead] {key}: {out[key]}', file=sys.stderr, flush=True)
    if args.convnext:
        import _common
        seg = _common.build_segmentor(
            _common.CONVNEXT_T, 'cpu', crop=256, whole=True).eval()
        data = _common.fake_attack_data(1, 256, 150)
        b = _common.attack_batch(_common.mmseg_robust_models(), seg, data)
        out['convnext_t'] = _overhead_runs(
            b.model, b.x, b.y, 6, 2, only=('sea2023', ))
        print(
            f'[overhead] convnext_t: {out["convnext_t"]}',
            file=sys.stderr,
            flush=True)
    return out


def part_accel(args) -> dict:
    from _common import light_segnet

    from mmseg_robust.attacks import FastModel
    _, x, y = _light_batch(4)
    eager = _overhead_runs(light_segnet(), x, y, 24, args.repeats)
    out = dict(eager=eager)
    for name, kwargs in (('channels_last', dict(channels_last=True)),
                         ('compile', dict(compile=True)),
                         ('channels_last_compile',
                          dict(channels_last=True, compile=True))):
        fast = FastModel(light_segnet(), **kwargs)
        t0 = time.perf_counter()
        runs = _overhead_runs(fast, x, y, 24, args.repeats)
        runs['setup_and_warmup_seconds'] = time.perf_counter() - t0
        for attack in ('sea2023', 'apgd_mask_ce'):
            runs[attack]['speedup_over_eager'] = eager[attack][
                'seconds'] / runs[attack]['seconds']
        out[name] = runs
        print(f'[accel] {name}: {runs}', file=sys.stderr, flush=True)
    return out


def part_amp(args) -> dict:
    import _common
    import torch
    from bench_strength import image_seeds

    from mmseg_robust.attacks import SEA, apgd
    seg = _common.demo_model('at2')
    batches = _common.demo_batches(
        seg, batch_size=10, max_images=args.amp_images)
    n = args.amp_n_iter
    out = {}
    for seed in args.amp_seeds:
        for prec, amp in (('fp32', False), ('bf16', torch.bfloat16),
                          ('fp16', torch.float16)):
            correct = dict(apgd_mask_ce=0, sea2023=0)
            valid = 0
            t0 = time.perf_counter()
            all_seeds = image_seeds(seed, args.amp_images)
            for b in batches:
                seeds, all_seeds = all_seeds[:len(b.x)], all_seeds[len(b.x):]
                r = apgd(
                    b.model,
                    b.x,
                    b.y,
                    8 / 255,
                    n,
                    loss='mask_ce',
                    mask=b.mask,
                    start=seeds,
                    amp=amp)
                correct['apgd_mask_ce'] += int(r.correct.sum())
                s = SEA(
                    b.model, 8 / 255, n_iter=n, amp=amp, version='2023').run(
                        b.x, b.y, mask=b.mask, seed=seeds)
                correct['sea2023'] += int(s.correct.sum())
                valid += int(s.valid.sum())
            row = {k: 100 * v / valid for k, v in correct.items()}
            row['seconds'] = time.perf_counter() - t0
            out[f'seed{seed}_{prec}'] = row
            print(
                f'[amp] seed {seed} {prec}: {row}',
                file=sys.stderr,
                flush=True)
    summary = {}
    for prec in ('bf16', 'fp16'):
        for attack in ('apgd_mask_ce', 'sea2023'):
            diffs = [
                out[f'seed{s}_{prec}'][attack] - out[f'seed{s}_fp32'][attack]
                for s in args.amp_seeds
            ]
            sd = statistics.stdev(diffs) if len(diffs) > 1 else float('nan')
            summary[f'{attack}_{prec}_minus_fp32'] = dict(
                mean=statistics.mean(diffs),
                se=sd / len(diffs)**0.5,
                diffs=diffs)
    out['summary'] = summary
    return out


def part_amp512(args) -> dict:
    """APGD ``mask_ce`` at 12/255, 30 iterations, on 2 texture images of
    512 x 512, the clean texture U-Net with its logits tripled (more than
    99.9% of the pixels at p_y > 0.99): the pixel mean's per-pixel
    gradients are below float16's normal range here."""
    import torch
    from _texture import make_image, texture_model

    from mmseg_robust.attacks import apgd
    base = texture_model('texture_clean', osp.join(ROOT, 'work_dirs', 'bench'))

    class Sharp(torch.nn.Module):

        def forward(self, inp):
            return base(inp) * 3

    model = Sharp().eval()
    x, y = zip(*(make_image(200 + i, 512) for i in range(2)))
    x, y = torch.stack(x), torch.stack(y)
    out = {}
    for seed in args.amp_seeds:
        for prec, amp in (('fp32', False), ('bf16', torch.bfloat16),
                          ('fp16', torch.float16)):
            r = apgd(
                model,
                x,
                y,
                12 / 255,
                30,
                loss='mask_ce',
                start=[seed * 1000, seed * 1000 + 1],
                amp=amp)
            out[f'seed{seed}_{prec}'] = 100 * float(
                r.correct.sum() / r.valid.sum())
        row = {k: v for k, v in out.items() if k.startswith(f'seed{seed}')}
        print(f'[amp512] seed {seed}: {row}', file=sys.stderr, flush=True)
    for prec in ('bf16', 'fp16'):
        diffs = [
            out[f'seed{s}_{prec}'] - out[f'seed{s}_fp32']
            for s in args.amp_seeds
        ]
        out[f'{prec}_minus_fp32'] = dict(
            mean=statistics.mean(diffs),
            se=statistics.stdev(diffs) / len(diffs)**0.5,
            diffs=diffs)
    return out


def worker(args):
    import torch
    torch.set_num_threads(args.threads)
    sys.path.insert(0, HERE)
    result = globals()[f'part_{args.worker}'](args)
    print('RESULT ' + json.dumps(result))


def _run(checkout, part, args):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([checkout, HERE]),
        OMP_NUM_THREADS=str(args.threads))
    cmd = [
        sys.executable,
        osp.abspath(__file__), '--worker', part, '--threads',
        str(args.threads), '--repeats',
        str(args.repeats), '--sync-n-iter',
        str(args.sync_n_iter), '--overhead-n'
    ] + [str(n) for n in args.overhead_n] + [
        '--amp-n-iter',
        str(args.amp_n_iter), '--amp-images',
        str(args.amp_images), '--amp-seeds'
    ] + [str(s)
         for s in args.amp_seeds] + (['--convnext'] if args.convnext else [])
    from _common import worker_result
    return worker_result(cmd, env, checkout, f'part {part}')


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from _common import checkouts as find_checkouts
    from _common import write_json
    checkouts = find_checkouts(args.other)
    results = dict(settings=vars(args), parts={})
    for part in args.parts:
        results['parts'][part] = {}
        for name, path in checkouts.items():
            if name == 'other' and part not in BEFORE_AFTER:
                continue
            t0 = time.perf_counter()
            results['parts'][part][name] = _run(path, part, args)
            print(
                f'{part} [{name}] done in {time.perf_counter() - t0:.0f} s:'
                f'\n{json.dumps(results["parts"][part][name], indent=1)}',
                flush=True)
    # parts not run this time keep their earlier results (and settings)
    old = osp.join(args.out, 'bench_engine.json')
    if osp.isfile(old):
        with open(old) as f:
            earlier = json.load(f)
        for part in args.parts:
            earlier[f'settings_{part}'] = results['settings']
        for part, runs in results['parts'].items():
            earlier['parts'].setdefault(part, {}).update(runs)
        results = {k: v for k, v in earlier.items() if k != 'machine'}
    path = write_json('bench_engine', results, args.out)
    print(f'wrote {path}')


if __name__ == '__main__':
    sys.exit(main())
