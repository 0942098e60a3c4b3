"""Attack strength at equal budget on the demo's clean and AT^2 models:
the paper's Table 1 (losses) and Figure 2 (red-eps vs constant eps vs
restarts), plus PGD / SegPGD / CosPGD.

    python benchmarks/bench_strength.py [--n-iter 20] [--eps 2 4 8 16]
        [--max-images 10] [--models clean at2]

Every attack gets ``n_iter`` iterations per image: PGD-CE, SegPGD, CosPGD
(PGD with the paper's step sizes), APGD with constant eps, APGD with 3
random restarts of ``n_iter / 3`` iterations, red-eps APGD, each with every
loss; SEA is the per-image worst case of red-eps APGD with its four losses.
Reported: robust aAcc / mIoU (MMSeg's definitions). Expected: red-eps beats
constant eps; SEA's worst case is lowest. Writes
``benchmarks/results/bench_strength.json``.
"""
import argparse
import os.path as osp
import sys

import torch
from _common import ROOT, demo_batches, demo_model, write_json
from prettytable import PrettyTable

from mmseg.evaluation.metrics import IoUMetric
from mmseg_robust.attacks import SEA_LOSSES, apgd, apgd_red_eps, pgd

LOSSES = ['ce', 'bal_ce', 'cossim_ce', 'js', 'mask_ce', 'mask_sph']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--models', nargs='+', default=['clean', 'at2'])
    p.add_argument('--eps', type=float, nargs='+', default=[2, 4, 8, 16])
    p.add_argument('--n-iter', type=int, default=21)
    p.add_argument('--max-images', type=int, default=10)
    p.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results'))
    return p.parse_args(argv)


def _scores(preds, labels, num_classes):
    """aAcc and mIoU of a list of (pred, label) batches."""
    totals = [torch.zeros(num_classes, dtype=torch.float64) for _ in
              range(4)]
    for pred, label in zip(preds, labels):
        for p, lab in zip(pred, label):
            for t, a in zip(totals, IoUMetric.intersect_and_union(
                    p, lab, num_classes, 255)):
                t += a.double()
    m = IoUMetric.total_area_to_metrics(*totals, ['mIoU'])
    return dict(aAcc=float(m['aAcc']) * 100,
                mIoU=float(torch.tensor(m['IoU']).nanmean()) * 100)


def attack_suite(b, eps, n):
    """name -> (pred, correct) for one batch."""
    out = {}
    kw = dict(mask=b.mask, ignore_index=b.ignore_index)
    for name, loss in (('PGD', 'ce'), ('SegPGD', 'bal_ce'),
                       ('CosPGD', 'cossim_ce')):
        r = pgd(b.model, b.x, b.y, eps, n, loss=loss, **kw)
        out[name] = (r.pred, r.correct)
    for loss in LOSSES:
        r = apgd(b.model, b.x, b.y, eps, n, loss=loss, **kw)
        out[f'const {loss}'] = (r.pred, r.correct)
        best = None
        for restart in range(3):
            r = apgd(b.model, b.x, b.y, eps, max(n // 3, 1), loss=loss,
                     seed=restart, **kw)
            best = (r.pred.clone(), r.correct.clone()) if best is None \
                else best
            better = r.correct < best[1]
            best[0][better], best[1][better] = r.pred[better], \
                r.correct[better]
        out[f'3 restarts {loss}'] = best
        r = apgd_red_eps(b.model, b.x, b.y, eps, n, loss=loss, **kw)
        out[f'red-eps {loss}'] = (r.pred, r.correct)
    for group, names in (('SEA', [f'red-eps {loss}' for loss in SEA_LOSSES]),
                         ('worst of all', list(out))):
        preds = torch.stack([out[k][0] for k in names])
        correct = torch.stack([out[k][1] for k in names])
        idx = correct.argmin(0)
        ar = torch.arange(len(idx))
        out[group] = (preds[idx, ar], correct[idx, ar])
    return out


def main(argv=None):
    args = parse_args(argv)
    results = dict(settings=vars(args), tables={})
    for model_name in args.models:
        model = demo_model(model_name, args.device)
        num_classes = len(model.dataset_meta['classes'])
        batches = demo_batches(model, batch_size=10,
                               max_images=args.max_images)
        labels = [b.y for b in batches]
        table = {}
        for e in args.eps:
            eps = e / 255
            per = [attack_suite(b, eps, args.n_iter) for b in batches]
            for name in per[0]:
                table.setdefault(name, {})[f'{e:g}'] = _scores(
                    [p[name][0] for p in per], labels, num_classes)
            print(f'[{model_name}] eps {e:g}/255 done', flush=True)
        t = PrettyTable(['attack'] + [f'{e:g}/255 aAcc / mIoU'
                                      for e in args.eps])
        for name, row in table.items():
            t.add_row([name] + [
                f'{row[f"{e:g}"]["aAcc"]:.1f} / {row[f"{e:g}"]["mIoU"]:.1f}'
                for e in args.eps
            ])
        print(f'\n{model_name} model, {args.n_iter} iterations per attack, '
              f'{args.max_images} tiles')
        print(t)
        results['tables'][model_name] = table
    path = write_json('bench_strength', results, args.out)
    print(f'wrote {path}')


if __name__ == '__main__':
    sys.exit(main())
