"""How strong is the black-box square attack? (issue #21, item 2)

    python benchmarks/bench_square.py [--models texture_clean texture_at]
        [--eps 8 4] [--queries 1000 5000] [--apgd-iter 100] [--seed 1]
        [--images N] [--ablation] [--threads 1] [--report]

Per model and radius: the clean aAcc and mIoU, the square attack
(``mmseg_robust.attacks.square.square_attack``, logits only) at each query
budget (default: its default budget and five times that), and APGD with
``mask_ce`` at constant radius (``apgd``, ``--apgd-iter`` iterations, the
white-box reference), each with per-image seeds from
``bench_strength.image_seeds``. ``--ablation`` adds, at the first budget,
the square attack's choices one at a time: the ``margin`` tie-break, the
clean start instead of the stripes, and Square Attack's ``p_init = 0.05``.
aAcc and mIoU are MMSeg's definitions over the images; ``broken``: the
images where the square attack found fewer correct pixels than APGD (the
trust report's black-box check counts those).

Writes ``benchmarks/results/bench_square.json`` (an entry per model,
radius, seed and images, replaced on a rerun) and prints a markdown table;
``--report`` prints the table of the results file and exits.
"""
import argparse
import os.path as osp
import time

import torch
from _common import read_runs, replace_run, write_json
from bench_strength import HERE, image_seeds, load, scores

#: The ablations of ``--ablation``: name -> keyword arguments.
ABLATIONS = {
    'margin': dict(loss='margin'),
    'clean start': dict(start=None),
    'p_init 0.05': dict(p_init=0.05),
}


def parse_args(argv=None):
    from mmseg_robust.attacks.square import SQUARE_QUERIES
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument(
        '--models', nargs='+', default=['texture_clean', 'texture_at'])
    p.add_argument('--eps', type=float, nargs='+', default=[8])
    p.add_argument(
        '--queries',
        type=int,
        nargs='+',
        default=[SQUARE_QUERIES, 5 * SQUARE_QUERIES])
    p.add_argument('--apgd-iter', type=int, default=100)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument(
        '--images', type=int, help='validation images (default: 16)')
    p.add_argument('--ablation', action='store_true')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=osp.join(HERE, 'results'))
    p.add_argument(
        '--report',
        action='store_true',
        help='print the table of the results file and exit')
    return p.parse_args(argv)


def run_cell(model, x, y, mask, num_classes, e, args):
    """Clean, APGD and the square attack on one model at ``e``/255."""
    from mmseg_robust.attacks import apgd
    from mmseg_robust.attacks.square import square_attack
    eps = e / 255
    seeds = image_seeds(args.seed, x.shape[0])
    with torch.no_grad():
        clean_pred = model(x).argmax(1)
    out = dict(clean=scores(clean_pred, y, num_classes))
    t0 = time.perf_counter()
    white = apgd(
        model,
        x,
        y,
        eps,
        args.apgd_iter,
        loss='mask_ce',
        start=seeds,
        mask=mask)
    out['apgd'] = dict(
        scores(white.pred, y, num_classes),
        seconds=time.perf_counter() - t0,
        n_iter=args.apgd_iter)
    runs = [(f'square {q}', q, {}) for q in args.queries]
    if args.ablation:
        runs += [(f'square {args.queries[0]} {name}', args.queries[0], kw)
                 for name, kw in ABLATIONS.items()]
    for key, q, kw in runs:
        t0 = time.perf_counter()
        res = square_attack(model, x, y, eps, q, seed=seeds, mask=mask, **kw)
        out[key] = dict(
            scores(res.pred, y, num_classes),
            seconds=time.perf_counter() - t0,
            queries=q,
            accepted=float(res.extra['accepted'].float().mean()),
            # images where the black-box attack beat the white-box one
            beats_apgd=int((res.correct < white.correct).sum()),
            **{
                k: str(v)
                for k, v in kw.items()
            })
        print(
            f'  {key}: aAcc {out[key]["aAcc"]:.2f} '
            f'({out[key]["seconds"]:.0f} s)',
            flush=True)
    return out


def _key(settings):
    return tuple(settings[k] for k in ('model', 'eps', 'seed', 'images'))


def markdown(entries):
    lines = [
        '| model | eps | clean aAcc | square aAcc (queries) | '
        'APGD mask_ce aAcc | square s / APGD s |', '|---|---|---|---|---|---|'
    ]
    for ent in entries:
        s, r = ent['settings'], ent['results']
        squares = [(k, v) for k, v in r.items()
                   if k.startswith('square') and k.count(' ') == 1]
        sq = ', '.join(f'{v["aAcc"]:.2f} ({v["queries"]})' for _, v in squares)
        secs = ', '.join(f'{v["seconds"]:.0f}' for _, v in squares)
        lines.append(f'| {s["model"]} | {s["eps"]:g} | '
                     f'{r["clean"]["aAcc"]:.2f} | {sq} | '
                     f'{r["apgd"]["aAcc"]:.2f} ({s["apgd_iter"]} it) | '
                     f'{secs} / {r["apgd"]["seconds"]:.0f} |')
    ablations = [(ent['settings'], k, v) for ent in entries
                 for k, v in ent['results'].items() if k.count(' ') > 1]
    if ablations:
        lines += ['', '| model | eps | variant | aAcc |', '|---|---|---|---|']
        lines += [
            f'| {s["model"]} | {s["eps"]:g} | {k} | {v["aAcc"]:.2f} |'
            for s, k, v in ablations
        ]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    entries = read_runs('bench_square', args.out)
    if args.report:
        print(markdown(entries))
        return
    torch.set_num_threads(args.threads)
    for name in args.models:
        model, x, y, mask, counts = load(name, args.images)
        for e in args.eps:
            print(f'[{name}] {e:g}/255', flush=True)
            t0 = time.perf_counter()
            results = run_cell(model, x, y, mask, len(counts), e, args)
            settings = dict(
                model=name,
                eps=e,
                seed=args.seed,
                images=args.images,
                queries=args.queries,
                apgd_iter=args.apgd_iter,
                threads=args.threads)
            entries = replace_run(
                entries,
                dict(
                    settings=settings,
                    n_images=int(x.shape[0]),
                    seconds=time.perf_counter() - t0,
                    results=results), _key)
            write_json('bench_square', dict(runs=entries), args.out)
    print(markdown(entries))


if __name__ == '__main__':
    main()
