"""Blocks: a stream that depends only on (root seed, key); callers never notice the block."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import reproducible_block as rb
from reproducible_block import ReproducibleBlock, set_seed
from reproducible_block.diagnostics import record_blocks

from .._draws import GeneratorKind, draw_all


@pytest.fixture
def draw(generator_kind: GeneratorKind) -> Callable[[], list[float]]:
    return generator_kind.draw


def test_same_key_same_stream_whatever_ran_before(draw: Callable[[], list[float]]) -> None:
    set_seed(0)
    with ReproducibleBlock("section"):
        first = draw()
    for _ in range(3):
        draw()
    random.random()
    np.random.randn(5)
    torch.randn(7)
    with ReproducibleBlock("section"):
        second = draw()
    assert first == second


def test_distinct_keys_give_distinct_streams(draw: Callable[[], list[float]]) -> None:
    set_seed(0)
    seen = []
    for key in [0, 1, 2, "0", (0,), ("epoch", 0), ("epoch", 1), 10**12]:
        with ReproducibleBlock(key):  # type: ignore[arg-type]
            seen.append(tuple(draw()))
    assert len(set(seen)) == len(seen)


def test_caller_continues_as_if_the_block_never_ran(draw: Callable[[], list[float]]) -> None:
    set_seed(0)
    draw()
    expected_after = (draw(), draw())
    set_seed(0)
    draw()
    with ReproducibleBlock("block"):
        draw()
        draw()
    assert (draw(), draw()) == expected_after


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt, GeneratorExit])
def test_caller_state_is_restored_when_the_block_raises(
    draw: Callable[[], list[float]], error: type[BaseException]
) -> None:
    set_seed(0)
    expected = draw()
    set_seed(0)

    def failing_section() -> None:
        with ReproducibleBlock("failing"):
            draw()
            raise error()

    with pytest.raises(error):
        failing_section()
    assert draw() == expected


def test_nested_block_equals_top_level_and_outer_continues(
    draw: Callable[[], list[float]],
) -> None:
    set_seed(0)
    with ReproducibleBlock("inner"):
        inner_alone = draw()
    with ReproducibleBlock("outer"):
        outer_first = draw()
        outer_second = draw()
    with ReproducibleBlock("outer"):
        assert draw() == outer_first
        with ReproducibleBlock("inner"):
            assert draw() == inner_alone
        assert draw() == outer_second


def test_same_instance_is_reusable_and_reentrant(draw: Callable[[], list[float]]) -> None:
    set_seed(0)
    block = ReproducibleBlock("again")
    with block:
        first = draw()
        with block:
            assert draw() == first
    with block:
        assert draw() == first


def test_block_before_set_seed_raises_and_changes_nothing() -> None:
    rb._streams.root.replace_seed(None)
    state = (random.getstate(), torch.get_rng_state())
    with pytest.raises(rb.NotSeededError, match=r"set_seed\(\)"), ReproducibleBlock("x"):
        pass  # pragma: no cover - never entered
    assert random.getstate() == state[0]
    assert torch.equal(torch.get_rng_state(), state[1])


def test_disabled_block_is_a_no_op() -> None:
    set_seed(0)
    expected = draw_all()
    set_seed(0)
    with ReproducibleBlock("off", enabled=False) as block:
        assert draw_all() == expected
    assert not block.enabled


def test_sources_limits_what_the_block_manages() -> None:
    set_seed(0)
    with ReproducibleBlock("t", sources=("torch",)):
        torch_in_block = torch.rand(3).tolist()
        python_in_block = random.random()
    set_seed(0)
    with ReproducibleBlock("t"):
        assert torch.rand(3).tolist() == torch_in_block
    set_seed(0)
    assert random.random() == python_in_block  # Python's stream was not switched


def test_unknown_source_names_are_refused_on_entry() -> None:
    set_seed(0)
    state = torch.get_rng_state()
    block = ReproducibleBlock("t", sources=("torch", "jax"))
    with pytest.raises(ValueError, match="jax") as info, block:
        pass  # pragma: no cover - never entered
    assert "allowed" in str(info.value)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.accelerator.is_available(),
    reason="this machine has an accelerator",
)
@pytest.mark.parametrize("absent", ["cuda", "xpu"])
def test_an_accelerator_this_machine_lacks_is_a_no_op_source(absent: str) -> None:
    # Code written on a GPU machine, sources=("torch", "cuda"), runs in CPU CI.
    set_seed(0)
    with ReproducibleBlock("portable", sources=("torch", absent)):
        torch_in_block = torch.rand(3)
        python_in_block = random.random()
    with ReproducibleBlock("portable", sources=("torch",)):
        assert torch.equal(torch.rand(3), torch_in_block)
    set_seed(0)
    assert random.random() == python_in_block  # Python's stream was not switched
    before = torch.get_rng_state()
    with ReproducibleBlock("portable", sources=(absent,)):  # manages nothing here
        torch.rand(3)
    assert not torch.equal(torch.get_rng_state(), before)
    assert not torch.cuda.is_initialized()


@pytest.mark.parametrize("misspelt", ["cdua", "CUDA", "gpu"])
def test_a_misspelt_source_name_is_still_refused(misspelt: str) -> None:
    set_seed(0)
    with (
        pytest.raises(rb.ReproducibleBlockValueError, match=misspelt) as info,
        ReproducibleBlock("t", sources=("torch", misspelt)),
    ):
        pass  # pragma: no cover - never entered
    assert "'cuda', a no-op on a machine without one" in str(info.value)


@pytest.mark.parametrize("draws", [1, 2, 3])
def test_numpy_cached_gaussian_travels_with_the_caller_stream(draws: int) -> None:
    set_seed(0)
    np.random.randn(draws)  # an odd count leaves a cached Gaussian in the legacy state
    expected = np.random.randn(3).tolist()
    set_seed(0)
    np.random.randn(draws)
    with ReproducibleBlock("gauss"):
        np.random.randn(1)
    assert np.random.randn(3).tolist() == expected


def test_block_starts_without_a_cached_gaussian() -> None:
    set_seed(0)
    with ReproducibleBlock("g"):
        first = np.random.randn(2).tolist()
    np.random.randn(1)  # leaves a Gaussian cached outside
    with ReproducibleBlock("g"):
        assert np.random.randn(2).tolist() == first


def test_block_exposes_its_key_and_repr() -> None:
    block = ReproducibleBlock(("epoch", np.int32(3)), sources=["torch"])
    assert block.key == ("epoch", 3)
    assert isinstance(block.key[1], int)  # type: ignore[index]
    assert repr(block) == "ReproducibleBlock(('epoch', 3), sources=('torch',))"


def test_out_of_order_exit_is_reported() -> None:
    set_seed(0)
    first, second = ReproducibleBlock("a"), ReproducibleBlock("b")
    first.__enter__()
    second.__enter__()
    with pytest.raises(rb.BlockUsageError, match="reverse order"):
        first.__exit__(None, None, None)
    second.__exit__(None, None, None)


def test_a_failing_restore_still_restores_the_other_sources_and_raises() -> None:
    class FailsOnRestore(rb.GeneratorSource[int]):
        def __init__(self) -> None:
            self.state = 0

        def get_state(self) -> int:
            return self.state

        def set_state(self, state: int) -> None:
            if state == 0 and self.state == 7:
                raise OSError("device lost on restore")
            self.state = state

        def seed(self, seed: int) -> None: ...

        def from_bits(self, bits: bytes) -> int:
            return 7

    set_seed(0)
    rb.register_generator(FailsOnRestore(), name="fails-on-restore")
    expected = draw_all()
    set_seed(0)
    with pytest.raises(OSError, match="on restore"), ReproducibleBlock("k"):
        draw_all()
    assert draw_all() == expected  # the built-in sources were restored all the same
    with ReproducibleBlock("next", sources=("torch",)):  # and the lock was released
        pass


_ctrl_c = [True]


def _interrupted() -> float:
    if _ctrl_c[0]:
        raise KeyboardInterrupt  # Ctrl-C while a watched value is read at a block's exit
    return 0.0


@ReproducibleBlock("stepped")
def stepped() -> Iterator[None]:
    draw_all()
    yield
    draw_all()


def test_an_interrupt_while_the_ledger_records_an_exit_still_restores_the_caller(
    tmp_path: Path,
) -> None:
    set_seed(0)
    draw_all()
    expected, expected_after_step = draw_all(), draw_all()
    set_seed(0)
    draw_all()
    _ctrl_c[0] = True
    with record_blocks(tmp_path / "ledger.jsonl", watch={"loss": _interrupted}):
        with pytest.raises(KeyboardInterrupt), ReproducibleBlock("k"):
            draw_all()
        assert draw_all() == expected  # the caller's streams, not the block's
        steps = stepped()
        with pytest.raises(KeyboardInterrupt):
            next(steps)  # a decorated generator's step out, interrupted the same way
        assert draw_all() == expected_after_step
        _ctrl_c[0] = False
        with ReproducibleBlock("next"):  # the lock was released, no block left open
            assert rb.diagnostics.environment_report()["open_blocks"] == 1
