"""Reference networks with the module layout of the paper's released models.

Written for the tests from the architecture of the authors' code
(``nmndeep/Robust-Segmentation``: ``semseg/models/uperforseg.py``,
``semseg/models/backbones/convnext_orig.py``, ``semseg/models/segmenter.py``
and its ViT encoder / mask-transformer decoder): the same modules, attribute
names (hence ``state_dict`` keys) and forward computation, so that a random
instance's ``state_dict`` is a stand-in for a published checkpoint and its
logits are what the authors' code would compute. Not part of the package.

* :class:`RefUperNetConvNeXt`: ConvNeXt (original layout; the "CvSt" conv
  stem ``downsample_layers.0.stem`` or the 4x4 patch stem), UPerNet head
  (pyramid pooling 1, 2, 3, 6; FPN; conv + BatchNorm + ReLU modules named
  ``conv`` / ``batch_norm``) and an FCN auxiliary head on stage 2; logits
  upsampled bilinearly (``align_corners=False``) to the input size.
* :class:`RefSegmenter`: ViT encoder (16x16 patches, class token, learned
  position embedding resized bilinearly when the grid differs, pre-norm
  blocks, final LayerNorm) and mask-transformer decoder; input padded to a
  multiple of the patch size, masks upsampled and unpadded.
"""
import math
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'RefUperNetConvNeXt', 'RefSegmenter', 'randomize_', 'DEPTHS_T', 'DEPTHS_S'
]

