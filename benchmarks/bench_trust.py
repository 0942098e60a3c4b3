"""The trust report (issue #21, item 1): its verdicts on honest and broken
models, and what it costs beside an ``--eval sea`` run.

    python benchmarks/bench_trust.py verdicts [--model texture_clean]
        [--eps 8] [--n-iter 100] [--level fast] [--seed 1] [--threads 1]
    python benchmarks/bench_trust.py overhead CONFIG CKPT [--work-dir DIR]
        [--max-images 4] [--repeats 1] [--extra "MORE tools/test.py OPTIONS"]

``verdicts``: SEA (the default preset, ``--n-iter`` iterations, per-image
seeds) on the benchmarks' texture U-Net and on three broken copies of it
(the tests' ``Shattered``, ``Stochastic`` and ``Vanishing`` of
``tests/tiny_models.py``), then ``trust_checks`` against
SEA's per-image worst case; prints each report.

``overhead``: ``tools/test.py CONFIG CKPT --eval sea`` (its defaults unless
EXTRA says otherwise) with ``--checks none`` and with the default fast
checks, alternating, ``--repeats`` times each (``--extra``: more options,
one string); the wall time of each run and
the attack and check seconds per image its ``summary.json`` reports.

Both write ``benchmarks/results/bench_trust.json`` (one entry per setting,
replaced on a rerun).
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import shlex
import subprocess
import sys
import time

import torch
from _common import ROOT, machine, read_runs, replace_run, write_json

HERE = osp.dirname(osp.abspath(__file__))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='part', required=True)
    v = sub.add_parser('verdicts')
    v.add_argument('--model', default='texture_clean')
    v.add_argument('--eps', type=float, default=8)
    v.add_argument('--n-iter', type=int, default=100)
    v.add_argument('--level', default='fast')
    v.add_argument('--seed', type=int, default=1)
    v.add_argument('--threads', type=int, default=1)
    o = sub.add_parser('overhead')
    o.add_argument('config')
    o.add_argument('checkpoint')
    o.add_argument(
        '--work-dir',
        default=osp.join(ROOT, 'work_dirs', 'bench', 'trust_overhead'))
    o.add_argument('--max-images', type=int, default=4)
    o.add_argument('--repeats', type=int, default=1)
    o.add_argument('--label', default=None)
    o.add_argument('--extra', default='')
    p.add_argument('--out', default=osp.join(HERE, 'results'))
    return p.parse_args(argv)


def _broken_models():
    """The tests' broken models, loaded from their file (the tests are not
    a package on the benchmarks' path)."""
    path = osp.join(ROOT, 'tests', 'tiny_models.py')
    spec = importlib.util.spec_from_file_location('tiny_models', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def verdicts(args) -> dict:
    from bench_strength import image_seeds, load

    from mmseg_robust.attacks import SEA, trust_checks
    torch.set_num_threads(args.threads)
    broken = _broken_models()
    net, x, y, mask, _ = load(args.model)
    models = {
        args.model: net,
        'shattered': broken.Shattered(net).eval(),
        'stochastic': broken.Stochastic(net).eval(),
        'vanishing': broken.Vanishing(net).eval(),
    }
    seeds = image_seeds(args.seed, x.shape[0])
    eps = args.eps / 255
    out = {}
    for name, model in models.items():
        torch.manual_seed(args.seed)  # the stochastic model's draws
        t0 = time.perf_counter()
        res = SEA(
            model, eps, n_iter=args.n_iter, check_model=False).run(
                x, y, mask=mask, seed=seeds)
        t_sea = time.perf_counter() - t0
        report = trust_checks(
            model,
            x,
            y,
            eps,
            level=args.level,
            worst=res.correct,
            seed=seeds,
            mask=mask)
        valid = res.valid.sum().item()
        print(f'\n== {name}: clean aAcc '
              f'{100 * res.clean_correct.sum().item() / valid:.2f}%, SEA '
              f'worst {100 * res.correct.sum().item() / valid:.2f}% '
              f'({t_sea:.1f} s)')
        print(report.format())
        out[name] = dict(
            clean_acc=100 * res.clean_correct.sum().item() / valid,
            sea_acc=100 * res.correct.sum().item() / valid,
            sea_seconds=t_sea,
            sea_passes=sum(r.n_evals for r in res.attacks.values()),
            report=report.to_dict())
    return out


def _run_test(args, checks: str, work: str) -> dict:
    cmd = [
        sys.executable, 'tools/test.py', args.config, args.checkpoint,
        '--eval', 'sea', '--work-dir', work, '--max-images',
        str(args.max_images), '--checks', checks
    ] + shlex.split(args.extra)
    t0 = time.perf_counter()
    with open(osp.join(work, 'test.log'), 'w') as log:
        proc = subprocess.run(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f'{" ".join(cmd)} failed, see {work}/test.log')
    with open(osp.join(work, 'sea', 'summary.json')) as f:
        summary = json.load(f)
    trust = summary.get('trust') or {}
    cost = trust.get('cost', {})
    n = max(cost.get('n_images', 0), 1)
    return dict(
        checks=checks,
        wall_seconds=wall,
        attack_seconds_per_image=summary['timing']['attack_seconds_per_image'],
        check_seconds_per_image=cost.get('seconds', 0) / n,
        check_passes_per_image=(cost.get('grad', 0) +
                                cost.get('forward', 0) / 3) / n,
        attack_passes_per_image=cost.get('attack_grad', 0) / n,
        flagged=trust.get('flagged'),
        cmd=' '.join(cmd[1:]))


def overhead(args) -> dict:
    runs = []
    for r in range(args.repeats):
        for checks in ('none', 'fast'):
            work = osp.join(args.work_dir, f'{checks}_{r}')
            os.makedirs(work, exist_ok=True)
            run = _run_test(args, checks, work)
            print(json.dumps(run))
            runs.append(run)
    by = {
        c: [r['wall_seconds'] for r in runs if r['checks'] == c]
        for c in ('none', 'fast')
    }
    best = {c: min(v) for c, v in by.items()}
    ratio = best['fast'] / best['none']
    print(f'wall: --checks none {best["none"]:.1f} s, fast '
          f'{best["fast"]:.1f} s (x {ratio:.3f})')
    return dict(runs=runs, best_wall=best, ratio=ratio)


def main(argv=None):
    args = parse_args(argv)
    entries = read_runs('bench_trust', args.out)
    if args.part == 'verdicts':
        result = verdicts(args)
        key = dict(
            part='verdicts',
            model=args.model,
            eps=args.eps,
            n_iter=args.n_iter,
            level=args.level,
            seed=args.seed)
    else:
        result = overhead(args)
        key = dict(
            part='overhead',
            label=args.label or osp.basename(args.config),
            max_images=args.max_images,
            extra=args.extra)
    entry = dict(settings=key, result=result, machine=machine())
    entries = replace_run(entries, entry, lambda s: s)
    write_json('bench_trust', dict(runs=entries), args.out)


if __name__ == '__main__':
    main()
