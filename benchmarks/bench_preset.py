"""Choosing SEA's recommended preset by measurement, and checking it.

    python benchmarks/bench_preset.py run [--models ...] [--eps 4 8 12 16]
        [--n-iter 100] [--seeds 0 1 2] [--members ...] [--threads 1]
    python benchmarks/bench_preset.py search [--size 4] [--models ...]
        [--candidates ...]
    python benchmarks/bench_preset.py check --preset NAME ... [--models ...]
        [--name NAME] [--preset-n-iter N]

``run`` attacks every image of the strength models (``bench_strength.load``;
also the held-out ``texture_heldout_clean`` / ``texture_heldout_at``) with
every single member, red-eps and constant-radius APGD of each SEA loss
(``mask_ce``, ``bal_ce``, ``js``, ``mask_sph``, ``mask_ce_bal``) and of the
cosine loss of PAdam-Cos (``cos``), at each radius and seed, each run alone
(``SEA(attacks=[member])`` with the per-image seeds of
``bench_strength.image_seeds``, so its random start is the one the member
draws inside any ensemble). Per image it stores the correct pixels and the
per-class intersection and prediction areas, cached per (model, seed,
radius, member) under ``work_dirs/bench/preset/n<n_iter>``.

An ensemble's worst case is then the per-image minimum over its members'
correct counts (SEA's worst case with independent radii: random starts
depend only on the image and the member's name, and skipping broken images
does not change a minimum), so any ensemble of measured members is scored
without running it again. ``search`` scores every ensemble of ``--size``
members of ``--candidates`` (passes per image = size x n_iter, SEA-2023's
at size 4) against the comparators of issue #20: SEA-2023, SEA-2024 and
every single member of their losses, at the same iterations per attack,
paired over seeds: per cell (model, radius) the mean and standard error
over seeds of ensemble - comparator in aAcc, and the worst margin (largest
mean - SE). ``check`` prints that for one preset, and how far its worst
case is above the per-image worst case over everything measured in the
cell (all members at all seeds); a restart ``NAME#K`` in a preset is that
member at another seed; with ``--preset-n-iter N`` the preset's members are
their runs of N iterations (``run --n-iter N --members ...`` first; SEA-T2
at ``--n-iter 100`` is SEA-R1's members at 250), scored against the
comparators and the union at ``--n-iter``. The union gap is given in aAcc
and in mIoU (the union's images are the runs with the fewest correct
pixels). Results: ``benchmarks/results/bench_preset.json`` (keyed by
``--name``).
"""
import argparse
import itertools
import json
import os
import os.path as osp
import statistics
import sys
import time

import torch
from _common import ROOT, STRENGTH_MODELS, write_json

from mmseg_robust.attacks import sea_version

HERE = osp.dirname(osp.abspath(__file__))
CACHE = osp.join(ROOT, 'work_dirs', 'bench', 'preset')
LOSSES = ('mask_ce', 'bal_ce', 'js', 'mask_sph', 'mask_ce_bal', 'cos')
#: every single member: red-eps (a bare loss name) and constant radius
MEMBERS = tuple(LOSSES) + tuple(f'apgd:{loss}' for loss in LOSSES)
#: the published versions as ensembles of members
PUBLISHED = {v.name: v.attacks for v in map(sea_version, ('2023', '2024'))}
#: the published versions' losses: each of them, red-eps and constant
#: radius, is a comparator (issue #20)
SEA_LOSSES = tuple(dict.fromkeys(a for v in PUBLISHED.values() for a in v))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('command', choices=['run', 'search', 'check'])
    p.add_argument('--models', nargs='+', default=STRENGTH_MODELS)
    p.add_argument('--eps', type=float, nargs='+', default=[4, 8, 12, 16])
    p.add_argument('--n-iter', type=int, default=100)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--members', nargs='+', default=list(MEMBERS))
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--size', type=int, default=4)
    p.add_argument('--preset', nargs='+')
    p.add_argument('--name', default='candidate')
    p.add_argument(
        '--candidates',
        nargs='+',
        help='search: the members ensembles are made of (default: all '
        '--members; the comparators always use all)')
    p.add_argument(
        '--preset-n-iter',
        type=int,
        help='check: iterations of the preset\'s own runs (default '
        '--n-iter; SEA-T2 at --n-iter 100: 250), read from that cache; '
        'the comparators and the union stay at --n-iter')
    p.add_argument('--cache', default=CACHE)
    p.add_argument('--out', default=osp.join(HERE, 'results'))
    return p.parse_args(argv)


