"""The main job on an embedded default: clean vs adversarially trained
segmentation on real microscopy images, evaluated with SEA.

    python tools/demo.py [--work-dir work_dirs/demo] [--save-docs docs]

1. builds a small real dataset from the PyPI package ``ndev-sampledata``
   (scratch-assay frames, 3 classes) in MMSeg's layout;
2. trains a toy UPerNet + ConvNeXt twice with ``tools/train.py``: clean, and
   with ``AdvTrainingHook`` (PGD AT^2 at 4/255);
3. evaluates both with ``tools/test.py --eval sea`` at several radii, with
   SEA and the PGD / SegPGD / CosPGD baselines at the same iteration budget;
4. prints the comparison, where the models break (per-image mIoU and
   accuracy by object size) and the trust report of each SEA evaluation
   (docs/evaluation.md, "Can I trust this number?"), draws the robustness
   curves, the curves by object size and a Figure-1 style picture
   (``tools/visualize_attack.py``).

Trained checkpoints and finished evaluations are reused on a second run.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

from mmseg_robust.attacks import BASELINE_ATTACKS, TrustReport, sea_version

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
CONFIGS = {
    'clean':
    'configs/demo/'
    'upernet_convnext-demo_clean_1xb8-400it_scratch-assay-64x64.py',
    'AT^2':
    'configs/demo/'
    'upernet_convnext-demo_at2_1xb8-400it_scratch-assay-64x64.py',
}
# SEA's default preset (SEA-R1), as --eval sea runs it
SEA_VERSION = sea_version(None)
SEA_ATTACKS = list(SEA_VERSION.attacks)
BASELINES = list(BASELINE_ATTACKS)  # PGD, SegPGD, CosPGD
# differences below this (points of aAcc / mIoU) count as ties in the checks
TIE = 0.1
# part of an evaluation's folder name: results of an earlier format (without
# object sizes) are not reused
RESULTS_FORMAT = 'sizes'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument(
        '--eps',
        type=float,
        nargs='+',
        default=[1, 2, 4, 8, 16],
        help='radii in units of 1/255')
    p.add_argument(
        '--n-iter',
        type=int,
        default=20,
        help='iterations of every attack (SEA and baselines)')
    p.add_argument(
        '--max-iters',
        type=int,
        default=None,
        help='training iterations (default: the configs\')')
    p.add_argument(
        '--max-images',
        type=int,
        default=None,
        help='evaluate only the first N validation tiles')
    p.add_argument(
        '--target-class',
        default='background',
        help='target of the targeted attack in the picture')
    p.add_argument(
        '--retrain',
        action='store_true',
        help='train again even if checkpoints exist')
    p.add_argument(
        '--save-docs',
        metavar='DIR',
        help='also write the pictures and the table to DIR')
    p.add_argument(
        '--compare-independent',
        action='store_true',
        help='also run SEA with every radius from scratch and '
        'report the time the chained radii save')
    return p.parse_args(argv)


def _run(cmd, log_path):
    """Run a tool in a subprocess (the same code path as a user's command
    line), its output going to ``log_path``; fail loudly with its tail."""
    t0 = time.perf_counter()
    with open(log_path, 'w') as log:
        proc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode:
        with open(log_path) as log:
            tail = log.read()[-3000:]
        raise SystemExit(f'error: {" ".join(cmd)} failed:\n{tail}')
    return time.perf_counter() - t0


def _data_options(data_root):
    return [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]


def train(name, config, work_dir, data_root, args):
    out = osp.join(work_dir, 'train', _slug(name))
    ckpt = osp.join(out, 'final.pth')
    if osp.isfile(ckpt) and not args.retrain:
        print(f'[{name}] reusing {ckpt}')
        return ckpt, 0.0
    opts = _data_options(data_root) + ['log_level=INFO']
    if args.max_iters:
        opts += [
            f'train_cfg.max_iters={args.max_iters}',
            f'train_cfg.val_interval={args.max_iters}',
            f'default_hooks.checkpoint.interval={args.max_iters}'
        ]
    print(f'[{name}] training with tools/train.py {config} ...', flush=True)
    os.makedirs(out, exist_ok=True)
    seconds = _run([
        sys.executable, 'tools/train.py', config, '--work-dir', out,
        '--cfg-options'
    ] + opts, osp.join(out, 'train.log'))
    with open(osp.join(out, 'last_checkpoint')) as f:
        shutil.copy(f.read().strip(), ckpt)
    print(f'[{name}] trained in {seconds:.0f} s -> {ckpt}')
    return ckpt, seconds


def _eval_dir(name, kind, work_dir, args, ckpt):
    """The folder of one evaluation, named by its settings."""
    attacks = BASELINES if kind == 'baselines' else SEA_ATTACKS
    settings = [
        args.eps, args.n_iter, attacks, args.max_images,
        osp.getmtime(ckpt), kind, RESULTS_FORMAT
    ]
    if kind == 'sea':
        # SEA's evaluation carries the trust report (earlier ones do not)
        settings.append('trust')
    settings = json.dumps(settings)
    tag = hashlib.sha1(settings.encode()).hexdigest()[:8]
    return osp.join(work_dir, 'eval', f'{_slug(name)}_{kind}_{tag}')


def _evaluate_once(name, kind, config, ckpt, work_dir, data_root, args):
    """One ``tools/test.py --eval sea`` run; reused if already complete.
    ``kind``: ``'sea'``, ``'sea_independent'`` (every radius from
    scratch) or ``'baselines'``. Returns the metrics, the seconds and the
    trust report (``summary.json``'s ``trust``: SEA's evaluation runs the
    fast checks, the others none)."""
    attacks = BASELINES if kind == 'baselines' else SEA_ATTACKS
    out = _eval_dir(name, kind, work_dir, args, ckpt)
    summary = osp.join(out, 'sea', 'summary.json')
    if osp.isfile(summary):
        print(f'[{name}] reusing {summary}')
        with open(summary) as f:
            done = json.load(f)
        return done['metrics'], 0.0, done.get('trust')
    cmd = [
        sys.executable, 'tools/test.py', config, ckpt, '--eval', 'sea',
        '--work-dir', out, '--eps'
    ] + [f'{e:g}'
         for e in args.eps] + ['--n-iter', str(args.n_iter)]
    if kind == 'baselines':
        cmd += ['--attacks'] + attacks
    else:  # named, so summary.json and the tables say which preset
        cmd += ['--sea-version', SEA_VERSION.name]
    cmd += ['--resume', '--cfg-options'] + _data_options(data_root)
    if kind == 'baselines':
        cmd.append('--no-skip')  # standalone numbers for every baseline
    if kind == 'sea_independent':
        cmd.append('--independent-radii')
    if kind != 'sea':
        cmd += ['--checks', 'none']  # the report goes with SEA's numbers
    if any(0 < e < 1 for e in args.eps):
        cmd.append('--allow-tiny-eps')  # e.g. --eps 0.5 means 0.5/255
    if args.max_images:
        cmd += ['--max-images', str(args.max_images)]
    os.makedirs(out, exist_ok=True)
    what = {
        'sea': 'SEA',
        'sea_independent': 'SEA, independent radii',
        'baselines': 'PGD, SegPGD, CosPGD'
    }[kind]
    print(f'[{name}] {what} with tools/test.py --eval sea ...', flush=True)
    seconds = _run(cmd, osp.join(out, 'test.log'))
    with open(summary) as f:
        done = json.load(f)
    print(f'[{name}] {what}: {seconds:.0f} s')
    return done['metrics'], seconds, done.get('trust')


def _attack_seconds(name, kind, work_dir, args, ckpt):
    """Attack time per image of a finished evaluation (its summary), so a
    reused evaluation still reports what it cost."""
    path = osp.join(
        _eval_dir(name, kind, work_dir, args, ckpt), 'sea', 'summary.json')
    with open(path) as f:
        return json.load(f)['timing']['attack_seconds_per_image']


def evaluate(name, config, ckpt, work_dir, data_root, args):
    """SEA (its worst case over its four attacks) and, separately, the
    baselines at the same iteration budget."""
    sea, t_sea, trust = _evaluate_once(name, 'sea', config, ckpt, work_dir,
                                       data_root, args)
    base, t_base, _ = _evaluate_once(name, 'baselines', config, ckpt, work_dir,
                                     data_root, args)
    metrics = dict(sea)
    metrics.update({
        k: v
        for k, v in base.items() if any(f'/{b}/' in k for b in BASELINES)
    })
    out = dict(
        metrics=metrics,
        trust=trust,
        sea_seconds_per_image=_attack_seconds(name, 'sea', work_dir, args,
                                              ckpt))
    t_ind = 0.0
    if args.compare_independent:
        ind, t_ind, _ = _evaluate_once(name, 'sea_independent', config, ckpt,
                                       work_dir, data_root, args)
        out['independent'] = ind
        out['independent_seconds_per_image'] = _attack_seconds(
            name, 'sea_independent', work_dir, args, ckpt)
    return out, t_sea + t_base + t_ind


def _slug(name):
    return name.lower().replace('^', '').replace(' ', '_')


def comparison_table(results, eps):
    """Rows: radii; per model: SEA's worst-case aAcc/mIoU and those of the
    strongest baseline (the lowest of PGD, SegPGD, CosPGD)."""
    from prettytable import PrettyTable
    t = PrettyTable()
    t.field_names = ['eps'] + [
        f'{name} {col}' for name in results
        for col in ('SEA aAcc', 'SEA mIoU', 'baseline aAcc', 'baseline mIoU')
    ]
    rows = []
    for e in [0.0] + list(eps):
        row = ['clean' if e == 0 else f'{e:g}/255']
        for name, res in results.items():
            m = res['metrics']
            if e == 0:
                row += [m['sea/clean/aAcc'], m['sea/clean/mIoU'], '', '']
            else:
                k = f'sea/eps{e:g}'
                row += [
                    m[f'{k}/worst/aAcc'], m[f'{k}/worst/mIoU'],
                    min(m[f'{k}/{b}/aAcc'] for b in BASELINES),
                    min(m[f'{k}/{b}/mIoU'] for b in BASELINES)
                ]
        row = [f'{v:.2f}' if isinstance(v, float) else v for v in row]
        t.add_row(row)
        rows.append(row)
    return t, rows


def size_table(results, eps):
    """Where the models break: rows radii; per model SEA's worst-case
    per-image mIoU and pixel accuracy of small, medium and large objects
    (buckets without pixels left out)."""
    from prettytable import PrettyTable

    from mmseg_robust.evaluation import SIZE_BUCKETS
    first = next(iter(results.values()))['metrics']
    buckets = [b for b in SIZE_BUCKETS if first.get(f'sea/n_px_{b}')]
    t = PrettyTable()
    t.field_names = ['eps'] + [
        f'{name} {col}' for name in results for col in ['mIoU/img'] + buckets
    ]
    rows = []
    for e in [0.0] + list(eps):
        key = 'sea/clean' if e == 0 else f'sea/eps{e:g}/worst'
        row = ['clean' if e == 0 else f'{e:g}/255']
        for res in results.values():
            m = res['metrics']
            row += [
                m.get(f'{key}/{k}')
                for k in ['mImgIoU'] + [f'aAcc_{b}' for b in buckets]
            ]
        row = [
            f'{v:.2f}' if isinstance(v, float) else ('-' if v is None else v)
            for v in row
        ]
        t.add_row(row)
        rows.append(row)
    return t, rows


def size_text(results):
    """The buckets and how many objects and pixels the tiles have in
    each."""
    from mmseg_robust.evaluation import SIZE_BUCKETS
    from mmseg_robust.evaluation.metrics.sea_metric import size_bucket_text
    m = next(iter(results.values()))['metrics']
    total = sum(m.get(f'sea/n_px_{b}', 0) for b in SIZE_BUCKETS) or 1
    counts = ', '.join(
        f'{b} {m.get(f"sea/n_objects_{b}", 0)} objects '
        f'({100 * m.get(f"sea/n_px_{b}", 0) / total:.1f}% of the pixels)'
        for b in SIZE_BUCKETS)
    return (size_bucket_text().replace('\n  ', ' ') +
            f'.\nValidation tiles: {counts}.')


def checks(results, eps):
    """The demo's claims, checked on its own numbers."""
    out = []
    at, clean = results['AT^2']['metrics'], results['clean']['metrics']
    radii = sorted(eps)
    for metric in ('aAcc', 'mIoU'):
        ok = all(m[f'sea/eps{b:g}/worst/{metric}'] <=
                 m[f'sea/eps{a:g}/worst/{metric}'] <= m[f'sea/clean/{metric}']
                 for m in (at, clean) for a, b in zip(radii, radii[1:]))
        out.append((ok, f'SEA worst-case {metric} never increases with the '
                    'radius (both models)'))
    if 4 in eps:
        a, c = at['sea/eps4/worst/mIoU'], clean['sea/eps4/worst/mIoU']
        out.append((a > c + 5, f'AT^2 worst-case mIoU at 4/255 ({a:.1f}) '
                    f'clearly above the clean model\'s ({c:.1f})'))
    models = {'AT^2': at, 'clean': clean}
    for metric in ('aAcc', 'mIoU'):
        # largest amount by which SEA's worst case exceeds a baseline
        excess, where = max(
            (m[f'sea/eps{e:g}/worst/{metric}'] -
             m[f'sea/eps{e:g}/{b}/{metric}'], f'{name}, {e:g}/255, {b}')
            for name, m in models.items() for e in eps for b in BASELINES)
        text = (f'SEA worst-case {metric} at or below every baseline (PGD, '
                'SegPGD, CosPGD) at every radius, for both models')
        if excess > 0:
            # ties: on a smooth (AT) model all attacks land within a few
            # hundredths of a point; the paper reports one decimal
            text += (f', within {TIE:g} points (largest excess: '
                     f'{excess:.2f} points, {where})')
        out.append((excess <= TIE, text))
    flagged = [
        n for n, r in results.items()
        if (r.get('trust') or {}).get('flagged', True)
    ]
    out.append(
        (not flagged, 'the trust report (fast checks) flags neither '
         'model' +
         (f' (flagged or missing: {", ".join(flagged)})' if flagged else '')))
    return out


