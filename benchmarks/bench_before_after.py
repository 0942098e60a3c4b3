"""SEA's worst case with another checkout of the package (e.g. the previous
release) on the strength benchmark's models, for a before/after table.

    python benchmarks/bench_before_after.py --other ../old_checkout
        [--models texture_clean texture_at demo_clean demo_at2]
        [--eps 4 8 12 16] [--n-iter 100]

The other checkout's ``SEA(model, eps, n_iter).run(x, y, seed=...)`` (its
defaults: its losses, tracking and random starts) runs in a subprocess on
the images and per-image seeds ``bench_strength.py`` uses, one radius at a
time. Compare with the ``SEA-2023`` (independent radii) and ``SEA-2023
chained`` rows of ``bench_strength.py``. Writes
``benchmarks/results/bench_before_after.json``.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)


def parse_args(argv=None):
    from _common import add_strength_args
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--other', required=True, help='the other checkout')
    add_strength_args(p, osp.join(HERE, 'results'))
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args):
    """Runs with the other checkout first on ``sys.path``."""
    import torch
    torch.set_num_threads(args.threads)
    from bench_strength import image_seeds, load, scores

    from mmseg_robust.attacks import SEA
    out = {}
    for name in args.models:
        model, x, y, mask, counts = load(name)
        seeds = image_seeds(args.seed, x.shape[0])
        out[name] = {}
        for e in args.eps:
            res = SEA(
                model, e / 255, n_iter=args.n_iter).run(
                    x, y, mask=mask, seed=seeds)
            out[name][f'{e:g}'] = scores(res.pred, y, len(counts))
            print(
                f'[{name}] {e:g}/255 {out[name][f"{e:g}"]}',
                flush=True,
                file=sys.stderr)
    print('RESULT ' + json.dumps(out))


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from _common import write_json
    other = osp.abspath(args.other)
    env = dict(os.environ, PYTHONPATH=other, OMP_NUM_THREADS=str(args.threads))
    cmd = [
        sys.executable,
        osp.abspath(__file__), '--worker', '--other', other, '--n-iter',
        str(args.n_iter), '--seed',
        str(args.seed), '--threads',
        str(args.threads), '--models'
    ] + args.models + ['--eps'] + [f'{e:g}' for e in args.eps]
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    result = next(
        (json.loads(line[7:])
         for line in proc.stdout.splitlines() if line.startswith('RESULT ')),
        None)
    if result is None:
        raise SystemExit(f'error: the worker failed ({proc.returncode})')
    path = write_json('bench_before_after',
                      dict(settings=vars(args), other=result), args.out)
    print(f'wrote {path}')


if __name__ == '__main__':
    sys.exit(main())
