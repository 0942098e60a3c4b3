"""Design choices of the attacks where the paper and the SPEC leave room,
measured on the strength benchmark's models (docs/benchmarks.md):

* ``tie``: which of two points with the same (lowest) pixel accuracy an APGD
  run keeps, which is where the next red-eps stage starts: the earliest,
  the latest (the authors' code), or the one with the higher tracked
  objective;
* ``cond_b_first``: whether APGD's condition (b) may fire at the first
  checkpoint (AutoAttack's and the authors' code: no);
* ``chain``: how SEA at a larger radius starts from the smaller radius's
  worst case: every attack, the first attack only, or none (random starts;
  the worst case is kept either way).

    python benchmarks/bench_design.py [--models texture_at] [--eps 8 12]
        [--n-iter 100]

Writes ``benchmarks/results/bench_design.json``.
"""
import argparse
import importlib
import os.path as osp
import sys
import time

import torch
from _common import write_json
from bench_strength import load, scores

from mmseg_robust.attacks import SEA

# the modules (the package exports functions of the same names)
apgd_module = importlib.import_module('mmseg_robust.attacks.apgd')
sea_module = importlib.import_module('mmseg_robust.attacks.sea')

HERE = osp.dirname(osp.abspath(__file__))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', default=['texture_at'])
    p.add_argument('--eps', type=float, nargs='+', default=[8, 12])
    p.add_argument('--radii', type=float, nargs='+', default=[4, 8, 12, 16])
    p.add_argument('--n-iter', type=int, default=100)
    p.add_argument('--max-images', type=int, default=None)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=osp.join(HERE, 'results'))
    return p.parse_args(argv)


def _set(tie=None, cond_b_first=None, chain=None):
    if tie is not None:
        apgd_module.TIE_BREAK = tie
    if cond_b_first is not None:
        apgd_module.COND_B_AT_FIRST = cond_b_first
    if chain is not None:
        sea_module.CHAIN_START = chain


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    defaults = dict(tie=apgd_module.TIE_BREAK,
                    cond_b_first=apgd_module.COND_B_AT_FIRST,
                    chain=sea_module.CHAIN_START)
    single = [dict(tie=t) for t in ('earliest', 'latest', 'tracked')] + [
        dict(cond_b_first=not defaults['cond_b_first'])]
    chains = [dict(chain=c) for c in ('all', 'first', 'none')]
    results = dict(settings=vars(args), defaults=defaults, models={})
    for name in args.models:
        model, x, y, mask, counts = load(name)
        if args.max_images:
            x, y = x[:args.max_images], y[:args.max_images]
            if mask is not None:
                mask = mask[:args.max_images]
            if hasattr(model, 'subset'):
                model = model.subset(torch.arange(args.max_images))
        k = len(counts)
        seeds = list(range(x.shape[0]))
        rows = {}
        for variant in single:
            label = ', '.join(f'{a}={b}' for a, b in variant.items())
            for e in args.eps:
                _set(**defaults)
                _set(**variant)
                t0 = time.perf_counter()
                res = SEA(model, e / 255, n_iter=args.n_iter).run(
                    x, y, mask=mask, seed=seeds)
                rows.setdefault(label, {})[f'{e:g}'] = dict(
                    scores(res.pred, y, k), seconds=time.perf_counter() - t0)
                print(f'[{name}] {label} {e:g}/255: '
                      f'{rows[label][f"{e:g}"]}', flush=True)
        for variant in chains:
            label = f'chain={variant["chain"]}'
            _set(**defaults)
            _set(**variant)
            t0 = time.perf_counter()
            curve = SEA(model, 1 / 255, n_iter=args.n_iter).curve(
                x, y, [r / 255 for r in args.radii], mask=mask, seed=seeds)
            for r, res in zip(sorted(args.radii), curve):
                rows.setdefault(label, {})[f'{r:g}'] = scores(res.pred, y, k)
            rows[label]['seconds'] = time.perf_counter() - t0
            print(f'[{name}] {label}: {rows[label]}', flush=True)
        _set(**defaults)
        results['models'][name] = rows
        write_json('bench_design', results, args.out)
    print(write_json('bench_design', results, args.out))


if __name__ == '__main__':
    sys.exit(main())