def trust_text(results):
    """The trust report of each model's SEA evaluation, as tables."""
    lines = []
    for name, r in results.items():
        if r.get('trust'):
            lines.append(f'[{name}] ' +
                         TrustReport.from_dict(r['trust']).format())
        else:
            lines.append(f'[{name}] no trust report (evaluated with '
                         '--checks none or by an earlier version)')
    return '\n'.join(lines)


def chaining_report(results):
    """Attack time per image with chained radii (and, with
    ``--compare-independent``, with every radius from scratch)."""
    lines = []
    for name, res in results.items():
        t = res['sea_seconds_per_image']
        line = (f'{name}: SEA over all radii {t:.2f} s per image with '
                'chained radii')
        if 'independent_seconds_per_image' in res:
            ti = res['independent_seconds_per_image']
            line += (f', {ti:.2f} s with independent radii (saving '
                     f'{100 * (1 - t / ti):.0f}%)')
        lines.append(line)
    return lines


def plot(results, path):
    """mIoU vs eps: SEA's worst case and each baseline, for both models."""
    from mmseg_robust.visualization import plot_robustness_curves
    return plot_robustness_curves(
        {
            name: res['metrics']
            for name, res in results.items()
        },
        path, 'Clean vs adversarially trained (AT^2) toy UPerNet + ConvNeXt, '
        'scratch-assay validation tiles',
        outputs={name: ['worst'] + BASELINES
                 for name in results},
        colors={
            'clean': 'tab:red',
            'AT^2': 'tab:blue'
        },
        dpi=90)


