"""mmseg_robust.cli.training.train: the Runner's late user errors become a
ConfigError by where they were raised, without changing the Runner."""
import pickle

import pytest

from mmseg_robust.cli.training import train
from mmseg_robust.compat.checkpoint import UnsafeCheckpointError
from mmseg_robust.errors import ConfigError


class FakeRunner:
    """``train()`` fails the way MMEngine's Runner does: inside
    ``build_dataloader`` or ``load_or_resume``, or elsewhere."""

    def __init__(self, where: str, error: BaseException):
        self.where, self.error = where, error

    def build_dataloader(self, dataloader):
        raise self.error

    def load_or_resume(self):
        raise self.error

    def elsewhere(self):
        raise self.error

    def train(self):
        if self.where == 'build_dataloader':
            self.build_dataloader(
                dict(dataset=dict(type='BaseSegDataset', data_root='x')))
        getattr(self, self.where)()


def test_missing_data_names_the_dataset():
    runner = FakeRunner('build_dataloader', FileNotFoundError('no x/img'))
    with pytest.raises(
            ConfigError,
            match=r'^a dataset \(BaseSegDataset\) '
            'could not be built: no x/img. Check its data_root'):
        train(runner, None, False)
    # the Runner is not changed
    assert 'build_dataloader' not in vars(runner)
    assert 'load_or_resume' not in vars(runner)


@pytest.mark.parametrize('resume', [False, True])
def test_checkpoint_that_does_not_load(resume):
    err = RuntimeError('size mismatch for backbone.x\nmore')
    with pytest.raises(ConfigError) as info:
        train(FakeRunner('load_or_resume', err), 'a.pth', resume)
    how = 'resume from' if resume else 'load'
    assert str(info.value) == (
        f'could not {how} checkpoint a.pth (RuntimeError: size mismatch '
        'for backbone.x): is it a checkpoint of this config, and complete? '
        '(--debug shows the traceback)')
    assert info.value.__cause__ is err


def test_weights_without_training_state_cannot_resume():
    with pytest.raises(
            ConfigError,
            match='^cannot resume from a.pth: it '
            'holds weights but no training state'):
        train(FakeRunner('load_or_resume', KeyError('meta')), 'a.pth', True)


@pytest.mark.parametrize(
    'where,error,checkpoint',
    [
        # raised elsewhere: not a user error of data or checkpoint
        ('elsewhere', FileNotFoundError('x'), 'a.pth'),
        ('elsewhere', RuntimeError('x'), 'a.pth'),
        # no checkpoint to blame
        ('load_or_resume', RuntimeError('x'), None),
        # safe loading's refusal keeps its own message
        ('load_or_resume', UnsafeCheckpointError('refused'), 'a.pth'),
        # not a loading error
        ('load_or_resume', ZeroDivisionError('x'), 'a.pth'),
    ])
def test_other_errors_pass_through(where, error, checkpoint):
    with pytest.raises(type(error)) as info:
        train(FakeRunner(where, error), checkpoint, False)
    assert info.value is error


def test_unpickling_error_is_a_load_error():
    err = pickle.UnpicklingError('bad')
    with pytest.raises(ConfigError, match='UnpicklingError: bad'):
        train(FakeRunner('load_or_resume', err), 'a.pth', False)
