"""Attack strength at equal budget (the paper's Table 1 / Figure 2 and
their checks), on models trained here in minutes:

* ``texture_clean``, ``texture_at``: a small U-Net on 12 textured classes
  (pixels need context; benchmarks/_texture.py), clean and PGD AT^2;
* ``demo_clean``, ``demo_at2``: the demo's toy UPerNet + ConvNeXt on
  microscopy tiles, clean and AT^2 (run ``make demo`` first).

    python benchmarks/bench_strength.py [--models texture_at ...]
        [--eps 4 8 12 16] [--n-iter 100] [--threads 1] [--starts same]
        [--fresh]

Per model and radius, every attack gets ``n_iter`` iterations per image:

* red-eps APGD per loss with its default tracked objective (SEA's
  attacks), with the other choice of tracked objective (own loss vs CE),
  constant-eps APGD, and constant-eps APGD with 3 random restarts of
  ``n_iter / 3`` iterations;
* SEA-2023 and SEA-2024 (per image the worst of their attacks), also with
  chained radii (each radius starting from the smaller one's worst case, as
  ``tools/test.py`` runs them) and the worst case by mIoU;
* the authors' released SEA-2023 / SEA-2024, re-implemented from a reading of
  their code (benchmarks/_authors_sea.py), at the same iterations and, with
  ``--starts same`` (the default), from the random starts our SEA draws for
  each attack (a paired comparison; ``--starts own``: their own draws);
* PGD, SegPGD, CosPGD with the paper's step sizes.

Reported: aAcc / mIoU over the images (MMSeg's definitions) and the paper's
claims checked on these numbers. Results are written per model to
``benchmarks/results/bench_strength.json`` (a rerun reuses finished models
unless ``--fresh``).
"""
import argparse
import json
import os.path as osp
import sys
import time

import torch
from _common import (ROOT, add_starts_arg, add_strength_args, sea_noise,
                     write_json)

HERE = osp.dirname(osp.abspath(__file__))
LOSSES = ['mask_ce', 'bal_ce', 'js', 'mask_sph', 'mask_ce_bal']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    add_strength_args(p, osp.join(HERE, 'results'))
    add_starts_arg(p)
    p.add_argument(
        '--fresh',
        action='store_true',
        help='recompute models already in the results file')
    p.add_argument(
        '--report',
        nargs='*',
        metavar='JSON',
        help='print the markdown tables and claims of results files '
        '(default: the one in --out) and exit')
    return p.parse_args(argv)


#: Validation images per model in the strength table (``load``'s default)
N_IMAGES = dict(texture=16, demo=10)


def load(name, n_images=None):
    """``(model, x, y, mask, class_counts)``: the model in eval mode, one
    batch of validation images (the first ``n_images``; default
    :data:`N_IMAGES`, the demo has 20) and the training-label class counts
    (for SEA-2024's class weights; their length is the number of
    classes)."""
    family = 'texture' if name.startswith('texture') else 'demo'
    n_images = n_images or N_IMAGES[family]
    if family == 'texture':
        from _texture import (NUM_CLASSES, texture_model, texture_val,
                              train_pool)
        cache = osp.join(ROOT, 'work_dirs', 'bench')
        model = texture_model(name, cache)
        x, y = texture_val(n_images)
        _, ty = train_pool(cache)
        ty = ty[ty != 255]
        counts = torch.bincount(ty, minlength=NUM_CLASSES).double()
        return model, x, y, None, counts
    import glob

    import numpy as np
    from _common import DEMO, demo_batches, demo_model
    from PIL import Image
    seg = demo_model(name.replace('demo_', ''))
    b = demo_batches(seg, batch_size=n_images, max_images=n_images)[0]
    counts = np.zeros(3)
    for f in glob.glob(osp.join(DEMO, 'data', 'ann_dir', 'train', '*.png')):
        lab = np.asarray(Image.open(f)).ravel()
        counts += np.bincount(lab[lab != 255], minlength=3)[:3]
    return b.model, b.x, b.y, b.mask, torch.from_numpy(counts)


def image_seeds(seed, n_images):
    """The per-image seeds every strength benchmark derives from a run's
    seed (``seed * 1000 + i``), so their random starts match."""
    return [seed * 1000 + i for i in range(n_images)]