DEPTHS_T = (3, 3, 9, 3)
DEPTHS_S = (3, 3, 27, 3)
DIMS = (96, 192, 384, 768)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channels of an ``(N, C, H, W)`` tensor, written
    out (mean, biased variance) as the original ConvNeXt code does."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvStem(nn.Module):
    """The "CvSt" stem: its Sequential lives in ``self.stem``."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, mid, 3, stride=2, padding=1),
            ChannelsFirstLayerNorm(mid), nn.GELU(),
            nn.Conv2d(mid, out_channels, 3, stride=2, padding=1),
            ChannelsFirstLayerNorm(out_channels), nn.GELU())

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(x)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, channels-last LayerNorm, Linear-GELU-Linear,
    layer scale ``gamma``, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class RefConvNeXt(nn.Module):
    """ConvNeXt backbone returning the 4 stage outputs, each through its
    own channels-first LayerNorm ``norm{i}``."""

    def __init__(self, depths: Sequence[int], dims: Sequence[int],
                 stem: str) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        if stem == 'conv':
            self.downsample_layers.append(ConvStem(dims[0]))
        else:
            self.downsample_layers.append(
                nn.Sequential(
                    nn.Conv2d(3, dims[0], 4, stride=4),
                    ChannelsFirstLayerNorm(dims[0])))
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    ChannelsFirstLayerNorm(dims[i]),
                    nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dims[i]) for _ in range(d)])
            for i, d in enumerate(depths))
        for i in range(4):
            self.add_module(f'norm{i}', ChannelsFirstLayerNorm(dims[i]))

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        outs = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            outs.append(getattr(self, f'norm{i}')(x))
        return tuple(outs)


class ConvBNReLU(nn.Module):
    """Conv (no bias), BatchNorm, ReLU as ``conv`` / ``batch_norm``."""

    def __init__(self,
                 cin: int,
                 cout: int,
                 kernel: int,
                 padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, bias=False)
        self.batch_norm = nn.BatchNorm2d(cout)
        self.activation = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.batch_norm(self.conv(x)))


class PoolingBlock(nn.Module):
    """Children ``0`` (adaptive average pooling) and ``1`` (conv module)."""

    def __init__(self, scale: int, cin: int, cout: int) -> None:
        super().__init__()
        self.add_module('0', nn.AdaptiveAvgPool2d(scale))
        self.add_module('1', ConvBNReLU(cin, cout, 1))

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self, '1')(getattr(self, '0')(x))


class PyramidPooling(nn.Module):
    """Pooling blocks as children ``0..3``, each output upsampled back."""

    def __init__(self, scales: Sequence[int], cin: int, cout: int) -> None:
        super().__init__()
        for i, s in enumerate(scales):
            self.add_module(str(i), PoolingBlock(s, cin, cout))

    def forward(self, x: Tensor) -> List[Tensor]:
        return [
            F.interpolate(
                block(x),
                size=x.shape[2:],
                mode='bilinear',
                align_corners=False) for block in self.children()
        ]


class RefUperNetHead(nn.Module):
    """UPerNet: PPM on the last stage, top-down FPN, fused 3x3 conv."""

    def __init__(self, in_channels: Sequence[int], channels: int,
                 num_classes: int) -> None:
        super().__init__()
        scales = (1, 2, 3, 6)
        self.psp_modules = PyramidPooling(scales, in_channels[-1], channels)
        self.bottleneck = ConvBNReLU(in_channels[-1] + len(scales) * channels,
                                     channels, 3, 1)
        self.lateral_convs = nn.ModuleList(
            ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(
            ConvBNReLU(channels, channels, 3, 1) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBNReLU(
            len(in_channels) * channels, channels, 3, 1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[-1]
        laterals = [
            conv(feats[i]) for i, conv in enumerate(self.lateral_convs)
        ]
        laterals.append(
            self.bottleneck(torch.cat([x] + self.psp_modules(x), dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i],
                size=laterals[i - 1].shape[2:],
                mode='bilinear',
                align_corners=False)
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)]
        outs.append(laterals[-1])
        outs = [outs[0]] + [
            F.interpolate(
                o,
                size=outs[0].shape[2:],
                mode='bilinear',
                align_corners=False) for o in outs[1:]
        ]
        return self.classifier(self.fpn_bottleneck(torch.cat(outs, dim=1)))


class RefFCNHead(nn.Module):
    """Auxiliary head: one 3x3 conv module on stage 2, then a classifier."""

    def __init__(self, cin: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(ConvBNReLU(cin, channels, 3, 1))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return self.classifier(self.convs(feats[2]))


class RefUperNetConvNeXt(nn.Module):
    """UPerNet + ConvNeXt in the authors' layout (``backbone``,
    ``decode_head``, ``auxiliary_head``); ``forward`` returns the main
    logits at the input resolution, as their model in eval mode.

    Args:
        depths (Sequence[int]): Blocks per stage (``DEPTHS_T``/``DEPTHS_S``).
        num_classes (int): 21 (VOC) or 151 (ADE20K).
        stem (str): ``'conv'`` (CvSt) or ``'patch'``.
        dims (Sequence[int]): Stage widths.
        channels (int): UPerNet width (the authors: 512).
        aux_channels (int): Auxiliary head width (the authors: 256).
    """

    def __init__(self,
                 depths: Sequence[int] = DEPTHS_T,
                 num_classes: int = 21,
                 stem: str = 'conv',
                 dims: Sequence[int] = DIMS,
                 channels: int = 512,
                 aux_channels: int = 256) -> None:
        super().__init__()
        self.backbone = RefConvNeXt(depths, dims, stem)
        self.decode_head = RefUperNetHead(dims, channels, num_classes)
        self.auxiliary_head = RefFCNHead(dims[2], aux_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.decode_head(self.backbone(x))
        return F.interpolate(
            logits, size=x.shape[2:], mode='bilinear', align_corners=False)


class Attention(nn.Module):
    """Multi-head self-attention with one ``qkv`` and one ``proj`` linear."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads)**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads,
                                  c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class FeedForward(nn.Module):
    """``fc1`` - GELU - ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``+ mlp(norm2(x))``
    (PyTorch's default LayerNorm eps, 1e-5)."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = FeedForward(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbedding(nn.Module):
    """Non-overlapping ``patch x patch`` convolution ``proj``."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class RefViT(nn.Module):
    """ViT encoder; ``forward`` returns the normalised tokens (class token
    first). The position embedding covers ``image_size // patch`` squared
    patches and is resized bilinearly for other grids."""

    def __init__(self,
                 image_size: int,
                 patch: int,
                 dim: int,
                 layers: int,
                 heads: int,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.patch = patch
        self.grid = image_size // patch
        self.patch_embed = PatchEmbedding(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, 4 * dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)  # ImageNet head, unused

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        pos = self.pos_embed
        if x.shape[1] != pos.shape[1]:
            grid = pos[:, 1:].reshape(1, self.grid, self.grid,
                                      -1).permute(0, 3, 1, 2)
            grid = F.interpolate(
                grid,
                size=(h // self.patch, w // self.patch),
                mode='bilinear',
                align_corners=False)
            pos = torch.cat(
                [pos[:, :1],
                 grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)
        x = x + pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class MaskTransformer(nn.Module):
    """Segmenter's decoder: class embeddings processed jointly with the
    patch tokens; masks = scalar products of normalised projections."""

    def __init__(self, num_classes: int, patch: int, dim: int, layers: int,
                 heads: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.patch = patch
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, 4 * dim) for _ in range(layers))
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, dim))
        self.proj_dec = nn.Linear(dim, dim)
        self.proj_patch = nn.Parameter(torch.zeros(dim, dim))
        self.proj_classes = nn.Parameter(torch.zeros(dim, dim))
        self.decoder_norm = nn.LayerNorm(dim)
        self.mask_norm = nn.LayerNorm(num_classes)

    def forward(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        x = self.proj_dec(x)
        x = torch.cat([x, self.cls_emb.expand(x.shape[0], -1, -1)], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches = x[:, :-self.num_classes] @ self.proj_patch
        classes = x[:, -self.num_classes:] @ self.proj_classes
        patches = patches / patches.norm(dim=-1, keepdim=True)
        classes = classes / classes.norm(dim=-1, keepdim=True)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))
        gh = size[0] // self.patch
        return masks.transpose(1, 2).reshape(x.shape[0], self.num_classes, gh,
                                             -1)


