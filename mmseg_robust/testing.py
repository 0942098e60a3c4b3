"""Tiny models, fabricated data and runner configs for tests, docs and
benchmarks.

``import mmseg_robust.testing`` registers :class:`TinyConvBackbone` into
MMSeg's ``MODELS``; configs that use it list ``'mmseg_robust.testing'`` in
``custom_imports``. Everything here runs in seconds on a CPU.
"""
import copy
import os
import os.path as osp
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmseg.registry import MODELS

import mmseg_robust

__all__ = [
    'TinyConvBackbone', 'tiny_segmentor_cfg', 'build_tiny_segmentor',
    'make_toy_dataset', 'toy_dataset_cfg', 'tiny_runner_cfg', 'TOY_CLASSES',
    'TOY_PALETTE', 'fake_batch'
]

TOY_CLASSES = ('background', 'stripe', 'blob')
TOY_PALETTE = [[0, 0, 0], [220, 20, 60], [0, 128, 255]]


@MODELS.register_module()
class TinyConvBackbone(BaseModule):
    """A few conv-BN-ReLU stages, each halving the resolution.

    Args:
        in_channels (int): Input channels.
        channels (Sequence[int]): Width of each stage; one output per stage.
        norm (bool): Use BatchNorm (to test that attacks leave BN statistics
            alone).
    """

    def __init__(self,
                 in_channels: int = 3,
                 channels: Sequence[int] = (8, 16),
                 norm: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg)
        stages = []
        for c in channels:
            layers = [nn.Conv2d(in_channels, c, 3, 2, 1, bias=not norm)]
            if norm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU(inplace=True))
            stages.append(nn.Sequential(*layers))
            in_channels = c
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return tuple(outs)


def tiny_segmentor_cfg(num_classes: int = 3,
                       channels: Sequence[int] = (8, 16),
                       mean: Sequence[float] = (123.675, 116.28, 103.53),
                       std: Sequence[float] = (58.395, 57.12, 57.375),
                       bgr_to_rgb: bool = True,
                       test_mode: str = 'whole',
                       crop_size: Optional[Tuple[int, int]] = (32, 32),
                       aux_head: bool = False,
                       norm: bool = True) -> dict:
    """Config of a tiny ``EncoderDecoder``: :class:`TinyConvBackbone` with an
    FCN head (and optionally an auxiliary FCN head)."""
    pre = dict(
        type='SegDataPreProcessor',
        mean=list(mean),
        std=list(std),
        bgr_to_rgb=bgr_to_rgb,
        pad_val=0,
        seg_pad_val=255)
    if crop_size is not None:
        pre['size'] = tuple(crop_size)
    norm_cfg = dict(type='BN', requires_grad=True) if norm else None
    head = dict(
        type='FCNHead',
        in_channels=channels[-1],
        in_index=len(channels) - 1,
        channels=16,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
    test_cfg = dict(mode=test_mode)
    if test_mode == 'slide':
        test_cfg.update(crop_size=(16, 16), stride=(12, 12))
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=pre,
        backbone=dict(
            type='TinyConvBackbone', channels=list(channels), norm=norm),
        decode_head=head,
        train_cfg=dict(),
        test_cfg=test_cfg)
    if aux_head:
        aux = copy.deepcopy(head)
        aux.update(in_index=0, in_channels=channels[0], channels=8)
        aux['loss_decode']['loss_weight'] = 0.4
        model['auxiliary_head'] = aux
    return ConfigDict(model)


def build_tiny_segmentor(seed: int = 0, **kwargs) -> nn.Module:
    """Build :func:`tiny_segmentor_cfg` in eval mode with a fixed seed."""
    from mmengine.registry import init_default_scope

    # MMSeg's models (mmcv-lite: the mmcv.ops fallback) and the plugin's,
    # explicitly: importing this module patches nothing
    mmseg_robust.register_all_modules()
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    return MODELS.build(tiny_segmentor_cfg(**kwargs)).eval()


