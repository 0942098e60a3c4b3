"""mmcv-lite support: the pure-PyTorch ``mmcv.ops`` fallback."""
import subprocess
import sys
import textwrap

import pytest
import torch

import mmseg_robust  # noqa: F401
from mmseg_robust.compat import mmcv_ops


def _has_compiled_ops() -> bool:
    import mmseg  # noqa: F401  (the patch is applied when mmseg is imported)
    return not mmcv_ops.fallback_installed()


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120)


@pytest.mark.skipif(_has_compiled_ops(), reason='full mmcv installed')
def test_mmseg_imports_with_mmcv_lite():
    import mmcv.ops
    import mmseg.models  # noqa: F401
    from mmseg.models.decode_heads import cc_head, point_head, psa_head
    assert mmcv.ops.point_sample is mmcv_ops.point_sample
    assert mmcv.ops.sigmoid_focal_loss is mmcv_ops.sigmoid_focal_loss
    # guarded imports took their "op not available" branch
    assert cc_head.CrissCrossAttention is None
    assert psa_head.PSAMask is None
    # point_head imports point_sample under a guard: it gets ours
    assert point_head.point_sample is mmcv_ops.point_sample


@pytest.mark.skipif(_has_compiled_ops(), reason='full mmcv installed')
def test_missing_ops_behave_as_missing():
    """hasattr/getattr answer "absent" instead of raising; imports raise
    ModuleNotFoundError, as MMSeg's guarded imports expect."""
    import mmcv
    import mmcv.ops
    assert not hasattr(mmcv.ops, 'nms')
    assert getattr(mmcv.ops, 'nms', None) is None
    with pytest.raises(AttributeError, match='compiled mmcv ops'):
        mmcv.ops.DeformConv2d
    with pytest.raises(ModuleNotFoundError, match='compiled mmcv ops') as e:
        from mmcv.ops import CrissCrossAttention  # noqa: F401
    assert e.value.name == 'mmcv._ext'
    with pytest.raises(ModuleNotFoundError, match='compiled mmcv ops'):
        import mmcv.ops.nms  # noqa: F401
    with pytest.raises(ModuleNotFoundError):
        from mmcv.ops.nms import batched_nms  # noqa: F401
    # the two provided names, both ways
    from mmcv.ops import point_sample, sigmoid_focal_loss  # noqa: F401
    assert hasattr(mmcv.ops, 'point_sample')
    assert mmcv.ops is mmcv.__dict__['ops']


def test_fresh_process_warns_once_and_imports_everything():
    res = _run("""
        import warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            import mmseg_robust
            import mmseg_robust.compat as c
            c.install_compat()
            import mmseg.models, mmseg.utils
            c.install_compat()
        from mmseg_robust.compat.mmcv_ops import fallback_installed
        ours = [x for x in w if "compat patch 'mmcv_ops'" in str(x.message)]
        print(fallback_installed(), len(ours))
        """)
    assert res.returncode == 0, res.stderr
    installed, n_warnings = res.stdout.split()
    if installed == 'True':
        assert n_warnings == '1'
    else:
        assert n_warnings == '0'