def _path(args, model, seed, eps, member, n_iter=None):
    safe = member.replace(':', '-')
    return osp.join(args.cache, f'n{n_iter or args.n_iter}', model,
                    f'seed{seed}_eps{eps:g}_{safe}.pt')


def _longer(member, n_iter):
    """The name of ``member``'s runs at ``n_iter`` iterations inside a cell
    of shorter ones (``check --preset-n-iter``)."""
    return f'{member}/n{n_iter}'


def areas(pred, y, num_classes):
    """Per image: correct pixels, and per-class intersection and prediction
    areas over valid pixels (``(B,)``, ``(B, K)``, ``(B, K)``)."""
    valid = y != 255
    hit = (pred == y) & valid
    K = num_classes
    onehot_p = torch.nn.functional.one_hot(torch.where(valid, pred, 0),
                                           K).bool() & valid[..., None]
    onehot_y = torch.nn.functional.one_hot(torch.where(valid, y, 0),
                                           K).bool() & valid[..., None]
    inter = (onehot_p & onehot_y).flatten(1, 2).sum(1)
    return hit.flatten(1).sum(1), inter, onehot_p.flatten(1, 2).sum(1), \
        onehot_y.flatten(1, 2).sum(1)


def run(args):
    torch.set_num_threads(args.threads)
    from bench_strength import image_seeds, load

    from mmseg_robust.attacks import SEA, class_weights_from_counts
    for name in args.models:
        model, x, y, mask, counts = load(name)
        K = len(counts)
        weights = class_weights_from_counts(counts.float())
        for seed in args.seeds:
            seeds = image_seeds(seed, x.shape[0])
            for eps in args.eps:
                for member in args.members:
                    path = _path(args, name, seed, eps, member)
                    if osp.isfile(path):
                        continue
                    t0 = time.perf_counter()
                    res = SEA(
                        model,
                        eps / 255,
                        n_iter=args.n_iter,
                        attacks=[member],
                        class_weights=weights,
                        skip_broken=False,
                        check_model=False).run(
                            x, y, mask=mask, seed=seeds)
                    correct, inter, pred_area, label_area = areas(
                        res.pred, y, K)
                    os.makedirs(osp.dirname(path), exist_ok=True)
                    torch.save(
                        dict(
                            correct=correct,
                            inter=inter,
                            pred_area=pred_area,
                            label_area=label_area,
                            seconds=time.perf_counter() - t0), path)
                    print(
                        f'[{name}] seed {seed} {eps:g}/255 {member}: '
                        f'{100 * float(correct.sum() / label_area.sum()):.2f}'
                        f' aAcc ({time.perf_counter() - t0:.0f} s)',
                        flush=True)


def _load_cells(args, members, longer=()):
    """``cells[(model, eps)][seed] = Cell`` for every cell and seed where
    all ``members`` are cached, and the runs ``longer`` (``(member,
    n_iter)``) as members named :func:`_longer`."""
    cells = {}
    wanted = [(m, m, None) for m in members] + [(_longer(m, n), m, n)
                                                for m, n in longer]
    for name in args.models:
        for eps in args.eps:
            per_seed = {}
            for seed in args.seeds:
                recs = {}
                for key, m, n in wanted:
                    path = _path(args, name, seed, eps, m, n)
                    if osp.isfile(path):
                        recs[key] = torch.load(path, weights_only=True)
                if len(recs) == len(wanted):
                    per_seed[seed] = Cell(recs)
            if per_seed:
                cells[(name, eps)] = per_seed
    return cells


class Cell:
    """One seed of one (model, radius) cell: every member's per-image
    results stacked, so that any ensemble is scored by one gather."""

    def __init__(self, recs: dict):
        self.members = {m: k for k, m in enumerate(recs)}
        self.correct = torch.stack([r['correct'] for r in recs.values()])
        self.inter = torch.stack([r['inter'] for r in recs.values()]).double()
        self.pred_area = torch.stack([r['pred_area']
                                      for r in recs.values()]).double()
        self.label_area = next(iter(recs.values()))['label_area'].double()
        self._cache = {}

    def score(self, ensemble) -> dict:
        """aAcc and mIoU (%) of the per-image worst case over
        ``ensemble`` (the first member wins ties, as in SEA)."""
        key = tuple(ensemble)
        if key not in self._cache:
            rows = torch.tensor([self.members[m] for m in ensemble])
            stack = self.correct[rows]  # (E, B)
            pick = rows[stack.argmin(0)]  # first minimum, (B,)
            b = torch.arange(stack.shape[1])
            inter = self.inter[pick, b].sum(0)
            pred_area = self.pred_area[pick, b].sum(0)
            label_area = self.label_area.sum(0)
            union = pred_area + label_area - inter
            present = union > 0
            self._cache[key] = dict(
                aAcc=100 *
                float(stack.min(0).values.double().sum() / label_area.sum()),
                mIoU=100 * float((inter[present] / union[present]).mean()))
        return self._cache[key]