def scores(pred, y, num_classes):
    """aAcc and mIoU (%), MMSeg's definitions, over a batch."""
    valid = y != 255
    p, t = pred[valid], y[valid]
    inter = torch.bincount(t[p == t], minlength=num_classes).double()
    area_p = torch.bincount(p, minlength=num_classes).double()
    area_t = torch.bincount(t, minlength=num_classes).double()
    union = area_p + area_t - inter
    present = union > 0
    return dict(
        aAcc=100 * float(inter.sum() / area_t.sum()),
        mIoU=100 * float((inter[present] / union[present]).mean()))


def correct_of(pred, y):
    return ((pred == y) & (y != 255)).flatten(1).sum(1)


def worst_of(preds, y):
    """Per image the prediction with the fewest correct pixels."""
    stack = torch.stack(preds)
    correct = torch.stack([correct_of(p, y) for p in preds])
    idx = correct.argmin(0)
    return stack[idx, torch.arange(stack.shape[1])]


def per_image_areas(pred, y, num_classes):
    """``(B, K)`` intersections and unions."""
    inter, union = [], []
    for p, t in zip(pred, y):
        v = t != 255
        pi, ti = p[v], t[v]
        i = torch.bincount(ti[pi == ti], minlength=num_classes).double()
        u = torch.bincount(pi, minlength=num_classes).double() + \
            torch.bincount(ti, minlength=num_classes).double() - i
        inter.append(i)
        union.append(u)
    return torch.stack(inter), torch.stack(union)


def worst_miou_pred(preds, y, num_classes):
    """The per-image choice among ``preds`` minimising the dataset mIoU
    (started from the per-image worst by accuracy)."""
    from mmseg_robust.attacks import worst_case_miou
    areas = [per_image_areas(p, y, num_classes) for p in preds]
    inter = torch.stack([a[0] for a in areas], 1).numpy()
    union = torch.stack([a[1] for a in areas], 1).numpy()
    correct = torch.stack([correct_of(p, y) for p in preds])
    res = worst_case_miou(inter, union, starts=[correct.argmin(0).numpy()])
    choice = torch.from_numpy(res['choice'])
    return torch.stack(preds)[choice, torch.arange(len(choice))]


