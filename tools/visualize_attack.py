"""Figure-1 style picture of what an attack does to segmentation models.

    python tools/visualize_attack.py CONFIG CKPT IMAGE --target-class NAME \
        --eps 2 [--model CONFIG2 CKPT2 ...] [--names clean AT] [--out x.png]

For the image and its ground truth, and for each model: the adversarial
image of a *targeted* attack (APGD minimising the cross-entropy to the target
class on all valid pixels), the model's prediction on it, and the
prediction under the untargeted SEA worst case. ``--eps`` is in units of
1/255.
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

import numpy as np
import torch

import mmseg_robust
from mmseg_robust.adapter import AttackBatch
from mmseg_robust.attacks import SEA, apgd
from mmseg_robust.cli import ToolError, eps_from_cli

# explicitly, before any config is read: the compatibility patches and the
# plugin's modules in MMSeg's registries (mmseg_robust._plugin)
mmseg_robust.register_all_modules()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Targeted and untargeted attacks on one image, drawn '
        'side by side for one or more models')
    parser.add_argument('config', help='config of the first model')
    parser.add_argument('checkpoint', help='checkpoint of the first model')
    parser.add_argument('image', help='image file')
    parser.add_argument(
        '--label',
        help='label map (default: the image path with img_dir -> ann_dir '
        'and a .png suffix, if it exists)')
    parser.add_argument(
        '--model',
        nargs=2,
        action='append',
        default=[],
        metavar=('CONFIG', 'CKPT'),
        help='a further model to show (repeatable)')
    parser.add_argument(
        '--names', nargs='+', help='names of the models in the picture')
    parser.add_argument(
        '--target-class', required=True, help='class name of the target')
    parser.add_argument(
        '--eps', type=float, default=2.0, help='radius in units of 1/255')
    parser.add_argument(
        '--n-iter', type=int, default=100, help='attack iterations')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--out', default='attack_panel.png', help='output PNG file')
    return parser.parse_args(argv)


def _guess_label(image: str) -> Optional[str]:
    guess = osp.splitext(image.replace('img_dir', 'ann_dir'))[0] + '.png'
    return guess if guess != image and osp.isfile(guess) else None


def _load(model, image: str, label: Optional[str]) -> dict:
    """Run the model's test pipeline on one file."""
    from mmengine.dataset import Compose
    cfg = model.cfg
    pipeline = [
        t for t in cfg.test_dataloader.dataset.pipeline
        if label is not None or t['type'] != 'LoadAnnotations'
    ]
    data = dict(
        img_path=image,
        seg_map_path=label,
        reduce_zero_label=False,
        seg_fields=[])
    data = Compose(pipeline)(data)
    return dict(inputs=[data['inputs']], data_samples=[data['data_samples']])


def _colorize(label: np.ndarray, palette) -> np.ndarray:
    out = np.zeros(label.shape + (3, ), np.uint8)
    for c, colour in enumerate(palette):
        out[label == c] = colour
    return out


def attack_model(model, data: dict, target: int, eps: float, n_iter: int,
                 seed: int):
    """Targeted APGD and untargeted SEA on one image for one model."""
    from mmengine.structures import PixelData
    model.eval()
    sample = data['data_samples'][0]
    if 'gt_sem_seg' not in sample:
        # no ground truth: attack the model's own clean prediction
        pred = model.test_step(data)[0].pred_sem_seg.data
        sample.gt_sem_seg = PixelData(data=pred)
    batch = AttackBatch.from_data(model, data)
    valid = batch.y != batch.ignore_index
    y_target = torch.where(valid, torch.full_like(batch.y, target), batch.y)
    targeted = apgd(
        batch.model,
        batch.x,
        y_target,
        eps,
        n_iter,
        loss='ce',
        targeted=True,
        mask=batch.mask,
        start=seed,
        ignore_index=batch.ignore_index)
    sea = SEA(
        batch.model,
        eps,
        n_iter=max(n_iter, 3),
        seed=seed,
        ignore_index=batch.ignore_index).run(
            batch.x, batch.y, mask=batch.mask)
    h, w = batch.sizes[0]
    x_adv = targeted.x_adv[0, :, :h, :w]
    hit = float(((targeted.pred == target) & valid).sum() / valid.sum())
    return dict(
        x_adv=x_adv,
        targeted_pred=targeted.pred[0],
        target_rate=hit,
        sea_pred=sea.pred[0],
        sea_acc=float(sea.acc[0]),
        clean_acc=float(sea.clean_acc[0]),
        label=batch.y[0],
        image=batch.x[0, :, :h, :w])


