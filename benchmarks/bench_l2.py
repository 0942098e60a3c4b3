"""The l2 threat model: how the l2 attacks compare (issue #21, item 3).

    python benchmarks/bench_l2.py [--models texture_clean texture_at]
        [--eps 0.25 0.5 1 2] [--n-iter 100] [--seed 1] [--images N]
        [--threads 1] [--report]

Per model and l2 radius (the l2 norm of the perturbation of the [0, 1]
image), worst-case pixel accuracy (aAcc, %) of: PGD, SegPGD and CosPGD in
l2 (``pgd(norm='l2')``, step ``L2_PGD_STEP_RATIO * eps``), constant-radius
APGD with ``mask_ce`` (``apgd(norm='l2')``), red-eps APGD with
``mask_ce``, and SEA-R1 in l2 (``SEA(norm='l2')``, chained radii: the curve
is monotone by construction, checked here). Every attack has ``--n-iter``
iterations (SEA: per member), per-image seeds from
``bench_strength.image_seeds``.

Writes ``benchmarks/results/bench_l2.json`` (an entry per model, seed and
setting, replaced on a rerun) and prints a markdown table; ``--report``
prints the table of the results file and exits.
"""
import argparse
import math
import os.path as osp
import time

import torch
from _common import read_runs, replace_run, write_json
from bench_strength import HERE, image_seeds, load

#: The single attacks, by name: (function name, keyword arguments).
SINGLE = {
    'PGD': ('pgd', dict(loss='ce')),
    'SegPGD': ('pgd', dict(loss='bal_ce')),
    'CosPGD': ('pgd', dict(loss='cossim_ce')),
    'APGD mask_ce': ('apgd', dict(loss='mask_ce')),
    'red-eps mask_ce': ('apgd_red_eps', dict(loss='mask_ce')),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument(
        '--models', nargs='+', default=['texture_clean', 'texture_at'])
    p.add_argument('--eps', type=float, nargs='+', default=[0.25, 0.5, 1, 2])
    p.add_argument('--n-iter', type=int, default=100)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument(
        '--images', type=int, help='validation images (default: 16)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=osp.join(HERE, 'results'))
    p.add_argument('--report', action='store_true')
    return p.parse_args(argv)


def aacc(correct, valid) -> float:
    return round(100.0 * float(correct.sum()) / float(valid.sum()), 2)


def run_model(name, args):
    import mmseg_robust.attacks as A
    model, x, y, mask, _ = load(name, args.images)
    seeds = image_seeds(args.seed, x.shape[0])
    valid = (y != 255).flatten(1).sum(1)
    radii = sorted(args.eps)
    t0 = time.perf_counter()
    sea = A.SEA(model, radii[0], n_iter=args.n_iter, seed=seeds, norm='l2')
    curve = sea.curve(x, y, radii, mask=mask)
    sea_time = time.perf_counter() - t0
    rows = {'clean': aacc(curve[0].clean_correct, valid)}
    worst = [aacc(r.correct, valid) for r in curve]
    monotone = all(b <= a for a, b in zip(worst, worst[1:]))
    for eps, res in zip(radii, curve):
        # the perturbations really are inside the l2 ball
        norm = float((res.x_adv - x).flatten(1).norm(dim=1).max())
        assert norm <= eps * (1 + 1e-5) + 1e-6, (eps, norm)
        cells = {'SEA-R1 (l2)': aacc(res.correct, valid)}
        for label, (fn, kw) in SINGLE.items():
            start = seeds if fn != 'pgd' else None
            r = getattr(A,
                        fn)(model,
                            x,
                            y,
                            eps,
                            args.n_iter,
                            mask=mask,
                            norm='l2',
                            start=start,
                            **kw)
            cells[label] = aacc(r.correct, valid)
        rows[f'{eps:g}'] = cells
        print(name, f'l2 {eps:g}', cells, flush=True)
    return dict(
        settings=dict(
            model=name,
            seed=args.seed,
            n_iter=args.n_iter,
            images=int(x.shape[0])),
        model=name,
        seed=args.seed,
        n_iter=args.n_iter,
        images=int(x.shape[0]),
        size=list(x.shape[1:]),
        rms_per_unit_radius=1 / math.sqrt(x[0].numel()),
        rows=rows,
        sea_monotone=monotone,
        sea_seconds=round(sea_time, 1))


def markdown(runs) -> str:
    lines = []
    for run in runs:
        n = run['size']
        lines.append(
            f'\n{run["model"]}, {run["images"]} images of {n[1]}x{n[2]}, '
            f'{run["n_iter"]} it./attack, seed {run["seed"]}; clean aAcc '
            f'{run["rows"]["clean"]}; SEA curve monotone: '
            f'{run["sea_monotone"]}\n')
        radii = [k for k in run['rows'] if k != 'clean']
        names = list(run['rows'][radii[0]])
        lines.append('| l2 radius (RMS per value) | ' + ' | '.join(names) +
                     ' |')
        lines.append('|---' * (len(names) + 1) + '|')
        for k in radii:
            rms = float(k) * run['rms_per_unit_radius'] * 255
            lines.append(f'| {k} ({rms:.2f}/255) | ' +
                         ' | '.join(f'{run["rows"][k][c]:.2f}'
                                    for c in names) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        print(markdown(read_runs('bench_l2', args.out)))
        return
    torch.set_num_threads(args.threads)
    runs = read_runs('bench_l2', args.out)
    for name in args.models:
        run = run_model(name, args)
        runs = replace_run(runs, run, lambda s: tuple(sorted(s.items())))
        write_json('bench_l2', dict(runs=runs), args.out)
    print(markdown(runs))


if __name__ == '__main__':
    main()
