"""The source registry: built-in sources, user-registered generators, and refusals."""

from __future__ import annotations

from collections.abc import Callable

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


def _device_like_names() -> list[str]:
    """Names of the built-in sources' derivation slots and of torch's device types that no
    built-in source uses here (on a CPU machine: 'accelerator', 'cuda', 'xpu', 'mps'...)."""
    candidates = ("random", "numpy", "torch", "accelerator", "cuda", "xpu", "mps", "hpu", "mtia")
    return [name for name in candidates if name not in registry.names()]


def test_registered_generators_named_like_devices_draw_streams_of_their_own() -> None:
    xpu, mps = torch.Generator(), torch.Generator()
    register_generator(xpu, name="xpu")
    register_generator(mps, name="mps")
    set_seed(0)
    with ReproducibleBlock("augment"):
        on_xpu, on_mps = torch.rand(4, generator=xpu), torch.rand(4, generator=mps)
    assert not torch.equal(on_xpu, on_mps)


def test_every_slot_and_device_name_gets_its_own_stream() -> None:
    names = _device_like_names()
    assert "accelerator" in names or torch.cuda.is_available()
    generators = {name: torch.Generator() for name in names}
    for name, generator in generators.items():
        register_generator(generator, name=name)
    set_seed(0)
    with ReproducibleBlock("augment"):
        drawn = {name: tuple(torch.rand(4, generator=g).tolist()) for name, g in generators.items()}
        drawn["<torch's own>"] = tuple(torch.rand(4).tolist())
    assert len(set(drawn.values())) == len(drawn), drawn
    with ReproducibleBlock("augment"):  # and each is the stream of its name, every time
        assert all(
            tuple(torch.rand(4, generator=g).tolist()) == drawn[name]
            for name, g in generators.items()
        )


def _global_numpy_generator() -> np.random.Generator:
    """A Generator over np.random's own bit generator (the one np.random.seed seeds)."""
    get_bit_generator = getattr(np.random, "get_bit_generator", None)  # NumPy >= 1.25
    bit_generator = (
        get_bit_generator()
        if get_bit_generator is not None
        else np.random.mtrand._rand._bit_generator
    )
    return np.random.Generator(bit_generator)


def assert_set_seed_is_the_recipe(seed: int) -> None:
    set_seed(seed)
    ours = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(seed)
    np.random.seed(seed)
    assert torch.equal(torch.rand(3), ours[0])
    assert np.array_equal(np.random.rand(3), ours[1])


@pytest.mark.parametrize(
    "generator",
    [lambda: torch.default_generator, _global_numpy_generator],
    ids=["torch.default_generator", "Generator(np.random's bit generator)"],
)
def test_registering_a_global_generator_is_refused_and_changes_nothing(
    generator: Callable[[], object],
) -> None:
    set_seed(4)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy())
    with pytest.raises(rb.ReproducibleBlockValueError, match="manage already"):
        register_generator(generator(), name="global")  # type: ignore[arg-type]
    assert registered_generators() == ()
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert_set_seed_is_the_recipe(5)
    caller = torch.get_rng_state()
    with ReproducibleBlock("k"):
        torch.rand(3)
    assert torch.equal(torch.get_rng_state(), caller)


@pytest.mark.parametrize(
    "pair",
    [
        lambda: (torch.Generator(),) * 2,
        lambda: (np.random.default_rng(0),) * 2,
        lambda: (lambda bits: (np.random.Generator(bits), np.random.Generator(bits)))(
            np.random.PCG64(0)
        ),
    ],
    ids=["one torch.Generator", "one np.random.Generator", "two Generators, one bit generator"],
)
def test_one_generator_registered_under_two_names_is_refused(
    pair: Callable[[], tuple[object, object]],
) -> None:
    first, second = pair()
    register_generator(first, name="a")  # type: ignore[arg-type]
    with pytest.raises(rb.ReproducibleBlockValueError, match="already managed as 'a'"):
        register_generator(second, name="b")  # type: ignore[arg-type]
    assert registered_generators() == ("a",)
    assert_set_seed_is_the_recipe(6)


def test_mersenne_twisters_are_declared_on_their_sources() -> None:
    from reproducible_block._sources.numpy_random import NumpyGeneratorSource
    from reproducible_block._sources.registry import MERSENNE_TWISTER_SLOTS
    from reproducible_block._sources.torch_random import TorchGeneratorSource

    assert sorted(MERSENNE_TWISTER_SLOTS) == ["numpy", "random", "torch"]
    assert all(source.mersenne_twister for source in registry.builtin()[:3])
    assert TorchGeneratorSource(torch.Generator(), "mine").mersenne_twister
    assert not NumpyGeneratorSource(np.random.default_rng(), "mine").mersenne_twister


def test_an_accelerator_that_reports_no_device_gets_no_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reproducible_block._sources import registry as _registry

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: None)
    assert _registry._accelerator_source() is None


def test_a_forked_child_gets_a_fresh_registry_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    from reproducible_block._sources import registry as _registry

    monkeypatch.setattr(registry, "_lock", registry._lock)  # put back afterwards
    held = registry._lock
    held.acquire()  # as if another thread held it at the fork
    try:
        _registry._after_fork_in_child()
        assert registry._lock is not held
        assert not registry._lock.locked()
    finally:
        held.release()


def test_a_numpy_state_with_an_unknown_value_is_refused() -> None:
    from reproducible_block import ReproducibleBlockTypeError
    from reproducible_block._sources.numpy_random import _to_plain

    with pytest.raises(ReproducibleBlockTypeError, match="cannot save the state"):
        _to_plain({"state": object()}, "the state of 'mine'")
