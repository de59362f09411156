"""The source registry: built-in sources, user-registered generators, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reproducible_block as rb
from reproducible_block import (
    ReproducibleBlock,
    register_generator,
    registered_generators,
    set_seed,
    unregister_generator,
)
from reproducible_block._sources.registry import registry


def test_builtin_sources_on_a_cpu_only_machine() -> None:
    names = [source.name for source in registry.builtin()]
    assert names[:3] == ["random", "numpy", "torch"]
    if not torch.cuda.is_available():
        assert "cuda" not in names
        assert not torch.cuda.is_initialized()


def test_set_seed_seeds_registered_generators_by_name_not_by_order() -> None:
    a, b = torch.Generator(), np.random.default_rng()
    register_generator(a, name="a")
    register_generator(b, name="b")
    set_seed(3)
    first = (torch.rand(3, generator=a), b.random(3))
    unregister_generator("a")
    unregister_generator("b")
    c, d = torch.Generator(), np.random.default_rng()
    register_generator(d, name="b")
    register_generator(c, name="a")
    set_seed(3)
    assert torch.equal(torch.rand(3, generator=c), first[0])
    assert np.array_equal(d.random(3), first[1])
    assert registered_generators() == ("b", "a")


def test_two_registered_generators_get_different_streams() -> None:
    a, b = torch.Generator(), torch.Generator()
    register_generator(a, name="a")
    register_generator(b, name="b")
    set_seed(3)
    assert not torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))


def test_registered_generator_not_in_sources_is_left_alone() -> None:
    generator = torch.Generator()
    register_generator(generator, name="mine")
    set_seed(0)
    expected = torch.rand(2, generator=generator)
    set_seed(0)
    with ReproducibleBlock("k", sources=("torch",)):
        assert torch.equal(torch.rand(2, generator=generator), expected)


@pytest.mark.parametrize(
    ("generator", "name", "error"),
    [
        (np.random.RandomState(0), "x", TypeError),
        ("not a generator", "x", TypeError),
        (torch.Generator(), "", ValueError),
        (torch.Generator(), 3, TypeError),
        (torch.Generator(), b"x", TypeError),
        (torch.Generator(), "torch", ValueError),
    ],
)
def test_bad_registrations_are_refused(generator: object, name: object, error: type) -> None:
    with pytest.raises(error) as info:
        register_generator(generator, name=name)  # type: ignore[arg-type]
    assert isinstance(info.value, rb.ReproducibleBlockError)
    assert registered_generators() == ()


def test_registration_inside_a_block_is_refused() -> None:
    set_seed(0)
    with ReproducibleBlock("k"), pytest.raises(rb.BlockUsageError):
        register_generator(torch.Generator(), name="late")
    assert registered_generators() == ()


def test_unregistering_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="built-in"):
        unregister_generator("torch")


def test_failed_install_rolls_back_the_sources_already_switched() -> None:
    class Broken(rb.GeneratorSource[int]):
        def get_state(self) -> int:
            return 0

        def set_state(self, state: int) -> None:
            if state == 1:
                raise OSError("device lost")

        def seed(self, seed: int) -> None: ...

        def from_bits(self, bits: bytes) -> int:
            return 1

    set_seed(0)
    rb.register_generator(Broken(), name="broken")
    state = torch.get_rng_state()
    python_state = __import__("random").getstate()
    with pytest.raises(OSError, match="device lost"), ReproducibleBlock("k"):
        pass  # pragma: no cover - never entered
    assert torch.equal(torch.get_rng_state(), state)
    assert __import__("random").getstate() == python_state
    with ReproducibleBlock("fine", sources=("torch",)):  # the lock was released
        pass