def comparators(members):
    """The ensembles an ensemble must be at or below: the published
    versions and every single member of their losses (of ``members``)."""
    out = dict(PUBLISHED)
    for m in members:
        if m.split(':')[-1] in SEA_LOSSES:
            out[m] = (m, )
    return out


def margins(cells, ensemble, comps, metric='aAcc'):
    """Per cell: for each comparator, mean and SE over seeds of ensemble -
    comparator; and the cell's worst (largest) mean - SE."""
    table = {}
    for (name, eps), per_seed in cells.items():
        row = {}
        for cname, comp in comps.items():
            diffs = [
                cell.score(ensemble)[metric] - cell.score(comp)[metric]
                for cell in per_seed.values()
            ]
            mean = statistics.mean(diffs)
            se = statistics.stdev(diffs) / len(diffs)**0.5 if len(
                diffs) > 1 else 0.0
            row[cname] = dict(mean=mean, se=se, n=len(diffs))
        worst = max(row.values(), key=lambda r: r['mean'] - r['se'])
        table[f'{name} {eps:g}'] = dict(
            comparators=row,
            worst_mean_minus_se=worst['mean'] - worst['se'],
            ensemble=statistics.mean(
                cell.score(ensemble)[metric] for cell in per_seed.values()))
    return table


def search(args):
    members = list(args.members)
    cells = _load_cells(args, members)
    comps = comparators(members)
    ranked = []
    for ens in itertools.combinations(args.candidates or members, args.size):
        table = margins(cells, ens, comps)
        worst = max(r['worst_mean_minus_se'] for r in table.values())
        mean_acc = statistics.mean(r['ensemble'] for r in table.values())
        ranked.append((worst, mean_acc, ens))
    ranked.sort()
    for worst, mean_acc, ens in ranked[:15]:
        print(f'{worst:+.3f} worst margin - SE   mean aAcc {mean_acc:.3f}  '
              f'{" ".join(ens)}')
    print(f'{len(cells)} cells, {len(ranked)} ensembles')
    return dict(
        cells=sorted(f'{n} {e:g}' for n, e in cells),
        ranked=[
            dict(worst=w, mean_aAcc=m, ensemble=list(e)) for w, m, e in ranked
        ])


def check(args):
    preset = tuple(args.preset)
    first = tuple(m for m, k in _runs(preset) if k == 0)
    members = sorted(set(args.members) | set(first))
    longer = ()
    n = args.preset_n_iter
    if n is not None and n < 1:
        raise SystemExit(f'--preset-n-iter {n}: must be >= 1')
    if n and n != args.n_iter:
        # the preset's runs are longer ones, beside the others' at --n-iter
        # (every member, also one that is only restarted)
        longer = tuple(
            (m, n) for m in dict.fromkeys(_runs_members(args.preset)))
        first = tuple(_longer(m, n) for m in first)
        preset = tuple(
            _longer(m, n) + (f'#{k + 1}' if k else '')
            for m, k in _runs(preset))
    cells = _load_cells(args, members, longer)
    comps = comparators(members)
    out = {}
    for metric in ('aAcc', 'mIoU'):
        # against the comparators: the preset's first starts (a preset
        # with restarts is scored here without them)
        out[metric] = margins(cells, first, comps, metric)
    # the union over everything measured at --n-iter: every member asked
    # for and the preset's own (a cell where the preset's restarts need
    # more seeds than were measured is left out)
    everything = sorted(set(args.members) | set(_runs_members(args.preset)))
    out['union'] = union_gap(
        _load_cells(args, everything, longer), preset, base=everything)
    for key, row in out['aAcc'].items():
        worst = max(
            row['comparators'].items(),
            key=lambda kv: kv[1]['mean'] - kv[1]['se'])
        gap = out['union'].get(key)
        union = 'too few seeds for the union' if gap is None else (
            f'above the union of {gap["n_runs"]} runs by '
            f'{gap["mean_gap"]:.2f} (max {gap["max_gap"]:.2f}) aAcc, '
            f'{gap["mean_gap_mIoU"]:.2f} (max {gap["max_gap_mIoU"]:.2f}) mIoU')
        print(f'{key:>28}: {args.name} {row["ensemble"]:.2f} aAcc; '
              f'closest comparator {worst[0]} '
              f'{worst[1]["mean"]:+.3f} +- {worst[1]["se"]:.3f}; {union}')
    return out


