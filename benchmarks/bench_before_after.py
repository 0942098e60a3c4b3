"""SEA's worst case with another checkout of the package (e.g. the previous
release) on the strength benchmark's models, for a before/after table.

    python benchmarks/bench_before_after.py --other ../old_checkout
        [--models texture_clean texture_at demo_clean demo_at2]
        [--eps 4 8 12 16] [--n-iter 100] [--sea-version 2023]

The other checkout's ``SEA(model, eps, n_iter, version=...).run(x, y,
seed=...)`` (its own losses, tracking and random starts for that preset)
runs in a subprocess on the images and per-image seeds of
``bench_strength.py``, one radius at a time. Compare with the
``SEA-2023`` (independent radii) and ``SEA-2023 chained`` rows of
``bench_strength.py``. With ``--this`` the same runs in
this checkout too, and every cell says whether the two are bit-identical
(a SHA-256 of the adversarial images and per-image correct counts) or by
how much their aAcc / mIoU differ. Writes
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
    p.add_argument(
        '--name',
        default='bench_before_after',
        help='results file name (benchmarks/results/NAME.json)')
    p.add_argument(
        '--this',
        action='store_true',
        help='run this checkout too and compare cell by cell')
    add_strength_args(p, osp.join(HERE, 'results'))
    p.add_argument(
        '--sea-version',
        default='2023',
        help="the SEA preset both checkouts run (default '2023'; the other "
        'checkout must know it)')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _digest(res) -> str:
    """SHA-256 of a result's adversarial images and correct counts."""
    import hashlib
    h = hashlib.sha256()
    for t in (res.x_adv, res.correct):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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
                model, e / 255, n_iter=args.n_iter,
                version=args.sea_version).run(
                    x, y, mask=mask, seed=seeds)
            out[name][f'{e:g}'] = dict(
                scores(res.pred, y, len(counts)), sha256=_digest(res))
            print(
                f'[{name}] {e:g}/255 {out[name][f"{e:g}"]}',
                flush=True,
                file=sys.stderr)
    print('RESULT ' + json.dumps(out))


def _compare(this: dict, other: dict) -> dict:
    """Per model and radius: ``'bit-identical'`` or this - other in aAcc
    and mIoU."""
    out = {}
    for model, cells in this.items():
        out[model] = {}
        for eps, a in cells.items():
            b = other[model][eps]
            out[model][
                eps] = 'bit-identical' if a['sha256'] == b['sha256'] else {
                    k: a[k] - b[k]
                    for k in a if k != 'sha256'
                }
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    from _common import write_json
    runs = {'other': osp.abspath(args.other)}
    if args.this:
        runs['this'] = ROOT
    results = {}
    for name, checkout in runs.items():
        env = dict(
            os.environ, PYTHONPATH=checkout, OMP_NUM_THREADS=str(args.threads))
        cmd = [
            sys.executable,
            osp.abspath(__file__), '--worker', '--other', checkout, '--n-iter',
            str(args.n_iter), '--seed',
            str(args.seed), '--threads',
            str(args.threads), '--sea-version', args.sea_version, '--models'
        ] + args.models + ['--eps'] + [f'{e:g}' for e in args.eps]
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True)
        results[name] = next((json.loads(line[7:])
                              for line in proc.stdout.splitlines()
                              if line.startswith('RESULT ')), None)
        if results[name] is None:
            raise SystemExit(f'error: the worker failed in {checkout} '
                             f'({proc.returncode})')
    payload = dict(settings=vars(args), other=results['other'])
    if args.this:
        payload['this'] = results['this']
        payload['comparison'] = _compare(results['this'], results['other'])
        for model, cells in payload['comparison'].items():
            print(f'[{model}] {cells}')
    path = write_json(args.name, payload, args.out)
    print(f'wrote {path}')


if __name__ == '__main__':
    sys.exit(main())