def draw_panel(results: List[dict], names: List[str], classes, palette,
               target_name: str, eps_255: float, out: str) -> str:
    """Image and ground truth, then per model: targeted adversarial image,
    its prediction, and the SEA prediction."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    def rgb(x):  # loader order is BGR
        img = (x.detach().cpu().clamp(0, 1) * 255).byte().permute(1, 2, 0)
        return img.numpy()[..., ::-1]

    def seg(t):
        lab = t.cpu().numpy()
        return _colorize(lab, palette)

    cols = 2 + 3 * len(results)
    fig, axes = plt.subplots(1, cols, figsize=(2.4 * cols, 3.4))
    first = results[0]
    panels = [(rgb(first['image']), 'image'),
              (seg(first['label']), 'ground truth')]
    for name, r in zip(names, results):
        panels += [
            (rgb(r['x_adv']), f'{name}: adversarial\n(eps {eps_255:g}/255)'),
            (seg(r['targeted_pred']),
             f'{name}: targeted\n{r["target_rate"]:.0%} "{target_name}"'),
            (seg(r['sea_pred']),
             f'{name}: SEA\nacc {r["clean_acc"]:.0%} -> {r["sea_acc"]:.0%}'),
        ]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img, interpolation='nearest')
        ax.set_title(title, fontsize=8)
        ax.axis('off')
    handles = [
        Patch(color=np.array(c) / 255, label=n)
        for n, c in zip(classes, palette)
    ]
    fig.legend(
        handles=handles,
        loc='lower center',
        ncol=len(classes),
        fontsize=8,
        frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.image):
        raise ToolError(f'image {args.image!r} does not exist')
    label = args.label or _guess_label(args.image)
    if args.label and not osp.isfile(args.label):
        raise ToolError(f'label {args.label!r} does not exist')
    eps = eps_from_cli([args.eps])[0]
    models = [(args.config, args.checkpoint)] + [tuple(m) for m in args.model]
    for cfg_path, ckpt in models:
        if not osp.isfile(cfg_path):
            raise ToolError(f'config {cfg_path!r} does not exist')
        if not osp.isfile(ckpt):
            raise ToolError(f'checkpoint {ckpt!r} does not exist')
    names = args.names or [osp.splitext(osp.basename(c))[0] for c, _ in models]
    if len(names) != len(models):
        raise ToolError(f'--names gives {len(names)} names for '
                        f'{len(models)} models')
    from mmseg.apis import init_model
    results, meta = [], None
    for cfg_path, ckpt in models:
        model = init_model(cfg_path, ckpt, device=args.device)
        classes = list(model.dataset_meta['classes'])
        if args.target_class not in classes:
            raise ToolError(
                f'unknown --target-class {args.target_class!r}; the '
                f'classes of {cfg_path} are: {", ".join(classes)}')
        meta = model.dataset_meta
        data = _load(model, args.image, label)
        results.append(
            attack_model(model, data, classes.index(args.target_class), eps,
                         args.n_iter, args.seed))
    out = draw_panel(results, names, meta['classes'], meta['palette'],
                     args.target_class, args.eps, args.out)
    for name, r in zip(names, results):
        print(f'{name}: clean acc {r["clean_acc"]:.1%}, SEA acc '
              f'{r["sea_acc"]:.1%}, targeted "{args.target_class}" on '
              f'{r["target_rate"]:.1%} of valid pixels')
    print(f'saved {out}')
    return results


if __name__ == '__main__':
    main()