class RefSegmenter(nn.Module):
    """Segmenter (``encoder``, ``decoder``) as the authors' ``SegMenter``.

    Args:
        num_classes (int): Output classes (ADE20K with "other": 151).
        image_size (int): Training crop (position embedding grid).
        dim (int): Width (ViT-S: 384).
        layers (int): Encoder blocks (ViT-S: 12).
        heads (int): Attention heads (ViT-S: 6).
        decoder_layers (int): Mask-transformer blocks (the authors: 2).
        patch (int): Patch size.
    """

    def __init__(self,
                 num_classes: int = 151,
                 image_size: int = 512,
                 dim: int = 384,
                 layers: int = 12,
                 heads: int = 6,
                 decoder_layers: int = 2,
                 patch: int = 16) -> None:
        super().__init__()
        self.patch = patch
        self.encoder = RefViT(image_size, patch, dim, layers, heads)
        self.decoder = MaskTransformer(num_classes, patch, dim, decoder_layers,
                                       heads)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        pad_h = (-h) % self.patch
        pad_w = (-w) % self.patch
        x = F.pad(x, (0, pad_w, 0, pad_h))
        hp, wp = x.shape[2:]
        tokens = self.encoder(x)[:, 1:]
        masks = self.decoder(tokens, (hp, wp))
        masks = F.interpolate(
            masks, size=(hp, wp), mode='bilinear', align_corners=False)
        return masks[:, :, :h, :w]


@torch.no_grad()
def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics of O(1) effect, so that no
    part of the network is hidden from a comparison (a layer scale of 1e-6
    or identity BatchNorm statistics would hide errors)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith('bias'):
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        elif p.dim() == 1 or name.endswith('gamma'):
            p.copy_(0.5 + torch.rand(p.shape, generator=gen))
        elif p.dim() == 2 and p.shape[0] == p.shape[1] and (
                name.endswith('proj_patch') or name.endswith('proj_classes')):
            p.copy_(
                torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[0]))
        elif name.endswith(('cls_token', 'pos_embed', 'cls_emb')):
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
        else:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
    for name, b in model.named_buffers():
        if name.endswith('running_mean'):
            b.copy_(0.2 * torch.randn(b.shape, generator=gen))
        elif name.endswith('running_var'):
            b.copy_(0.5 + torch.rand(b.shape, generator=gen))
        elif name.endswith('num_batches_tracked'):
            b.fill_(1000)
    return model.eval()