def _toy_sample(rng: np.random.Generator, size: Tuple[int, int]):
    """One image/label pair: background, a horizontal stripe (class 1) and a
    disc (class 2), each with its own mean colour plus noise."""
    h, w = size
    label = np.zeros((h, w), np.uint8)
    top = rng.integers(0, h - h // 4)
    label[top:top + max(h // 5, 2)] = 1
    cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
    r = rng.integers(max(h // 8, 2), max(h // 4, 3))
    yy, xx = np.mgrid[:h, :w]
    label[(yy - cy)**2 + (xx - cx)**2 <= r * r] = 2
    colours = np.array([[70, 90, 110], [150, 60, 80], [60, 150, 190]],
                       np.float32)
    img = colours[label] + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), label


def make_toy_dataset(root: str,
                     n_train: int = 8,
                     n_val: int = 4,
                     size: Tuple[int, int] = (32, 32),
                     seed: int = 0,
                     ignore_border: bool = False) -> str:
    """Write a small 3-class dataset in MMSeg's standard layout.

    ``root/img_dir/{train,val}/*.png`` (BGR as cv2 writes it) and
    ``root/ann_dir/{train,val}/*.png`` (label ids, 255 = ignore).

    Args:
        root (str): Output folder.
        n_train (int): Training images.
        n_val (int): Validation images.
        size (tuple): ``(h, w)`` of every image.
        seed (int): Seed of the generator.
        ignore_border (bool): Mark a one-pixel border as ignored (255).

    Returns:
        str: ``root``.
    """
    import cv2
    rng = np.random.default_rng(seed)
    for split, n in (('train', n_train), ('val', n_val)):
        os.makedirs(osp.join(root, 'img_dir', split), exist_ok=True)
        os.makedirs(osp.join(root, 'ann_dir', split), exist_ok=True)
        for i in range(n):
            img, label = _toy_sample(rng, size)
            if ignore_border:
                label[0, :] = label[-1, :] = 255
                label[:, 0] = label[:, -1] = 255
            name = f'{split}_{i:03d}.png'
            cv2.imwrite(osp.join(root, 'img_dir', split, name), img)
            cv2.imwrite(osp.join(root, 'ann_dir', split, name), label)
    return root


def toy_dataset_cfg(data_root: str,
                    split: str = 'val',
                    train: bool = False,
                    crop_size: Optional[Tuple[int, int]] = None) -> dict:
    """``BaseSegDataset`` config for :func:`make_toy_dataset` output."""
    if train:
        pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
        ]
        if crop_size is not None:
            pipeline.append(dict(type='RandomCrop', crop_size=crop_size))
        pipeline += [
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackSegInputs')
        ]
    else:
        pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')
        ]
    return dict(
        type='BaseSegDataset',
        data_root=data_root,
        data_prefix=dict(
            img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
        img_suffix='.png',
        seg_map_suffix='.png',
        metainfo=dict(classes=TOY_CLASSES, palette=TOY_PALETTE),
        pipeline=pipeline)


def tiny_runner_cfg(work_dir: str,
                    data_root: str,
                    max_iters: int = 4,
                    batch_size: int = 2,
                    lr: float = 0.01,
                    checkpoint_interval: int = 2,
                    custom_hooks: Optional[list] = None,
                    model: Optional[dict] = None,
                    seed: int = 0,
                    val_interval: Optional[int] = None) -> dict:
    """A complete MMEngine runner config (train, val and test) on the toy
    dataset, iteration based, single process on the CPU; it validates every
    ``val_interval`` iterations (default: once, at the end; a number above
    ``max_iters``: never)."""
    # the config names the plugin's modules: registered explicitly
    mmseg_robust.register_all_modules()
    model = model or tiny_segmentor_cfg()

    def loader(split, train):
        return dict(
            batch_size=batch_size if train else 1,
            num_workers=0,
            persistent_workers=False,
            sampler=dict(
                type='InfiniteSampler' if train else 'DefaultSampler',
                shuffle=train),
            dataset=toy_dataset_cfg(data_root, split, train=train))

    cfg = dict(
        default_scope='mmseg',
        custom_imports=dict(
            imports=['mmseg_robust', 'mmseg_robust.testing'],
            allow_failed_imports=False),
        work_dir=work_dir,
        model=model,
        train_dataloader=loader('train', True),
        val_dataloader=loader('val', False),
        test_dataloader=loader('val', False),
        val_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU']),
        test_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU']),
        train_cfg=dict(
            type='IterBasedTrainLoop',
            max_iters=max_iters,
            val_interval=max_iters if val_interval is None else val_interval),
        val_cfg=dict(type='ValLoop'),
        test_cfg=dict(type='TestLoop'),
        optim_wrapper=dict(
            type='OptimWrapper',
            optimizer=dict(type='SGD', lr=lr, momentum=0.9, weight_decay=0.0)),
        param_scheduler=[],
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(
                type='LoggerHook', interval=1, log_metric_by_epoch=False),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(
                type='CheckpointHook',
                by_epoch=False,
                interval=checkpoint_interval),
            sampler_seed=dict(type='DistSamplerSeedHook'),
            visualization=dict(type='SegVisualizationHook')),
        custom_hooks=custom_hooks or [],
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
            dist_cfg=dict(backend='gloo')),
        vis_backends=[dict(type='LocalVisBackend')],
        visualizer=dict(
            type='SegLocalVisualizer',
            vis_backends=[dict(type='LocalVisBackend')],
            name='visualizer'),
        log_processor=dict(by_epoch=False),
        log_level='WARNING',
        load_from=None,
        resume=False,
        randomness=dict(seed=seed),
    )
    return cfg


def fake_batch(n: int = 2,
               size: Tuple[int, int] = (32, 32),
               num_classes: int = 3,
               seed: int = 0,
               label_size: Optional[Tuple[int, int]] = None) -> dict:
    """A dataloader-style batch of random uint8 images and labels with
    ``SegDataSample`` metainfo, without touching the disk."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    label_size = label_size or size
    inputs, samples = [], []
    for i in range(n):
        inputs.append(
            torch.randint(
                0, 256, (3, ) + tuple(size), generator=g, dtype=torch.uint8))
        s = SegDataSample()
        s.set_metainfo(
            dict(
                img_path=f'fake_{i}.png',
                ori_shape=tuple(label_size),
                img_shape=tuple(size),
                scale_factor=(size[1] / label_size[1],
                              size[0] / label_size[0])))
        s.gt_sem_seg = PixelData(
            data=torch.randint(
                0, num_classes, (1, ) + tuple(label_size), generator=g))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)
