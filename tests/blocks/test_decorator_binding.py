"""@ReproducibleBlock(key) on every binding kind: fresh per call, metadata kept, args passed."""

from __future__ import annotations

import inspect

import pytest
import torch

from reproducible_block import ReproducibleBlock, set_seed


def _in_block(key: str) -> torch.Tensor:
    with ReproducibleBlock(key):
        return torch.rand(2)


@ReproducibleBlock("function")
def function(scale: float, *, shift: float = 0.0) -> torch.Tensor:
    """Scaled draws."""
    return torch.rand(2) * scale + shift


class Model:
    @ReproducibleBlock("method")
    def method(self, scale: float, *, shift: float = 0.0) -> torch.Tensor:
        """Scaled draws."""
        return torch.rand(2) * scale + shift

    @ReproducibleBlock("classmethod")
    @classmethod
    def klass(cls, scale: float, *, shift: float = 0.0) -> torch.Tensor:
        """Scaled draws."""
        assert cls is Model
        return torch.rand(2) * scale + shift

    @ReproducibleBlock("staticmethod")
    @staticmethod
    def static(scale: float, *, shift: float = 0.0) -> torch.Tensor:
        """Scaled draws."""
        return torch.rand(2) * scale + shift


CALLS = {
    "function": (function, "function"),
    "method": (Model().method, "method"),
    "classmethod via class": (Model.klass, "classmethod"),
    "classmethod via instance": (Model().klass, "classmethod"),
    "staticmethod via class": (Model.static, "staticmethod"),
    "staticmethod via instance": (Model().static, "staticmethod"),
}


@pytest.mark.parametrize("kind", sorted(CALLS))
def test_each_call_runs_in_a_fresh_block_with_args_and_kwargs(kind: str) -> None:
    decorated, key = CALLS[kind]
    set_seed(0)
    expected = _in_block(key) * 2 + 1
    torch.rand(5)
    assert torch.equal(decorated(2, shift=1), expected)
    assert torch.equal(decorated(2.0, shift=1.0), expected)


@pytest.mark.parametrize("kind", sorted(CALLS))
def test_caller_stream_is_untouched_by_a_decorated_call(kind: str) -> None:
    decorated, _ = CALLS[kind]
    set_seed(0)
    expected = torch.rand(3)
    set_seed(0)
    decorated(1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("decorated", "name", "qualname"),
    [
        (function, "function", "function"),
        (Model.method, "method", "Model.method"),
        (Model.klass, "klass", "Model.klass"),
        (Model.static, "static", "Model.static"),
    ],
)
def test_metadata_and_signature_survive(decorated: object, name: str, qualname: str) -> None:
    assert decorated.__name__ == name  # type: ignore[attr-defined]
    assert decorated.__qualname__ == qualname  # type: ignore[attr-defined]
    assert decorated.__doc__ == "Scaled draws."
    parameters = list(inspect.signature(decorated).parameters)  # type: ignore[arg-type]
    assert parameters[-2:] == ["scale", "shift"]


def test_decorated_class_constructs_inside_the_block_and_stays_a_class() -> None:
    @ReproducibleBlock("net")
    class Net(torch.nn.Module):
        """A tiny net."""

        def __init__(self, width: int) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(width, width)

    set_seed(0)
    first = Net(4)
    torch.rand(10)
    second = Net(width=4)
    assert isinstance(first, Net)
    assert Net.__doc__ == "A tiny net."
    assert torch.equal(first.layer.weight, second.layer.weight)


def test_exception_in_a_decorated_call_restores_the_caller() -> None:
    @ReproducibleBlock("boom")
    def boom() -> None:
        torch.rand(3)
        raise RuntimeError("inside")

    set_seed(0)
    expected = torch.rand(2)
    set_seed(0)
    with pytest.raises(RuntimeError, match="inside"):
        boom()
    assert torch.equal(torch.rand(2), expected)


def test_disabled_decorator_calls_straight_through() -> None:
    @ReproducibleBlock("off", enabled=False)
    def draw() -> torch.Tensor:
        return torch.rand(2)

    set_seed(0)
    expected = torch.rand(2)
    set_seed(0)
    assert torch.equal(draw(), expected)


def test_decorating_something_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="decorates functions"):
        ReproducibleBlock("x")(42)  # type: ignore[type-var]


def test_stream_per_epoch_with_a_tuple_key() -> None:
    def train_one_epoch(epoch: int) -> torch.Tensor:
        with ReproducibleBlock(("train", epoch)):
            return torch.rand(2)

    set_seed(0)
    epochs = [train_one_epoch(epoch) for epoch in range(3)]
    torch.rand(4)
    assert torch.equal(train_one_epoch(1), epochs[1])
    assert not torch.equal(epochs[0], epochs[1])
