"""Does PAdam add anything to SEA? (issue #20, item 3)

    python benchmarks/bench_padam.py [--models texture_clean ...]
        [--eps 8 16] [--n-iter 100] [--seeds 1 2 3] [--images N]
        [--lr-fraction F] [--extra cos ...] [--threads 1] [--report]

Per model, radius and seed one ensemble runs SEA-2023's four red-eps APGD
attacks and PAdam-CE / PAdam-Cos (``padam:ce``, ``padam:cos``), every
attack on every image (``skip_broken=False``) with ``n_iter`` iterations
and its own random start, drawn from the image's seed
(``bench_strength.image_seeds``) and the attack's name as SEA draws it: the
four SEA attacks are exactly SEA-2023's, so each seed is a paired
comparison. From the per-image correct-pixel counts it forms the per-image
worst case of SEA-2023 alone and with PAdam-CE, PAdam-Cos or both added,
and reports aAcc and mIoU over the images (MMSeg's definitions), how many
images and pixels PAdam added, and each attack alone. Differences are
paired per seed; the table gives their mean and standard error over seeds.
PAdam runs outside SEA with the start SEA draws for ``padam:LOSS`` (the
same run, tested), so that ``--lr-fraction`` can set its learning rate
(a fraction of the radius; default Halmosi et al.'s 2/255); ``--extra``
adds other attacks by name (e.g. ``cos``, red-eps APGD with the cosine
loss), each as a single attack and added to SEA-2023.

Writes ``benchmarks/results/bench_padam.json`` (an entry per model, radius,
iterations, images, seeds, learning rate and extra attacks, replaced on a
rerun) and prints a markdown table;
``--report`` prints the table of the results file and exits.
"""
import argparse
import os.path as osp
import statistics
import time

import torch
from _common import STRENGTH_MODELS, read_runs, replace_run, write_json
from bench_strength import HERE, image_seeds, load, scores

SEA_2023 = ['mask_ce', 'bal_ce', 'js', 'mask_sph']
PADAM = ['padam:ce', 'padam:cos']
#: The ensembles compared: SEA-2023 alone and with PAdam attacks added.
COMBOS = {
    'SEA-2023': SEA_2023,
    'SEA-2023 + PAdam-CE': SEA_2023 + ['padam:ce'],
    'SEA-2023 + PAdam-Cos': SEA_2023 + ['padam:cos'],
    'SEA-2023 + both': SEA_2023 + PADAM,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', default=STRENGTH_MODELS)
    p.add_argument('--eps', type=float, nargs='+', default=[8, 16])
    p.add_argument('--n-iter', type=int, default=100)
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument(
        '--images',
        type=int,
        help='validation images (default: as bench_strength.py, 16 '
        'texture / 10 demo)')
    p.add_argument(
        '--lr-fraction',
        type=float,
        help="PAdam's learning rate as a fraction of the radius (default: "
        "Halmosi et al.'s 2/255 at every radius)")
    p.add_argument(
        '--extra',
        nargs='*',
        default=[],
        metavar='ATTACK',
        help='further attacks (names as --attacks of tools/test.py, e.g. '
        'cos for red-eps APGD with the cosine loss), each also added to '
        'SEA-2023 alone')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=osp.join(HERE, 'results'))
    p.add_argument(
        '--report',
        action='store_true',
        help='print the table of the results file and exit')
    return p.parse_args(argv)


def worst_over(attacks, names, y):
    """Per image the prediction and correct count of the attack in
    ``names`` with the fewest correct pixels (ties: the earlier attack, as
    SEA keeps)."""
    correct = torch.stack([attacks[n].correct for n in names])
    pred = torch.stack([attacks[n].pred for n in names])
    idx = correct.argmin(0)  # the first minimum
    rows = torch.arange(y.shape[0])
    return pred[idx, rows], correct[idx, rows]


