"""History buffer semantics on known tensors: fill, replace, half-and-half batches, state."""

import pytest
import torch

from refinegan.errors import TrainingError
from refinegan.refiner.history import ImageHistory


def _batch(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def _ids(t):
    return sorted(int(v) for v in t[:, 0, 0, 0])


def _hist(capacity, seed=0, fraction=0.5):
    return ImageHistory(capacity, (1, 2, 2), torch.Generator().manual_seed(seed), fraction=fraction)


def test_fills_in_order_then_replaces_random_slots():
    h = _hist(4)
    h.add(_batch([1, 2, 3]))
    assert len(h) == 3 and _ids(h.images[:3]) == [1, 2, 3]
    h.add(_batch([4, 5]))  # 4 fills the last slot, 5 replaces one of 1..4
    assert len(h) == 4
    ids = _ids(h.images)
    assert 5 in ids and len(set(ids) & {1, 2, 3, 4}) == 3


def test_mix_is_half_current_half_history():
    h = _hist(8)
    first = h.mix(_batch([1, 2, 3, 4]))  # empty buffer: all current
    assert _ids(first) == [1, 2, 3, 4]
    mixed = h.mix(_batch([11, 12, 13, 14]))
    assert mixed.shape == (4, 1, 2, 2)
    assert _ids(mixed[:2]) == [11, 12]  # the first half of the current batch
    assert set(_ids(mixed[2:])) <= {1, 2, 3, 4}  # the rest from the past
    assert _ids(h.images[: len(h)]) == [1, 2, 3, 4, 11, 12, 13, 14]


def test_fraction_and_disabled_buffer():
    h = _hist(8, fraction=0.25)
    h.add(_batch(range(8)))
    assert _ids(h.mix(_batch([20, 21, 22, 23]))[:3]) == [20, 21, 22]
    off = _hist(0)
    assert _ids(off.mix(_batch([1, 2]))) == [1, 2] and len(off) == 0


def test_same_generator_seed_same_draws_and_state_round_trip():
    a, b = _hist(4, seed=3), _hist(4, seed=3)
    for h in (a, b):
        h.add(_batch(range(10)))
    assert torch.equal(a.images, b.images)
    state = a.state_dict()
    c = _hist(4, seed=99)
    c.load_state_dict(state)
    assert torch.equal(c.sample(6), a.sample(6))


def test_errors():
    with pytest.raises(TrainingError, match="cannot sample from an empty history buffer"):
        _hist(4).sample(2)
    with pytest.raises(TrainingError, match="capacity must be >= 0, got -1"):
        _hist(-1)
    with pytest.raises(TrainingError, match=r"checkpoint history buffer holds 4 stamps, config asks for 8"):
        _hist(8).load_state_dict(_hist(4).state_dict())
