"""Decorated functions, methods and classes, and blocks themselves, survive pickle and copy.

Module-level decorated functions pickle by reference (as plain functions do); instances of a
decorated class pickle, and the class stays itself; a copied or unpickled block is a fresh block
with the same key and options, never a second handle on the process's generators.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from reproducible_block import ReproducibleBlock, set_seed
from tests import _decorated
from tests._decorated import Net, Same, Wider, noise


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_module_level_decorated_function_pickles_by_reference(protocol: int) -> None:
    assert pickle.loads(pickle.dumps(noise, protocol=protocol)) is noise
    set_seed(0)
    assert torch.equal(pickle.loads(pickle.dumps(noise))(3), noise(3))


def test_a_decorated_function_keeps_name_doc_and_signature() -> None:
    assert noise.__name__ == "noise"
    assert noise.__module__ == _decorated.__name__
    assert noise.__doc__ == "Draws ``size`` numbers in the block \"noise\"."
    assert str(__import__("inspect").signature(noise)) == "(size: 'int') -> 'torch.Tensor'"


def test_a_local_decorated_function_refuses_pickling_with_a_clear_error() -> None:
    @ReproducibleBlock("local")
    def local() -> None: ...

    with pytest.raises(pickle.PicklingError, match="defined inside a function"):
        pickle.dumps(local)


def test_a_decorated_class_stays_itself_and_its_instances_pickle() -> None:
    set_seed(0)
    model = Net()
    assert type(model) is Net
    assert isinstance(model, torch.nn.Module)
    clone = pickle.loads(pickle.dumps(model))
    assert type(clone) is Net
    assert torch.equal(clone.layer.weight, model.layer.weight)
    buffer = io.BytesIO()
    torch.save(model, buffer)  # a whole model, as torch.save(model) users do
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False).layer.weight, model.layer.weight)


def test_construction_runs_in_the_block() -> None:
    set_seed(0)
    first = Net().layer.weight
    torch.rand(10)
    assert torch.equal(Net().layer.weight, first)


def test_subclasses_inherit_the_block_through_super_init() -> None:
    set_seed(0)
    base = Net(width=6).layer.weight
    assert torch.equal(Same(width=6).layer.weight, base)  # no __init__ of its own
    before = torch.get_rng_state()
    wider = Wider()
    assert torch.equal(wider.layer.weight, base)  # super().__init__() ran in the block
    torch.set_rng_state(before)
    caller = torch.nn.Linear(2, 2).weight  # extra was drawn from the caller's stream
    assert torch.equal(wider.extra.weight, caller)


def test_decorated_methods_pickle_bound_and_unbound() -> None:
    set_seed(0)
    model = Net()
    bound = pickle.loads(pickle.dumps(model.jitter))
    x = torch.zeros(2)
    assert torch.equal(bound(x), model.jitter(x))
    assert pickle.loads(pickle.dumps(Net.jitter))(model, x).shape == (2,)


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy,
                                       lambda b: pickle.loads(pickle.dumps(b))])
def test_a_copy_of_an_entered_block_isolates_like_the_original(duplicate: object) -> None:
    set_seed(0)
    block = ReproducibleBlock("noise", sources=("torch", "numpy"), per_rank=True)
    with block:
        expected = torch.rand(3)
    twin = duplicate(block)  # type: ignore[operator]
    assert repr(twin) == repr(block)
    assert twin is not block
    caller = torch.get_rng_state()
    with twin:
        assert torch.equal(torch.rand(3), expected)
    assert torch.equal(torch.get_rng_state(), caller)  # the caller's stream did not move


def test_a_copy_taken_while_the_block_is_open_is_closed() -> None:
    set_seed(0)
    block = ReproducibleBlock("open")
    with block:
        twin = copy.deepcopy(block)
        with twin:  # nests like a new block with the same key
            pass
    with twin:
        pass
