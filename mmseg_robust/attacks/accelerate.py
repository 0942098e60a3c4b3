"""Faster model calls for the attacks: channels-last memory layout and
``torch.compile`` (docs/attacks.md, "Speed").

The attack loops keep every tensor's shape fixed within an APGD run
(docs/attacks.md, "Host synchronisation"), so one compilation serves a
whole run; SEA hands each attack the images it still attacks, so a batch
size that changes between attacks costs one recompilation with dynamic
shapes.

Plain PyTorch only: nothing here imports MMSeg or MMEngine.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ['CompileLike', 'check_compile', 'accelerate', 'FastModel']

#: ``False`` (off), ``True`` (``torch.compile`` with its defaults) or a dict
#: of ``torch.compile`` keyword arguments (e.g. ``dict(mode='max-autotune')``).
CompileLike = Union[bool, dict]


def check_compile(compile: CompileLike) -> CompileLike:
    """Validate a ``compile`` setting."""
    if isinstance(compile, bool):
        return compile
    if isinstance(compile, dict):
        return dict(compile)
    raise TypeError('compile must be True, False or a dict of torch.compile '
                    f'arguments, got {compile!r}')


def _compile_in_place(module: nn.Module, options: dict) -> None:
    """Compile ``module``'s forward in place: its state dict keys and
    hooks stay as they are (no ``_orig_mod.`` wrapper)."""
    if hasattr(module, 'compile'):  # torch >= 2.2
        module.compile(**options)
    else:
        module.forward = torch.compile(module.forward, **options)


def accelerate(module: nn.Module,
               channels_last: bool = False,
               compile: CompileLike = False,
               submodules: Optional[Sequence[str]] = None) -> nn.Module:
    """Prepare ``module`` for fast attack passes, in place.

    Args:
        module (nn.Module): The model (or an MMSeg segmentor).
        channels_last (bool): Store 4-d weights channels-last (NHWC), the
            layout tensor cores and oneDNN prefer for convolutions; feed it
            channels-last inputs too (:class:`FastModel` does).
        compile (CompileLike): ``torch.compile`` the forward passes.
        submodules (Sequence[str], optional): Compile these children (those
            that exist) instead of ``module`` itself, e.g. an MMSeg
            segmentor's ``backbone`` and ``decode_head``, whose inference
            code passes Python metadata that compilation would specialise
            on.

    Returns:
        nn.Module: ``module``.
    """
    options = check_compile(compile)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    if options is not False:
        options = {} if options is True else options
        if submodules is None:
            _compile_in_place(module, options)
        else:
            for name in submodules:
                child = getattr(module, name, None)
                if isinstance(child, nn.ModuleList):
                    for c in child:
                        _compile_in_place(c, options)
                elif isinstance(child, nn.Module):
                    _compile_in_place(child, options)
    return module


class FastModel(nn.Module):
    """A plain-PyTorch attack model with channels-last inputs and weights
    and/or a compiled forward.

    Args:
        model (nn.Module): ``x -> logits`` (changed in place, see
            :func:`accelerate`).
        channels_last (bool): Channels-last weights and inputs.
        compile (CompileLike): ``torch.compile`` the model's forward.

    Example::

        fast = FastModel(model.eval(), channels_last=True, compile=True)
        SEA(fast, 8 / 255).run(x, y)
    """

    def __init__(self,
                 model: nn.Module,
                 channels_last: bool = False,
                 compile: CompileLike = False):
        super().__init__()
        self.model = accelerate(model, channels_last, compile)
        self.channels_last = bool(channels_last)
        self.train(model.training)  # mirror the model's mode

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)