def test_compiled_ops_present_are_left_untouched():
    """Simulate a full mmcv: an importable ``mmcv.ops`` must stay as it is
    and no warning is given."""
    res = _run("""
        import sys, types, warnings
        fake = types.ModuleType('mmcv.ops')
        fake.point_sample = 'compiled'
        fake.sigmoid_focal_loss = 'compiled'
        def any_op(name):  # like a full mmcv: every op MMSeg imports
            if name.startswith('__'):
                raise AttributeError(name)
            return type(name, (), {})
        fake.__getattr__ = any_op
        import mmcv
        sys.modules['mmcv.ops'] = fake
        mmcv.ops = fake
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            import mmseg_robust, mmseg
        import mmcv.ops
        from mmseg_robust.compat import compat_status
        from mmseg_robust.compat.mmcv_ops import fallback_installed
        ours = [x for x in w if 'mmcv_ops' in str(x.message)]
        print(mmcv.ops is fake, mmcv.ops.point_sample, fallback_installed(),
              len(ours), compat_status()['mmcv_ops'].split(':')[0])
        """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [
        'True', 'compiled', 'False', '0', 'not', 'needed'
    ]


def test_unrelated_import_errors_are_not_hidden():
    """A missing dependency other than ``mmcv._ext`` must surface."""
    res = _run("""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == 'mmcv.ops':
                    raise ModuleNotFoundError("No module named 'scipy_x'",
                                              name='scipy_x')
        sys.meta_path.insert(0, Block())
        import mmseg_robust
        try:
            mmseg_robust.register_all_modules()
            import mmseg
        except ModuleNotFoundError as e:
            print('raised', e.name)
        """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == 'raised scipy_x'


def test_point_sample_at_pixel_centres_returns_pixels():
    feats = torch.randn(2, 5, 6, 7)
    ii, jj = torch.meshgrid(torch.arange(6), torch.arange(7), indexing='ij')
    pts = torch.stack([(jj + 0.5) / 7, (ii + 0.5) / 6], -1).view(1, -1, 2)
    out = mmcv_ops.point_sample(feats, pts.expand(2, -1, -1))
    assert out.shape == (2, 5, 42)
    torch.testing.assert_close(out, feats.flatten(2))
    # grid form (N, Hg, Wg, 2) keeps its two spatial dims
    grid = torch.stack([(jj + 0.5) / 7, (ii + 0.5) / 6], -1)[None]
    out = mmcv_ops.point_sample(feats[:1], grid)
    torch.testing.assert_close(out, feats[:1])


def test_point_sample_interpolates_bilinearly():
    feats = torch.arange(4.).view(1, 1, 2, 2)  # [[0, 1], [2, 3]]
    centre = torch.tensor([[[0.5, 0.5]]])
    assert mmcv_ops.point_sample(feats, centre).item() == pytest.approx(1.5)


def _reference_focal(logits, target, gamma, alpha):
    """Straightforward per-element sigmoid focal loss."""
    n, c = logits.shape
    out = torch.zeros(n, c, dtype=torch.float64)
    for i in range(n):
        for k in range(c):
            p = torch.sigmoid(logits[i, k].double())
            if target[i] == k:
                out[i, k] = -alpha * (1 - p)**gamma * torch.log(p)
            else:
                out[i, k] = -(1 - alpha) * p**gamma * torch.log(1 - p)
    return out


def test_sigmoid_focal_loss_matches_definition():
    torch.manual_seed(0)
    logits = torch.randn(6, 4) * 3
    target = torch.tensor([0, 1, 3, 4, 2, 4])  # 4 = background
    ref = _reference_focal(logits, target, 2.0, 0.25)
    out = mmcv_ops.sigmoid_focal_loss(logits, target, 2.0, 0.25, None, 'none')
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    mean = mmcv_ops.sigmoid_focal_loss(logits, target, 2.0, 0.25)
    assert mean.item() == pytest.approx(ref.sum().item() / 6, rel=1e-5)
    total = mmcv_ops.sigmoid_focal_loss(logits, target, reduction='sum')
    assert total.item() == pytest.approx(ref.sum().item(), rel=1e-5)
    w = torch.tensor([1., 2., 3., 4.])
    weighted = mmcv_ops.sigmoid_focal_loss(logits, target, 2.0, 0.25, w,
                                           'none')
    scale = torch.tensor([1., 2., 4., 1., 3., 1.]).unsqueeze(1)
    torch.testing.assert_close(weighted, out * scale)


def test_sigmoid_focal_loss_matches_mmseg_python_version():
    """MMSeg's own pure-Python focal loss (one-hot targets) agrees."""
    from mmseg.models.losses.focal_loss import py_sigmoid_focal_loss
    torch.manual_seed(1)
    logits = torch.randn(10, 3)
    target = torch.randint(0, 3, (10, ))
    ref = py_sigmoid_focal_loss(
        logits,
        torch.nn.functional.one_hot(target, 3).float(),
        gamma=2.0,
        alpha=0.5,
        reduction='none')
    ours = mmcv_ops.sigmoid_focal_loss(logits, target, 2.0, 0.5, None, 'none')
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_sigmoid_focal_loss_bad_input():
    with pytest.raises(ValueError, match='reduction'):
        mmcv_ops.sigmoid_focal_loss(
            torch.zeros(2, 3),
            torch.zeros(2, dtype=torch.long),
            reduction='avg')
    with pytest.raises(ValueError, match=r'\(N, C\)'):
        mmcv_ops.sigmoid_focal_loss(
            torch.zeros(2, 3, 1), torch.zeros(2, dtype=torch.long))