def plot_by_size(results, path):
    """Accuracy by object size and mIoU (pooled, per image) vs eps: SEA's
    worst case, for both models."""
    from mmseg_robust.visualization import plot_robustness_by_size
    return plot_robustness_by_size(
        {
            name: res['metrics']
            for name, res in results.items()
        },
        path, 'Where the toy models break: SEA worst case by object size, '
        'scratch-assay validation tiles',
        colors={
            'clean': 'tab:red',
            'AT^2': 'tab:blue'
        },
        dpi=90)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    work_dir = osp.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    from mmseg_robust.datasets import prepare_scratch_assay
    data_root = prepare_scratch_assay(osp.join(work_dir, 'data'))
    timing, ckpts, results = {}, {}, {}
    for name, config in CONFIGS.items():
        ckpts[name], timing[f'train {name}'] = train(name, config, work_dir,
                                                     data_root, args)
    for name, config in CONFIGS.items():
        results[name], timing[f'evaluate {name}'] = evaluate(
            name, config, ckpts[name], work_dir, data_root, args)

    table, _ = comparison_table(results, args.eps)
    print(f'\n{SEA_VERSION.name} worst case and the strongest of PGD / '
          'SegPGD / CosPGD '
          f'(aAcc / mIoU %), {args.n_iter} iterations per attack, '
          f'{results["clean"]["metrics"]["sea/n_images"]} validation tiles:')
    print(table)
    for line in chaining_report(results):
        print(line)
    claims = checks(results, args.eps)
    for ok, text in claims:
        print(('[ok]   ' if ok else '[FAIL] ') + text)
    sizes, _ = size_table(results, args.eps)
    print('\nWhere the models break: SEA worst case, per-image mIoU and '
          'pixel accuracy by object size (%).\n' + size_text(results))
    print(sizes)
    print('\nCan these numbers be trusted? The trust report of each SEA '
          'evaluation (docs/evaluation.md):\n' + trust_text(results))

    curve = plot(results, osp.join(work_dir, 'demo_robustness_curve.png'))
    by_size = plot_by_size(results,
                           osp.join(work_dir, 'demo_robustness_by_size.png'))
    val_dir = osp.join(data_root, 'img_dir', 'val')
    image = osp.join(val_dir, sorted(os.listdir(val_dir))[0])
    panel = osp.join(work_dir, 'demo_attack_panel.png')
    t0 = time.perf_counter()
    _run([
        sys.executable, 'tools/visualize_attack.py', CONFIGS['clean'],
        ckpts['clean'], image, '--model', CONFIGS['AT^2'], ckpts['AT^2'],
        '--names', 'clean', 'AT^2', '--target-class', args.target_class,
        '--eps', '4', '--n-iter',
        str(args.n_iter), '--out', panel
    ], osp.join(work_dir, 'visualize.log'))
    timing['picture'] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    print(f'\npictures: {curve}\n          {by_size}\n          {panel}')
    print('time (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in timing.items()) +
          f', total {total:.0f}')
    if args.save_docs:
        _save_docs(args, results, table, claims, [curve, by_size, panel],
                   timing, total, sizes)
    return dict(results=results, claims=claims, timing=timing, total=total)