def run_model(name, args, log):
    from _authors_sea import authors_sea

    from mmseg_robust.attacks import (SEA, UniformNoise, apgd, apgd_red_eps,
                                      class_weights_from_counts,
                                      default_tracked, pgd)
    model, x, y, mask, counts = load(name)
    num_classes = len(counts)
    weights = class_weights_from_counts(counts).float()
    seeds = image_seeds(args.seed, x.shape[0])
    noise = sea_noise(x, seeds)  # our SEA's start noise per attack
    # the authors' SEA gets our random start of each attack (paired)
    starts = None if args.starts == 'own' else noise
    kw = dict(mask=mask)
    table, timing = {}, {}

    def record(key, e, pred):
        table.setdefault(key, {})[f'{e:g}'] = scores(pred, y, num_classes)

    # chained SEA-2023 over all radii (what tools/test.py does)
    t0 = time.perf_counter()
    radii = [e / 255 for e in sorted(args.eps)]
    chained = SEA(
        model, radii[0], n_iter=args.n_iter, version='2023').curve(
            x, y, radii, mask=mask, seed=seeds)
    timing['SEA-2023 chained, all radii'] = time.perf_counter() - t0
    for e, res in zip(sorted(args.eps), chained):
        record('SEA-2023 chained', e, res.pred)
    for e in args.eps:
        eps = e / 255
        t_eps = time.perf_counter()
        out = {}
        # SEA-2023's four attacks, standalone (skip_broken=False)
        sea = SEA(
            model,
            eps,
            n_iter=args.n_iter,
            skip_broken=False,
            class_weights=weights,
            version='2023')
        t0 = time.perf_counter()
        res23 = sea.run(x, y, seed=seeds, **kw)
        timing[f'SEA-2023 {e:g}'] = time.perf_counter() - t0
        for loss in ('mask_ce', 'bal_ce', 'js', 'mask_sph'):
            out[f'red-eps {loss} (tracks {default_tracked(loss)})'] = \
                res23.attacks[loss].pred
        # mask_ce_bal as in SEA-2024 (same seed derivation as SEA uses)
        r = apgd_red_eps(
            model,
            x,
            y,
            eps,
            args.n_iter,
            loss='mask_ce_bal',
            class_weights=weights,
            start=UniformNoise(noise('mask_ce_bal')),
            **kw)
        out['red-eps mask_ce_bal (tracks ce)'] = r.pred
        out['SEA-2023'] = res23.pred
        sea24 = [
            out['red-eps mask_ce_bal (tracks ce)'],
            out['red-eps mask_ce (tracks ce)'], out['red-eps js (tracks ce)']
        ]
        out['SEA-2024'] = worst_of(sea24, y)
        sea23 = [res23.attacks[n].pred for n in res23.attacks]
        out['SEA-2023 worst_miou'] = worst_miou_pred(sea23, y, num_classes)
        out['SEA-2024 worst_miou'] = worst_miou_pred(sea24, y, num_classes)
        # the other tracked objective, constant eps, restarts
        for loss in LOSSES:
            cw = dict(class_weights=weights) if loss == 'mask_ce_bal' else {}
            other = loss if default_tracked(loss) == 'ce' else 'ce'
            r = apgd_red_eps(
                model,
                x,
                y,
                eps,
                args.n_iter,
                loss=loss,
                track_loss=other,
                start=seeds,
                **cw,
                **kw)
            out[f'red-eps {loss} (tracks {other})'] = r.pred
            r = apgd(
                model,
                x,
                y,
                eps,
                args.n_iter,
                loss=loss,
                start=seeds,
                **cw,
                **kw)
            out[f'const-eps {loss}'] = r.pred
            preds = []
            for k in range(3):
                r = apgd(
                    model,
                    x,
                    y,
                    eps,
                    max(args.n_iter // 3, 1),
                    loss=loss,
                    start=[s + 7919 * (k + 1) for s in seeds],
                    **cw,
                    **kw)
                preds.append(r.pred)
            out[f'const-eps {loss}, 3 restarts'] = worst_of(preds, y)
        for bname, loss in (('PGD', 'ce'), ('SegPGD', 'bal_ce'),
                            ('CosPGD', 'cossim_ce')):
            out[bname] = pgd(
                model, x, y, eps, args.n_iter, loss=loss, **kw).pred
        # the authors' release, as read (benchmarks/_authors_sea.py)
        cache = {}
        t0 = time.perf_counter()
        a23 = authors_sea(
            model,
            x,
            y,
            eps,
            args.n_iter,
            '2023',
            seed=args.seed,
            cache=cache,
            starts=starts)
        timing[f'authors SEA-2023 {e:g}'] = time.perf_counter() - t0
        a24 = authors_sea(
            model,
            x,
            y,
            eps,
            args.n_iter,
            '2024',
            weights=weights,
            seed=args.seed,
            cache=cache,
            starts=starts)
        out['authors SEA-2023'] = a23['worst']
        out['authors SEA-2024'] = a24['worst']
        for loss, pred in a23.items():
            if loss != 'worst':
                out[f'authors red-eps {loss}'] = pred
        out['authors red-eps mask_ce_bal'] = a24['mask_ce_bal']
        for key, pred in out.items():
            record(key, e, pred)
        log(f'[{name}] {e:g}/255 done in {time.perf_counter() - t_eps:.0f} s'
            f' (SEA-2023 {table["SEA-2023"][f"{e:g}"]["aAcc"]:.2f}, '
            f'authors {table["authors SEA-2023"][f"{e:g}"]["aAcc"]:.2f} '
            'aAcc)')
    with torch.no_grad():
        clean = model(x).max(1).indices
    table['clean'] = {
        f'{e:g}': scores(clean, y, num_classes)
        for e in args.eps
    }
    return dict(
        table=table,
        timing=timing,
        n_images=int(x.shape[0]),
        num_classes=int(num_classes))


def claims(results, eps):
    """The paper's claims (and ours against the authors'), checked; the
    margin is the largest excess over the radii (negative: holds with room),
    with where it is."""
    out = []

    def val(model, key, e, m='aAcc'):
        return results[model]['table'][key][f'{e:g}'][m]

    def check(model, claim, pairs, m):
        """``pairs``: (ours, theirs) row names; holds if ours <= theirs at
        every radius."""
        excess = max((val(model, a, e, m) - val(model, b, e, m), b, e)
                     for a, b in pairs for e in eps)
        out.append(
            dict(
                model=model,
                claim=f'{claim} ({m})',
                ok=excess[0] <= 0,
                margin=excess[0],
                where=f'{excess[1]} at {excess[2]:g}/255'))

    for model, res in results.items():
        keys = [k for k in res['table'] if k != 'clean']
        singles = [k for k in keys if 'SEA' not in k]
        for m in ('aAcc', 'mIoU'):
            for version in ('2023', '2024'):
                check(model, f'our SEA-{version} <= authors\' '
                      f'SEA-{version}',
                      [(f'SEA-{version}', f'authors SEA-{version}')], m)
            check(model, 'our SEA-2023 with chained radii <= authors\' '
                  'SEA-2023', [('SEA-2023 chained', 'authors SEA-2023')], m)
            check(model, 'SEA-2023 <= every single attack',
                  [('SEA-2023', k) for k in singles], m)
            check(model, 'SEA-2023 with chained radii <= every single '
                  'attack', [('SEA-2023 chained', k) for k in singles], m)
            check(model, 'SEA-2023 <= PGD, SegPGD, CosPGD',
                  [('SEA-2023', b) for b in ('PGD', 'SegPGD', 'CosPGD')], m)
        wins = [(loss, e) for loss in LOSSES for e in eps if val(
            model, f'red-eps {loss} (tracks '
            f'{"mask_sph" if loss == "mask_sph" else "ce"})', e) <= val(
                model, f'const-eps {loss}', e)]
        out.append(
            dict(
                model=model,
                claim='red-eps <= const-eps (aAcc, per '
                'loss and radius)',
                ok=len(wins) == len(LOSSES) * len(eps),
                margin=f'{len(wins)}/{len(LOSSES) * len(eps)}'))
    return out


def print_tables(results, eps):
    from prettytable import PrettyTable
    for model, res in results.items():
        t = PrettyTable(['attack'] + [f'{e:g}/255 aAcc / mIoU' for e in eps])
        t.align['attack'] = 'l'
        for key, row in res['table'].items():
            t.add_row([key] + [
                f'{row[f"{e:g}"]["aAcc"]:.1f} / {row[f"{e:g}"]["mIoU"]:.1f}'
                for e in eps
            ])
        print(f'\n{model}: {res["n_images"]} images, {res["num_classes"]} '
              'classes')
        print(t)


def markdown(results, eps) -> str:
    """Markdown tables (aAcc / mIoU per radius) and the checked claims."""
    lines = []
    for model, res in results.items():
        lines += [
            f'**{model}** ({res["n_images"]} images, '
            f'{res["num_classes"]} classes; aAcc / mIoU %):', '',
            '| attack | ' + ' | '.join(f'{e:g}/255' for e in eps) + ' |',
            '|---|' + '---|' * len(eps)
        ]
        for key, row in res['table'].items():
            name = f'**{key}**' if key in ('SEA-2023', 'SEA-2024') else key
            lines.append(f'| {name} | ' + ' | '.join(
                f'{row[f"{e:g}"]["aAcc"]:.1f} / {row[f"{e:g}"]["mIoU"]:.1f}'
                for e in eps) + ' |')
        lines.append('')
    lines += [
        '| model | claim | holds | margin (points) |', '|---|---|---|---|'
    ]
    for c in claims(results, eps):
        margin = c['margin'] if isinstance(c['margin'], str) else \
            f'{c["margin"]:+.2f}'
        where = f' ({c["where"]})' if 'where' in c else ''
        lines.append(f'| {c["model"]} | {c["claim"]} | '
                     f'{"yes" if c["ok"] else "no"} | {margin}{where} |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.report is not None:
        results, eps = {}, None
        for path in args.report or [osp.join(args.out, 'bench_strength.json')]:
            with open(path) as f:
                data = json.load(f)
            results.update(data['models'])
            eps = data['settings']['eps']
        print(markdown(results, eps))
        return
    torch.set_num_threads(args.threads)
    path = osp.join(args.out, 'bench_strength.json')
    results = {}
    if osp.isfile(path) and not args.fresh:
        with open(path) as f:
            old = json.load(f)
        kept = old.get('settings', {})
        if kept.get('n_iter') == args.n_iter and \
                kept.get('eps') == args.eps and \
                kept.get('starts', 'own') == args.starts:
            results = old.get('models', {})
    for name in args.models:
        if name in results:
            print(f'[{name}] reusing the results in {path}')
            continue
        t0 = time.perf_counter()
        results[name] = run_model(name, args, lambda s: print(s, flush=True))
        results[name]['seconds'] = time.perf_counter() - t0
        write_json('bench_strength', dict(settings=vars(args), models=results),
                   args.out)
    print_tables(results, args.eps)
    checked = claims(results, args.eps)
    for c in checked:
        print(('[yes] ' if c['ok'] else '[no]  ') + f'{c["model"]}: '
              f'{c["claim"]} (margin {c["margin"]}' +
              (f', {c["where"]}' if 'where' in c else '') + ')')
    write_json('bench_strength',
               dict(settings=vars(args), models=results, claims=checked),
               args.out)


if __name__ == '__main__':
    sys.exit(main())