def run_cell(model, x, y, mask, num_classes, eps, args, seed):
    """One model, radius and seed: every attack's scores and the
    ensembles'."""
    from mmseg_robust.attacks import (SEA, UniformNoise, derive_seed, padam,
                                      run_attack, start_noise)
    seeds = image_seeds(seed, x.shape[0])
    t0 = time.perf_counter()
    res = SEA(
        model,
        eps / 255,
        n_iter=args.n_iter,
        skip_broken=False,
        version='2023').run(
            x, y, mask=mask, seed=seeds)
    attacks = dict(res.attacks)
    # PAdam with the start SEA would draw for it (padam:LOSS in SEA is the
    # same run; here its learning rate can be set)
    lr = None if args.lr_fraction is None else args.lr_fraction * eps / 255
    for name in PADAM:
        noise = start_noise(x, derive_seed(seeds, name))
        attacks[name] = padam(
            model,
            x,
            y,
            eps / 255,
            args.n_iter,
            loss=name.split(':')[1],
            lr=lr,
            start=UniformNoise(noise),
            mask=mask,
            clean=(res.clean_pred, res.clean_correct))
    for name in args.extra:  # with the start SEA would draw for it
        noise = start_noise(x, derive_seed(seeds, name))
        attacks[name] = run_attack(
            name,
            model,
            x,
            y,
            eps / 255,
            args.n_iter,
            start=UniformNoise(noise),
            mask=mask,
            clean=(res.clean_pred, res.clean_correct))
    seconds = time.perf_counter() - t0
    out = dict(
        attacks={
            n:
            dict(
                scores(a.pred, y, num_classes),
                seconds=a.time,
                correct=a.correct.tolist())
            for n, a in attacks.items()
        },
        ensembles={},
        clean=scores(res.clean_pred, y, num_classes),
        valid=res.valid.tolist(),
        seconds=seconds)
    _, base = worst_over(attacks, SEA_2023, y)
    combos = dict(COMBOS)
    combos.update({f'SEA-2023 + {n}': SEA_2023 + [n] for n in args.extra})
    for combo, names in combos.items():
        pred, correct = worst_over(attacks, names, y)
        gain = base - correct  # >= 0: pixels PAdam flipped beyond SEA
        out['ensembles'][combo] = dict(
            scores(pred, y, num_classes),
            correct=correct.tolist(),
            images_improved=int((gain > 0).sum()),
            pixels_gained=int(gain.sum()))
    return out


def _mean_se(values):
    mean = statistics.mean(values)
    se = statistics.stdev(values) / len(values)**0.5 if len(
        values) > 1 else None
    return dict(mean=mean, se=se)


def summarise(runs):
    """Means over seeds of every row, and the paired differences to
    SEA-2023 (ensembles) and to the best SEA attack (single attacks)."""
    summary = {}
    seeds = list(runs)
    for kind in ('ensembles', 'attacks'):
        for name in runs[seeds[0]][kind]:
            row = {}
            for m in ('aAcc', 'mIoU'):
                row[m] = _mean_se([runs[s][kind][name][m] for s in seeds])
                if kind == 'ensembles':
                    ref = [runs[s]['ensembles']['SEA-2023'][m] for s in seeds]
                    label = 'minus SEA-2023'
                else:
                    # the strongest single SEA attack of each seed
                    ref = [
                        min(runs[s]['attacks'][a][m] for a in SEA_2023)
                        for s in seeds
                    ]
                    label = 'minus best SEA attack'
                row[f'{m} {label}'] = _mean_se(
                    [runs[s][kind][name][m] - r for s, r in zip(seeds, ref)])
            if kind == 'ensembles':
                row['images_improved'] = [
                    runs[s]['ensembles'][name]['images_improved']
                    for s in seeds
                ]
                row['pixels_gained'] = [
                    runs[s]['ensembles'][name]['pixels_gained'] for s in seeds
                ]
            summary[name] = row
    return summary


def fmt(d, digits=2):
    if d['se'] is None:
        return f'{d["mean"]:.{digits}f}'
    return f'{d["mean"]:.{digits}f} ± {d["se"]:.{digits}f}'


