"""Adversarial-training cost: iteration time of AT^k against clean training.

    python benchmarks/bench_training.py [--device cpu|cuda] [--steps 2 5]
        [--repeats 5] [--big-size 128] [--skip-big]

Same model, same batch: one clean ``train_step`` vs ``AdvTrainingHook``'s
attack (k PGD steps, input gradients only) + ``train_step``. Since an
attack step needs no weight gradients, the target is
``time(AT^k) / time(clean) <= 1 + 0.75 k``. Also reported: the time of one
attack step (forward + input-backward in eval mode) relative to a training
step. Writes ``benchmarks/results/bench_training.json``.
"""
import argparse
import copy
import os.path as osp
import sys
from types import SimpleNamespace

import torch
from _common import CONVNEXT_T, ROOT, build_segmentor, median_time, write_json
from prettytable import PrettyTable

from mmseg_robust.training import AdvTrainingHook


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cpu')
    p.add_argument('--steps', type=int, nargs='+', default=[2, 5])
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument(
        '--big-size',
        type=int,
        default=128,
        help='crop size of the UPerNet + ConvNeXt-T run')
    p.add_argument('--big-batch', type=int, default=2)
    p.add_argument('--skip-big', action='store_true')
    p.add_argument('--out', default=osp.join(ROOT, 'benchmarks', 'results'))
    return p.parse_args(argv)


def build(config: str, size: int, device: str):
    from mmengine.optim import OptimWrapper
    model = build_segmentor(config, device, crop=size).train()
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-5))
    return model, optim, model.decode_head.num_classes


def measure(name, model, optim, data, steps_list, repeats, device):
    runner = SimpleNamespace(
        model=model,
        optim_wrapper=optim,
        iter=0,
        message_hub=SimpleNamespace(update_scalar=lambda *a, **k: None))

    def clean():
        model.train_step(copy.copy(data), optim)

    t_clean = median_time(clean, repeats, 1, device)
    rows = []
    for k in steps_list:
        hook = AdvTrainingHook(eps=4 / 255, steps=k)

        def at():
            batch = copy.copy(data)
            hook.before_train_iter(runner, 0, batch)
            model.train_step(batch, optim)

        def attack_only():
            hook.before_train_iter(runner, 0, copy.copy(data))

        t_at = median_time(at, repeats, 1, device)
        t_attack = median_time(attack_only, repeats, 1, device)
        rows.append(
            dict(
                model=name,
                k=k,
                clean=t_clean,
                at=t_at,
                ratio=t_at / t_clean,
                target=1 + 0.75 * k,
                attack_step_vs_train_step=t_attack / k / t_clean))
    return rows


def main(argv=None):
    args = parse_args(argv)
    from mmseg_robust.testing import fake_batch
    device = args.device
    runs = [('demo UPerNet+ConvNeXt (64x64, batch 8)',
             osp.join(
                 ROOT, 'configs', 'demo',
                 'upernet_convnext-demo_clean_1xb8-400it_'
                 'scratch-assay-64x64.py'), 64, 8)]
    if not args.skip_big:
        runs.append((f'UPerNet+ConvNeXt-T ({args.big_size}x{args.big_size}'
                     f', batch {args.big_batch})', CONVNEXT_T, args.big_size,
                     args.big_batch))
    rows = []
    for name, config, size, batch in runs:
        model, optim, num_classes = build(config, size, device)
        data = fake_batch(batch, (size, size), num_classes=num_classes)
        rows += measure(name, model, optim, data, args.steps, args.repeats,
                        device)
        del model, optim
    t = PrettyTable([
        'model', 'k', 'clean iter s', 'AT^k iter s', 'ratio', 'target',
        'attack step / train step'
    ])
    for r in rows:
        t.add_row([
            r['model'], r['k'], f'{r["clean"]:.3f}', f'{r["at"]:.3f}',
            f'{r["ratio"]:.2f}', f'<= {r["target"]:.2f}',
            f'{r["attack_step_vs_train_step"]:.2f}'
        ])
    print('AT^k iteration time vs clean training (median of '
          f'{args.repeats})')
    print(t)
    path = write_json('bench_training', dict(settings=vars(args), rows=rows),
                      args.out)
    print(f'wrote {path}')


if __name__ == '__main__':
    sys.exit(main())