def _markdown(table):
    """A GitHub table by hand: PrettyTable's markdown style varies by
    version."""
    md = [
        '| ' + ' | '.join(table.field_names) + ' |',
        '|' + '---|' * len(table.field_names)
    ]
    return md + [
        '| ' + ' | '.join(str(c) for c in row) + ' |' for row in table.rows
    ]


def _save_docs(args, results, table, claims, pictures, timing, total, sizes):
    os.makedirs(args.save_docs, exist_ok=True)
    for path in pictures:
        shutil.copy(path, osp.join(args.save_docs, osp.basename(path)))
    lines = [
        '<!-- written by tools/demo.py --save-docs -->',
        f'{SEA_VERSION.name} worst case and the strongest of PGD / SegPGD / '
        'CosPGD (aAcc / '
        f'mIoU %), {args.n_iter} iterations per attack, '
        f'{results["clean"]["metrics"]["sea/n_images"]} validation tiles:', ''
    ] + _markdown(table) + [''] + [
        ('- [ok] ' if ok else '- [FAIL] ') + text for ok, text in claims
    ] + [''] + [f'- {line}' for line in chaining_report(results)]
    lines += [
        '', 'Where the models break: SEA worst case, per-image mIoU and '
        'pixel accuracy by object size (%). ' +
        size_text(results).replace('\n', ' '), ''
    ] + _markdown(sizes)
    steps = ', '.join(f'{k} {v:.0f} s' if v else f'{k} reused'
                      for k, v in timing.items())
    lines += [
        '', 'The trust report of each SEA evaluation (docs/evaluation.md, '
        '"Can I trust this number?"):', '', '```',
        trust_text(results), '```'
    ]
    lines += ['', f'Whole run: {total:.0f} s ({steps}).']
    with open(osp.join(args.save_docs, 'demo_results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