def markdown(entries) -> str:
    """One table per model: rows are ensembles and single attacks, columns
    the radii (aAcc, and the paired difference with its SE over seeds)."""
    lines = []
    groups = []
    for e in entries:
        if _group(e['settings']) not in groups:
            groups.append(_group(e['settings']))
    for group in groups:
        cells = sorted((e for e in entries if _group(e['settings']) == group),
                       key=lambda e: e['settings']['eps'])
        s0 = cells[0]['settings']
        lr_fraction = s0.get('lr_fraction')
        lines += [
            f'**{s0["model"]}**' +
            ('' if lr_fraction is None else
             f', PAdam learning rate {lr_fraction:g} eps') +
            f' ({cells[0]["n_images"]} images, {s0["n_iter"]} '
            f'iterations per attack, seeds {s0["seeds"]}; aAcc %, mean ± SE '
            'over seeds; Δ: paired difference)', '',
            '| attack | ' + ' | '.join(f'{c["settings"]["eps"]:g}/255 aAcc | Δ'
                                       for c in cells) + ' |',
            '|---|' + '---|---|' * len(cells)
        ]
        names = list(cells[0]['summary'])
        for name in names:
            row = [name]
            for c in cells:
                r = c['summary'][name]
                key = next(k for k in r if k.startswith('aAcc minus'))
                row += [fmt(r['aAcc']), fmt(r[key])]
            lines.append('| ' + ' | '.join(row) + ' |')
        lines += [
            '', 'Δ: ensembles minus SEA-2023; single attacks minus the '
            'best single SEA attack of the same seed.', ''
        ]
        for c in cells:
            for name, r in c['summary'].items():
                if name == 'SEA-2023' or 'images_improved' not in r:
                    continue
                lines.append(
                    f'- {c["settings"]["eps"]:g}/255, {name}: images improved '
                    f'per seed {r["images_improved"]}, pixels gained '
                    f'{r["pixels_gained"]}')
        lines.append('')
    return '\n'.join(lines)


def _group(settings):
    """The settings that one table shares (all but the radius)."""
    return (settings['model'], int(settings['n_iter']), settings.get('images'),
            settings.get('lr_fraction'), tuple(settings.get('extra', ())),
            tuple(settings['seeds']))


def _key(settings):
    return _group(settings) + (float(settings['eps']), )


def main(argv=None):
    args = parse_args(argv)
    entries = read_runs('bench_padam', args.out)
    if args.report:
        print(markdown(entries))
        return
    torch.set_num_threads(args.threads)
    for name in args.models:
        model, x, y, mask, counts = load(name, args.images)
        for e in args.eps:
            runs = {}
            for seed in args.seeds:
                runs[seed] = run_cell(model, x, y, mask, len(counts), e, args,
                                      seed)
                ens = runs[seed]['ensembles']
                alone = {n: runs[seed]['attacks'][n]['aAcc'] for n in PADAM}
                print(
                    f'[{name}] {e:g}/255 seed {seed}: SEA-2023 '
                    f'{ens["SEA-2023"]["aAcc"]:.2f}, + both PAdam '
                    f'{ens["SEA-2023 + both"]["aAcc"]:.2f} aAcc; PAdam-CE '
                    f'{alone["padam:ce"]:.2f}, PAdam-Cos '
                    f'{alone["padam:cos"]:.2f} alone '
                    f'({runs[seed]["seconds"]:.0f} s)',
                    flush=True)
            settings = dict(
                model=name,
                eps=e,
                n_iter=args.n_iter,
                seeds=args.seeds,
                images=args.images,
                lr_fraction=args.lr_fraction,
                extra=args.extra,
                threads=args.threads)
            entries = replace_run(
                entries,
                dict(
                    settings=settings,
                    n_images=int(x.shape[0]),
                    runs={
                        str(s): r
                        for s, r in runs.items()
                    },
                    summary=summarise(runs)), _key)
            write_json('bench_padam', dict(runs=entries), args.out)
    print(markdown(entries))


if __name__ == '__main__':
    main()