def _runs(ensemble):
    """``(member, start)`` per attack name: ``NAME#K`` is member NAME from
    its K-th random start (start ``K - 1``; a bare name is start 0)."""
    out = []
    for name in ensemble:
        member, _, k = name.partition('#')
        out.append((member, int(k) - 1 if k else 0))
    return out


def _runs_members(ensemble):
    return [m for m, _ in _runs(ensemble)]


def _worst_case(runs):
    """aAcc and mIoU (%) of the per-image worst case over ``runs``, a list
    of ``(cell, member)``: per image the run with the fewest correct pixels
    (the first on ties, as in SEA), its areas entering mIoU."""
    correct = torch.stack([c.correct[c.members[m]] for c, m in runs])
    pick = correct.argmin(0)  # (B,)
    b = torch.arange(correct.shape[1])
    inter = torch.stack([c.inter[c.members[m]] for c, m in runs])[pick, b]
    pred = torch.stack([c.pred_area[c.members[m]] for c, m in runs])[pick, b]
    label = runs[0][0].label_area
    union = pred.sum(0) + label.sum(0) - inter.sum(0)
    present = union > 0
    return dict(
        aAcc=100 * float(correct.amin(0).double().sum() / label.sum()),
        mIoU=100 * float((inter.sum(0)[present] / union[present]).mean()))


def union_gap(cells, ensemble, base=None) -> dict:
    """Per cell: aAcc and mIoU of ``ensemble`` minus those of the per-image
    worst case over everything measured in the cell (every member at every
    seed: all members, both schedules, both published versions, several
    restarts).

    A restart ``NAME#K`` in ``ensemble`` is member NAME from another random
    start: a measured seed's run of NAME (that member with other per-image
    starts). The ensemble is scored on every ordered choice of distinct
    seeds for its starts; ``mean_gap`` and ``max_gap`` (aAcc) and
    ``mean_gap_mIoU`` / ``max_gap_mIoU`` are over those choices. ``base``:
    the members the union is taken over (default: all of the cell's; the
    preset's longer runs are not in it)."""
    runs = _runs(ensemble)
    n_starts = 1 + max(k for _, k in runs)
    table = {}
    for (name, eps), per_seed in cells.items():
        seeds = list(per_seed.values())
        if len(seeds) < n_starts:
            continue
        members = list(base or seeds[0].members)
        union = _worst_case([(c, m) for c in seeds for m in members])
        gaps = {'aAcc': [], 'mIoU': []}
        for group in itertools.permutations(seeds, n_starts):
            worst = _worst_case([(group[k], m) for m, k in runs])
            for metric, values in gaps.items():
                values.append(worst[metric] - union[metric])
        table[f'{name} {eps:g}'] = dict(
            union=union['aAcc'],
            union_mIoU=union['mIoU'],
            mean_gap=statistics.mean(gaps['aAcc']),
            max_gap=max(gaps['aAcc']),
            mean_gap_mIoU=statistics.mean(gaps['mIoU']),
            max_gap_mIoU=max(gaps['mIoU']),
            n_seeds=len(seeds),
            n_runs=len(seeds) * len(members))
    return table


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, HERE)
    if args.command == 'run':
        return run(args)
    result = search(args) if args.command == 'search' else check(args)
    path = osp.join(args.out, 'bench_preset.json')
    payload = {}
    if osp.isfile(path):
        with open(path) as f:
            payload = json.load(f)
    key = args.command if args.command == 'search' else args.name
    payload.pop('machine', None)
    payload.pop('date', None)
    payload[key] = dict(
        result,
        settings={
            k: v
            for k, v in vars(args).items() if k != 'command'
        })
    print(f'wrote {write_json("bench_preset", payload, args.out)}')


if __name__ == '__main__':
    sys.exit(main())
