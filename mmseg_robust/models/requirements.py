"""What a segmentor config needs beyond this installation, in one sentence.

A few of MMSegmentation's model families need more than MMSeg itself:
compiled mmcv ops (CCNet, PSANet), MMDetection (MaskFormer, Mask2Former),
the optional packages of MMSeg's ``requirements/optional.txt`` (VPD) or a
CLIP checkpoint to be initialised at all (SAN). Without them MMSeg fails
deep inside the registry with messages such as ``BaseModule.__init__()
got an unexpected keyword argument 'in_channels'``.
:func:`check_model_requirements` reads the model config before anything is
built and says which family needs what; :func:`build_segmentor` builds
through that check.
"""
import importlib.util
import os.path as osp
from typing import Iterator, List, Optional, Tuple

import torch.nn as nn

__all__ = [
    'MissingRequirementError', 'model_requirement_problems',
    'check_model_requirements', 'explain_build_error', 'build_segmentor',
    'has_mmcv_ops', 'has_module'
]


class MissingRequirementError(RuntimeError):
    """A model needs a package (or file) this installation lacks.

    The message is one sentence naming the model family and what to
    install; command-line tools print it as ``error: ...``.
    """


def has_module(name: str) -> bool:
    """Whether ``name`` is importable (without importing it).

    Args:
        name (str): A module name, e.g. ``'mmdet'`` or ``'mmcv._ext'``.

    Returns:
        bool: ``True`` if the module can be found.
    """
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        # a missing parent package, or a module without a spec
        return False


def has_mmcv_ops() -> bool:
    """Whether mmcv's compiled ops (``mmcv._ext``) are installed: full mmcv,
    not mmcv-lite."""
    return has_module('mmcv._ext')


_MMCV_OPS = ("mmcv's compiled ops (mmcv._ext), which mmcv-lite lacks: "
             'install the full mmcv package (`mim install mmcv`, built for '
             'your torch)')
_MMDET = 'MMDetection 3.x (`mmdet`): install it (`mim install mmdet`)'
_VPD = ("the optional packages of MMSegmentation's requirements/"
        'optional.txt (the latent-diffusion `ldm` code of Stable '
        'Diffusion): install them')

#: ``type`` names (without registry scope) -> (family, what it needs, check)
_NEEDS = {
    'CCHead': ('CCNet', 'CrissCrossAttention from ' + _MMCV_OPS, has_mmcv_ops),
    'PSAHead': ('PSANet', 'PSAMask from ' + _MMCV_OPS, has_mmcv_ops),
    'Mask2FormerHead': ('Mask2Former', _MMDET, lambda: has_module('mmdet')),
    'MaskFormerHead': ('MaskFormer', _MMDET, lambda: has_module('mmdet')),
    'VPD': ('VPD', _VPD, lambda: has_module('ldm')),
    'VPDDepthHead': ('VPD', _VPD, lambda: has_module('ldm')),
}

#: packages named in ``custom_imports`` -> (what they are, hint)
_IMPORTS = {
    'mmdet':
    _MMDET,
    'mmpretrain':
    'MMPreTrain (`mmpretrain`): install it '
    '(`mim install mmpretrain`)',
}


def _types(cfg, path: str = 'model') -> Iterator[Tuple[str, str, dict]]:
    """``(path, type name without scope, dict)`` of every typed dict."""
    if isinstance(cfg, dict):
        t = cfg.get('type')
        if isinstance(t, str):
            yield path, t.split('.')[-1], cfg
        for k, v in cfg.items():
            yield from _types(v, f'{path}.{k}')
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            yield from _types(v, f'{path}[{i}]')


def _is_local_missing(path) -> bool:
    return isinstance(path, str) and '://' not in path and \
        not osp.isfile(path)


