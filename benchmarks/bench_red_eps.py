"""Red-eps against constant-eps APGD at the paper's budget of 300 iterations.

    python benchmarks/bench_red_eps.py [--models demo_at2 texture_at]
        [--eps 4 8 12 16] [--n-iter 300] [--losses mask_ce bal_ce js mask_sph]
        [--images N] [--seed 0] [--threads 1]

The paper (Section 3.3, Table 1) reports that progressive radius reduction
(red-eps) beats APGD at a constant radius on adversarially trained models
with 300 iterations; ``bench_strength.py`` checks it at 100. Per model,
radius and loss this runs both schedules with the same budget, the loss's
default tracked objective and the *same* random start per image (the noise
SEA draws for that attack, scaled to each schedule's first radius), so every
cell is a paired comparison. It also forms SEA-2023's worst case over the
four red-eps runs and over the four constant-eps runs.

Writes ``benchmarks/results/bench_red_eps.json`` (an entry per model and
number of iterations, replaced on a rerun) and prints a markdown table.
"""
import argparse
import os.path as osp
import time

import torch
from _common import (add_strength_args, read_runs, replace_run, sea_noise,
                     write_json)
from bench_strength import HERE, image_seeds, load, scores, worst_of

SEA_2023 = ['mask_ce', 'bal_ce', 'js', 'mask_sph']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_strength_args(p, osp.join(HERE, 'results'))
    # the paper's budget, on the two adversarially trained models
    p.set_defaults(models=['demo_at2', 'texture_at'], n_iter=300)
    p.add_argument('--losses', nargs='+', default=SEA_2023)
    p.add_argument(
        '--images',
        type=int,
        help='validation images (default: as bench_strength.py)')
    return p.parse_args(argv)


def run_model(name, args):
    """``{row: {eps: scores}}`` for one model."""
    from mmseg_robust.attacks import UniformNoise, apgd, apgd_red_eps
    model, x, y, mask, counts = load(name, args.images)
    num_classes = len(counts)
    noise_of = sea_noise(x, image_seeds(args.seed, x.shape[0]))
    table = {}
    for e in args.eps:
        t0 = time.perf_counter()
        preds = {'red-eps': [], 'const-eps': []}
        for loss in args.losses:
            noise = UniformNoise(noise_of(loss))
            for schedule, attack in (('red-eps', apgd_red_eps), ('const-eps',
                                                                 apgd)):
                r = attack(
                    model,
                    x,
                    y,
                    e / 255,
                    args.n_iter,
                    loss=loss,
                    start=noise,
                    mask=mask)
                preds[schedule].append(r.pred)
                table.setdefault(f'{schedule} {loss}', {})[f'{e:g}'] = scores(
                    r.pred, y, num_classes)
        if set(SEA_2023) <= set(args.losses):
            for schedule, ps in preds.items():
                sea = [ps[args.losses.index(n)] for n in SEA_2023]
                table.setdefault(f'SEA-2023 ({schedule})', {})[f'{e:g}'] = \
                    scores(worst_of(sea, y), y, num_classes)
        print(
            f'[{name}] {e:g}/255 done in {time.perf_counter() - t0:.0f} s',
            flush=True)
    return dict(table=table, n_images=int(x.shape[0]))


def markdown(entry, eps):
    """The table of one entry, red-eps and constant eps side by side."""
    table = entry['table']
    lines = [
        '| loss | ' + ' | '.join(f'{e:g}/255: red / const'
                                 for e in eps) + ' |',
        '|---|' + '---|' * len(eps)
    ]
    losses = [k.split(' ', 1)[1] for k in table if k.startswith('red-eps ')]
    rows = [(n, f'red-eps {n}', f'const-eps {n}') for n in losses]
    if 'SEA-2023 (red-eps)' in table:
        rows.append(('SEA-2023', 'SEA-2023 (red-eps)', 'SEA-2023 (const-eps)'))
    for label, red, const in rows:
        cells = []
        for e in eps:
            a, b = (table[k][f'{e:g}']['aAcc'] for k in (red, const))
            mark = '**' if a <= b else ''
            cells.append(f'{mark}{a:.2f}{mark} / {b:.2f}')
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    wins = sum(table[red][f'{e:g}']['aAcc'] <= table[const][f'{e:g}']['aAcc']
               for _, red, const in rows[:len(losses)] for e in eps)
    lines.append(f'\nred-eps at or below constant eps (aAcc) in {wins} of '
                 f'{len(losses) * len(eps)} loss/radius cells')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    path = osp.join(args.out, 'bench_red_eps.json')
    entries = read_runs('bench_red_eps', args.out)
    for name in args.models:
        t0 = time.perf_counter()
        entry = dict(
            settings=dict(vars(args), models=[name]),
            **run_model(name, args),
            seconds=time.perf_counter() - t0)
        entries = replace_run(
            entries, entry, lambda s: (s['models'], s['n_iter'], s['images']))
        write_json('bench_red_eps', dict(runs=entries), args.out)
        print(f'## {name}, {args.n_iter} iterations, {entry["n_images"]} '
              f'images (aAcc %, bold: red-eps at or below)\n')
        print(markdown(entry, args.eps), flush=True)
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
