"""Pictures: robustness curves and clean/adversarial prediction panels."""
import os
import os.path as osp
import re
from typing import Dict, Optional, Sequence

import numpy as np

__all__ = [
    'plot_robustness_curve', 'plot_robustness_curves', 'save_sea_predictions',
    'parse_metrics', 'plot_robustness_by_size', 'has_size_metrics'
]

_KEY = re.compile(r'(?:^|/)eps([0-9.]+)/([^/]+)/([A-Za-z_]+)$')
#: line style and marker of each object-size bucket
_BUCKET_STYLE = {
    'small': (':', 'v'),
    'medium': ('--', 's'),
    'large': ('-', 'o')
}
_BUCKET_COLORS = {
    'small': 'tab:orange',
    'medium': 'tab:green',
    'large': 'tab:purple'
}


def parse_metrics(metrics: Dict[str, float], metric: str = 'mIoU'):
    """``{attack: {eps: value}}`` and the clean value from SEAMetric keys."""
    curves: Dict[str, Dict[float, float]] = {}
    clean = None
    for key, value in metrics.items():
        if key.endswith(f'clean/{metric}'):
            clean = value
        m = _KEY.search(key)
        if m and m.group(3) == metric:
            curves.setdefault(m.group(2), {})[float(m.group(1))] = value
    return curves, clean


def _points(metrics: Dict[str, float], output: str, metric: str):
    """``(xs, ys)`` of one output's curve, the clean value at eps 0."""
    curves, clean = parse_metrics(metrics, metric)
    points = curves.get(output, {})
    xs = sorted(points)
    ys = [points[x] for x in xs]
    if clean is not None:
        xs, ys = [0.0] + xs, [clean] + ys
    return xs, ys


def _finish(fig,
            axes,
            title: Optional[str],
            out_file: str,
            dpi: int,
            xlabel: str = 'eps (x 1/255)') -> str:
    """Axis labels, grid and legend of robustness-curve axes; save."""
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(osp.dirname(out_file) or '.', exist_ok=True)
    fig.savefig(out_file, dpi=dpi)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return out_file


def plot_robustness_curve(metrics: Dict[str, float],
                          out_file: str,
                          title: Optional[str] = None,
                          extra: Optional[Dict[str, Dict[str, float]]] = None,
                          xlabel: str = 'eps (x 1/255)') -> str:
    """mIoU and aAcc against eps (in /255), one line per attack, the worst
    case in bold, the clean value at eps 0.

    Args:
        metrics (dict): SEAMetric output of one model.
        out_file (str): PNG path.
        title (str, optional): Figure title.
        extra (dict, optional): ``{label: metrics}`` of further models drawn
            as worst-case lines (e.g. clean vs adversarially trained).
        xlabel (str): Label of the radius axis (``'l2 radius'`` for l2
            results).

    Returns:
        str: ``out_file``.
    """
    models = {None: metrics}
    models.update(extra or {})
    return plot_robustness_curves(
        models,
        out_file,
        title,
        outputs={
            None: None,
            **{
                k: ['worst']
                for k in (extra or {})
            }
        },
        xlabel=xlabel)


def plot_robustness_curves(models: Dict[Optional[str], Dict[str, float]],
                           out_file: str,
                           title: Optional[str] = None,
                           outputs: Optional[Dict] = None,
                           colors: Optional[Dict[str, str]] = None,
                           dpi: int = 100,
                           xlabel: str = 'eps (x 1/255)') -> str:
    """mIoU and aAcc against eps (in /255) for several models: per model
    the worst case in bold and its other outputs (attacks), the clean value
    at eps 0.

    Args:
        models (dict): ``{label: SEAMetric metrics}``; a ``None`` label
            draws unprefixed legend entries.
        out_file (str): PNG path.
        title (str, optional): Figure title.
        outputs (dict, optional): ``{label: [output names]}`` to draw per
            model (default: every output; ``None`` for a model: all).
        colors (dict, optional): ``{label: matplotlib colour}``.
        dpi (int): Resolution of the PNG.

    Returns:
        str: ``out_file``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    styles = ['-', '--', ':', '-.']
    for ax, metric in zip(axes, ('mIoU', 'aAcc')):
        for m_i, (label, mets) in enumerate(models.items()):
            curves, clean = parse_metrics(mets, metric)
            wanted = (outputs or {}).get(label)
            names = [
                n for n in sorted(curves, key=lambda n: n != 'worst')
                if wanted is None or n in wanted
            ]
            for n_i, name in enumerate(names):
                xs, ys = _points(mets, name, metric)
                worst = name == 'worst'
                if label is None:
                    text, style = name, '-'
                else:
                    text = f'{label}: ' + ('SEA' if worst else name)
                    style = '-' if worst else styles[1 + n_i % 3]
                ax.plot(
                    xs,
                    ys,
                    style,
                    color=(colors or {}).get(label),
                    marker='o' if worst else '.',
                    linewidth=2.5 if worst else 1.0,
                    label=text)
        ax.set_ylabel(f'{metric} (%)')
    return _finish(fig, axes, title, out_file, dpi, xlabel)


def has_size_metrics(metrics: Dict[str, float]) -> bool:
    """Whether SEAMetric's metrics hold accuracy by object size."""
    for key in metrics:
        m = _KEY.search(key)
        if m and m.group(3).startswith('aAcc_'):
            return True
    return False


