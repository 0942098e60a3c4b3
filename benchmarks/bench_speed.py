"""SEA's time per image, this checkout against another one (before/after).

    python benchmarks/bench_speed.py --other ../mmseg_robust_old
        [--models texture_at demo_at2] [--n-iter 20] [--radii 4 8 12 16]
        [--repeats 5] [--threads 1] [--demo-dir work_dirs/demo]

Both checkouts attack the same model and images with the same settings, in
fresh subprocesses that alternate (this, other, this, other, ...), so slow
phases of a shared machine hit both alike; reported are the medians and the
median of the paired ratios. Two workloads per model: SEA at one radius, and
SEA over all ``--radii`` as ``tools/test.py`` runs them (chained radii where
the checkout has them, one independent run per radius otherwise). Writes
``benchmarks/results/bench_speed.json``.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument(
        '--other',
        help='the other checkout (e.g. the previous '
        'release); without it only this checkout is timed')
    p.add_argument('--models', nargs='+', default=['texture_at', 'demo_at2'])
    p.add_argument('--n-iter', type=int, default=20)
    p.add_argument('--eps', type=float, default=8)
    p.add_argument('--radii', type=float, nargs='+', default=[4, 8, 12, 16])
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--demo-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    p.add_argument('--out', default=osp.join(HERE, 'results'))
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--model', help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _load(args):
    """The model and one batch ``(model, x, y, mask)``."""
    import torch
    if args.model.startswith('texture'):
        from _texture import texture_model, texture_val
        model = texture_model(args.model, osp.join(ROOT, 'work_dirs', 'bench'))
        x, y = texture_val(16)
        return model, x, y, None
    import _common
    _common.DEMO = args.demo_dir
    seg = _common.demo_model(args.model.replace('demo_', ''))
    b = _common.demo_batches(seg, batch_size=10, max_images=10)[0]
    torch.manual_seed(0)
    return b.model, b.x, b.y, b.mask


def worker(args):
    import time

    import torch
    torch.set_num_threads(args.threads)
    from mmseg_robust.attacks import SEA
    model, x, y, mask = _load(args)
    seeds = list(range(x.shape[0]))

    def one_radius():
        SEA(model, args.eps / 255, n_iter=args.n_iter, version='2023').run(
            x, y, mask=mask, seed=seeds)

    def all_radii():
        radii = [r / 255 for r in sorted(args.radii)]
        sea = SEA(model, radii[0], n_iter=args.n_iter, version='2023')
        if hasattr(sea, 'curve'):
            sea.curve(x, y, radii, mask=mask, seed=seeds)
        else:
            for r in radii:
                SEA(model, r, n_iter=args.n_iter, version='2023').run(
                    x, y, mask=mask, seed=seeds)

    out = {}
    one_radius()  # warm-up
    for name, fn in (('one_radius', one_radius), ('all_radii', all_radii)):
        t0 = time.perf_counter()
        fn()
        out[name] = (time.perf_counter() - t0) / x.shape[0]
    print('RESULT ' + json.dumps(out))


def _run(checkout, args, model):
    env = dict(
        os.environ, PYTHONPATH=checkout, OMP_NUM_THREADS=str(args.threads))
    cmd = [
        sys.executable,
        osp.abspath(__file__), '--worker', '--model', model, '--n-iter',
        str(args.n_iter), '--eps',
        str(args.eps), '--threads',
        str(args.threads), '--demo-dir', args.demo_dir, '--radii'
    ] + [str(r) for r in args.radii]
    from _common import worker_result
    return worker_result(cmd, env, checkout, 'worker', capture_stderr=True)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from _common import checkouts as find_checkouts
    from _common import write_json
    checkouts = find_checkouts(args.other)
    results = dict(
        settings={
            k: v
            for k, v in vars(args).items() if k not in ('worker', 'model')
        },
        models={})
    for model in args.models:
        runs = {k: [] for k in checkouts}
        for r in range(args.repeats):
            for name, path in checkouts.items():
                runs[name].append(_run(path, args, model))
                print(
                    f'[{model}] repeat {r + 1}/{args.repeats} {name}: '
                    f'{runs[name][-1]}',
                    flush=True)
        summary = {}
        for workload in ('one_radius', 'all_radii'):
            row = {
                name: statistics.median(x[workload] for x in vals)
                for name, vals in runs.items()
            }
            if 'other' in runs:
                row['ratio_this_over_other'] = statistics.median(
                    a[workload] / b[workload]
                    for a, b in zip(runs['this'], runs['other']))
            summary[workload] = row
        results['models'][model] = dict(runs=runs, summary=summary)
        print(f'[{model}] seconds per image (median): '
              f'{json.dumps(summary, indent=1)}')
    path = write_json('bench_speed', results, args.out)
    print(f'wrote {path}')


if __name__ == '__main__':
    sys.exit(main())