def model_requirement_problems(model_cfg: dict,
                               custom_imports: Optional[dict] = None,
                               training: bool = False) -> List[str]:
    """Every missing requirement of a model config, one sentence each.

    Args:
        model_cfg (dict): The ``model`` field of an MMSeg config.
        custom_imports (dict, optional): The config's ``custom_imports``:
            packages it imports that are not installed are reported too.
        training (bool): Also report what only training needs (SAN's CLIP
            checkpoint: MMSeg cannot initialise SAN without it; evaluating
            a trained SAN checkpoint does not need it).

    Returns:
        list[str]: Empty if nothing is missing.
    """
    problems: List[str] = []
    seen = set()
    for path, name, node in _types(model_cfg or {}):
        need = _NEEDS.get(name)
        if need is not None and need[0] not in seen and not need[2]():
            seen.add(need[0])
            problems.append(f'{need[0]} ({path}.type={name!r}) needs '
                            f'{need[1]}')
        if name in ('MultimodalEncoderDecoder', 'SideAdapterCLIPHead') \
                and training and 'SAN' not in seen:
            ckpt = (model_cfg or {}).get('pretrained')
            if ckpt is None or _is_local_missing(ckpt):
                seen.add('SAN')
                where = 'none is set' if ckpt is None else \
                    f'{ckpt!r} does not exist'
                problems.append(
                    'SAN (MultimodalEncoderDecoder) needs its CLIP '
                    'checkpoint in model.pretrained to be initialised for '
                    f'training ({where}); convert it with MMSeg\'s '
                    'tools/model_converters/clip2mmseg.py')
    # after the families: their sentence is the more precise one
    imports = (custom_imports or {}).get('imports', [])
    if isinstance(imports, str):
        imports = [imports]
    for imp in imports:
        top = imp.split('.')[0]
        if top in _IMPORTS and not has_module(top):
            problems.append(f'the config imports {imp!r}, which needs '
                            f'{_IMPORTS[top]}')
    return problems


def check_model_requirements(model_cfg: dict,
                             custom_imports: Optional[dict] = None,
                             training: bool = False) -> None:
    """Raise :class:`MissingRequirementError` for the first missing
    requirement of a model config (see :func:`model_requirement_problems`).

    Args:
        model_cfg (dict): The ``model`` field of an MMSeg config.
        custom_imports (dict, optional): The config's ``custom_imports``.
        training (bool): Also check what only training needs.

    Raises:
        MissingRequirementError: With a one-sentence message.
    """
    problems = model_requirement_problems(model_cfg, custom_imports, training)
    if problems:
        raise MissingRequirementError(problems[0])


def explain_build_error(err: BaseException,
                        model_cfg: Optional[dict] = None) -> Optional[str]:
    """One sentence for an error raised while building a model, if it comes
    from a missing requirement (``None`` otherwise).

    Args:
        err (BaseException): The error MMSeg's registry raised.
        model_cfg (dict, optional): The model config that was built: names
            the family when it is a known one.

    Returns:
        str | None: The sentence, or ``None`` for other errors.
    """
    if model_cfg is not None:
        problems = model_requirement_problems(model_cfg)
        if problems:
            return problems[0]
    chain, e = [], err
    while e is not None and len(chain) < 20:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        name = getattr(e, 'name', None) or ''
        text = str(e)
        if name.startswith('mmcv._ext') or 'mmcv._ext' in text or \
                'mmcv-full' in text:
            return ("this model needs mmcv's compiled ops (mmcv._ext; "
                    f'{text!r}), which mmcv-lite lacks: install the full '
                    'mmcv package (`mim install mmcv`, built for your torch)')
        if isinstance(e, ModuleNotFoundError) and name.split('.')[0] in (
                'mmdet', 'mmpretrain'):
            return f'this model needs {_IMPORTS[name.split(".")[0]]}'
    return None


def build_segmentor(model_cfg: dict,
                    custom_imports: Optional[dict] = None,
                    training: bool = False) -> nn.Module:
    """Build an MMSeg model from its config, with a one-sentence error for
    missing requirements instead of a registry traceback.

    Args:
        model_cfg (dict): The ``model`` field of an MMSeg config.
        custom_imports (dict, optional): The config's ``custom_imports``.
        training (bool): Also check what only training needs.

    Returns:
        nn.Module: The model, as ``MODELS.build`` returns it.

    Raises:
        MissingRequirementError: A package (or SAN's checkpoint) is missing.
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_robust  # noqa: F401  (mmcv-lite fixes before mmseg.models)
    check_model_requirements(model_cfg, custom_imports, training)
    init_default_scope('mmseg')
    try:
        return MODELS.build(model_cfg)
    except Exception as err:
        message = explain_build_error(err)
        if message is None:
            raise
        raise MissingRequirementError(message) from None