def plot_robustness_by_size(models: Dict[Optional[str], Dict[str, float]],
                            out_file: str,
                            title: Optional[str] = None,
                            colors: Optional[Dict[str, str]] = None,
                            output: str = 'worst',
                            dpi: int = 100,
                            xlabel: str = 'eps (x 1/255)') -> str:
    """Where models break: against eps (in /255, clean at 0), the pixel
    accuracy of small, medium and large ground-truth objects (and of all
    pixels, thin), and mIoU pooled over the dataset and per image.

    Args:
        models (dict): ``{label: SEAMetric metrics}``; one model with
            label ``None`` draws a colour per bucket, several a colour per
            model (``colors``) and a line style per bucket.
        out_file (str): PNG path.
        title (str, optional): Figure title.
        colors (dict, optional): ``{label: matplotlib colour}``.
        output (str): Which output to draw (default the worst case).
        dpi (int): Resolution of the PNG.

    Returns:
        str: ``out_file``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from mmseg_robust.evaluation.object_sizes import SIZE_BUCKETS
    fig, (acc_ax, iou_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for m_i, (label, mets) in enumerate(models.items()):
        prefix = '' if label is None else f'{label}: '
        color = (colors or {}).get(label, f'C{m_i}')
        for bucket in SIZE_BUCKETS:
            xs, ys = _points(mets, output, f'aAcc_{bucket}')
            if len(xs) < 2:  # no pixels in this bucket
                continue
            style, marker = _BUCKET_STYLE[bucket]
            acc_ax.plot(
                xs,
                ys,
                style,
                marker=marker,
                linewidth=2.0,
                color=_BUCKET_COLORS[bucket] if label is None else color,
                label=f'{prefix}{bucket} objects')
        xs, ys = _points(mets, output, 'aAcc')
        acc_ax.plot(
            xs,
            ys,
            '-.',
            linewidth=0.8,
            color='black' if label is None else color,
            label=f'{prefix}all pixels')
        for metric, style, text in (('mIoU', '-', 'mIoU (pooled)'),
                                    ('mImgIoU', '--', 'mIoU per image')):
            xs, ys = _points(mets, output, metric)
            iou_ax.plot(
                xs,
                ys,
                style,
                marker='o' if metric == 'mIoU' else 's',
                color=color,
                label=prefix + text)
    acc_ax.set_ylabel('pixel accuracy (%)')
    acc_ax.set_title('accuracy by object size', fontsize=9)
    iou_ax.set_ylabel('mIoU (%)')
    iou_ax.set_title('mIoU over the dataset and per image', fontsize=9)
    return _finish(fig, (acc_ax, iou_ax), title, out_file, dpi, xlabel)


def _to_rgb_uint8(x_chw, size, bgr: bool):
    import cv2
    img = (x_chw.detach().float().cpu().clamp(0, 1) * 255).round().byte()
    img = img.permute(1, 2, 0).numpy()
    if bgr:
        img = img[..., ::-1]
    if img.shape[:2] != tuple(size):
        img = cv2.resize(
            np.ascontiguousarray(img), (size[1], size[0]),
            interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img)


def save_sea_predictions(show_dir: str, batch, samples: Sequence, clean_pred,
                         adversarial: dict, dataset_meta: dict) -> None:
    """Draw ground truth and predictions (MMSeg's visualizer style) for the
    clean images and, per radius, the worst-case adversarial images.

    Files: ``<show_dir>/<image>_clean.png`` and
    ``<show_dir>/<image>_eps<e>.png``.
    """
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from mmseg.visualization import SegLocalVisualizer
    os.makedirs(show_dir, exist_ok=True)
    vis = SegLocalVisualizer(
        name=f'sea_show_{id(batch)}', alpha=0.6, save_dir=None)
    vis.set_dataset_meta(
        classes=dataset_meta.get('classes'),
        palette=dataset_meta.get('palette'))
    # LoadImageFromFile gives BGR unless told otherwise
    bgr = True
    for i, sample in enumerate(samples):
        label = sample.gt_sem_seg.data[0]
        size = tuple(label.shape)
        h, w = batch.sizes[i]
        stem = osp.splitext(
            osp.basename(sample.metainfo.get('img_path') or f'img{i}'))[0]
        panels = [('clean', batch.x[i, :, :h, :w], clean_pred[i])]
        for ek, (x_adv, pred) in adversarial.items():
            panels.append((f'eps{ek}', x_adv[i, :, :h, :w], pred[i]))
        for tag, img, pred in panels:
            ds = SegDataSample()
            ds.gt_sem_seg = PixelData(data=label[None].cpu())
            ds.pred_sem_seg = PixelData(
                data=pred[:size[0], :size[1]][None].cpu())
            vis.add_datasample(
                f'{stem}_{tag}',
                _to_rgb_uint8(img, size, bgr),
                ds,
                draw_gt=True,
                draw_pred=True,
                show=False,
                out_file=osp.join(show_dir, f'{stem}_{tag}.png'))
