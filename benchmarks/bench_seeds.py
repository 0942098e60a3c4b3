"""Seed spread of our SEA and the authors' SEA at one radius.

    python benchmarks/bench_seeds.py [--model texture_clean] [--eps 16]
        [--seeds 1 2 3] [--n-iter 100] [--threads 1] [--images N]
        [--version 2023] [--starts same]

A difference between two attacks that is smaller than the spread over random
starts is not a difference in strength. ``bench_strength.py`` runs one seed;
this script reruns SEA-2023 or, with ``--version 2024``, SEA-2024 (ours,
independent radius) and the authors' (``_authors_sea.py``) with other seeds
on the same images and reports each seed and the means. ``--images`` takes
more (or fewer) of the validation images than the strength table (the
demo's 20 instead of 10).

``--starts same`` (the default) gives the authors' SEA the random starts
our SEA draws for each attack, so the two differ only in their algorithms
and each seed is a paired comparison (common random numbers): the seed
spread of the random starts, which is larger than the differences measured
here, cancels. ``--starts own`` lets their code draw its own starts from
one generator per seed, as their release does.
Adds (or replaces) the entry of this model, radius, number of iterations,
images and version in ``benchmarks/results/bench_seeds.json``.
"""
import argparse
import os.path as osp
import statistics

import torch
from _authors_sea import authors_sea
from _common import (add_starts_arg, read_runs, replace_run, sea_noise,
                     write_json)
from bench_strength import HERE, image_seeds, load, scores


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='texture_clean')
    p.add_argument('--eps', type=float, default=16)
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--n-iter', type=int, default=100)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--version', default='2023', choices=['2023', '2024'])
    add_starts_arg(p)
    p.add_argument(
        '--images',
        type=int,
        help='validation images (default: as bench_strength.py, 16 '
        'texture / 10 demo; the demo has 20)')
    p.add_argument('--out', default=f'{HERE}/results')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmseg_robust.attacks import SEA, class_weights_from_counts
    model, x, y, _, counts = load(args.model, args.images)
    num_classes = len(counts)
    eps = args.eps / 255
    # SEA-2024's class weights, as bench_strength.py
    weights = class_weights_from_counts(counts).float()
    runs = {}
    for seed in args.seeds:
        seeds = image_seeds(seed, x.shape[0])
        ours = SEA(
            model,
            eps,
            n_iter=args.n_iter,
            version=args.version,
            class_weights=weights).run(
                x, y, seed=seeds)
        theirs = authors_sea(
            model,
            x,
            y,
            eps,
            args.n_iter,
            args.version,
            weights=weights,
            seed=seed,
            starts=None if args.starts == 'own' else sea_noise(x, seeds))
        runs[seed] = dict(
            ours=scores(ours.pred, y, num_classes),
            authors=scores(theirs['worst'], y, num_classes),
            per_attack=dict(
                ours={
                    n: scores(a.pred, y, num_classes)['aAcc']
                    for n, a in ours.attacks.items()
                },
                authors={
                    n: scores(p, y, num_classes)['aAcc']
                    for n, p in theirs.items() if n != 'worst'
                }))
        print(
            f'seed {seed}: ours {runs[seed]["ours"]["aAcc"]:.2f}, '
            f'authors {runs[seed]["authors"]["aAcc"]:.2f} aAcc',
            flush=True)
    means = {
        who: {
            m: statistics.mean(r[who][m] for r in runs.values())
            for m in ('aAcc', 'mIoU')
        }
        for who in ('ours', 'authors')
    }
    # the paired difference (same images and, with --starts same, the same
    # random starts per seed) and its standard error over seeds
    diff = {}
    for m in ('aAcc', 'mIoU'):
        d = [r['ours'][m] - r['authors'][m] for r in runs.values()]
        diff[m] = statistics.mean(d)
        diff[f'{m}_se'] = (
            statistics.stdev(d) / len(d)**0.5 if len(d) > 1 else None)
    means['ours - authors'] = diff
    print(f'mean over seeds {args.seeds}: ours {means["ours"]["aAcc"]:.2f} '
          f'/ {means["ours"]["mIoU"]:.2f}, authors '
          f'{means["authors"]["aAcc"]:.2f} / {means["authors"]["mIoU"]:.2f} '
          '(aAcc / mIoU %)')
    se = diff['aAcc_se']
    print(f'ours - authors: {diff["aAcc"]:+.3f} aAcc' +
          ('' if se is None else f' +- {se:.3f} (SE over seeds)'))
    # one file for every (model, radius, iterations) measured: replace this
    # one's entry
    path = osp.join(args.out, 'bench_seeds.json')
    entries = read_runs('bench_seeds', args.out)

    def key(settings):
        return (settings['model'], float(settings['eps']),
                int(settings.get('n_iter', 100)), settings.get('images'),
                settings.get('version', '2023'), settings.get('starts', 'own'))

    entries = replace_run(entries,
                          dict(settings=vars(args), runs=runs, means=means),
                          key)
    write_json('bench_seeds', dict(runs=entries), args.out)
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
