"""Running a function twice from one state and naming the first torch op whose outputs differ.

Both runs are traced (see ``_ops``). Between them every managed generator is put back (see
``run_from_same_state``), and so is every tensor that existed before and that the first run
changed in place (:class:`_Writes`), so that the second run starts where the first did.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec

import torch
from torch.utils._pytree import tree_leaves

from reproducible_block.diagnostics._compare import first_difference
from reproducible_block.diagnostics._consumption import run_from_same_state
from reproducible_block.diagnostics._op_records import OpDivergence, OpTrace
from reproducible_block.diagnostics._ops import check_callable, compare_traces, traced

__all__ = ["find_nondeterminism"]

P = ParamSpec("P")

# Ops that wrap data made outside torch's dispatch (NumPy arrays, Python lists) in a new tensor.
_LIFTS = frozenset({"lift_fresh", "lift_fresh_copy", "lift"})


@functools.lru_cache(maxsize=4096)
def _written(func: Any) -> tuple[tuple[int, str], ...]:
    """(position, name) of the arguments ``func`` writes to (``self`` of ``add_``, ``out=``)."""
    return tuple(
        (position, argument.name)
        for position, argument in enumerate(func._schema.arguments)
        if argument.alias_info is not None and argument.alias_info.is_write
    )


@functools.lru_cache(maxsize=4096)
def _makes_new(func: Any) -> bool | None:
    """Whether ``func``'s outputs are new tensors: True for a lift (its input is data made
    outside torch), None when they may still share an input's memory (``_unsafe_view``), False
    for views of, or writes into, its inputs."""
    if func.overloadpacket.__name__ in _LIFTS:
        return True
    return None if all(result.alias_info is None for result in func._schema.returns) else False


def _storages(value: object) -> Iterator[torch.UntypedStorage]:
    """The storages of a tensor or of a list of tensors (``Tensor(a!)[]`` arguments); none for
    tensors without memory of their own (meta, sparse, wrapper subclasses such as DTensor)."""
    for leaf in value if isinstance(value, (list, tuple)) else (value,):
        if (
            isinstance(leaf, torch.Tensor)
            and leaf.layout == torch.strided
            and not leaf.is_meta
            and not leaf.is_quantized
        ):
            try:
                storage = leaf.untyped_storage()
                storage.data_ptr()  # raises for a wrapper subclass's placeholder storage
            except (RuntimeError, NotImplementedError):
                continue
            yield storage


class _Writes:
    """The storages a run writes to in place that existed before it, as they were before.

    Tensors the run makes (every op's new outputs) are its own; a storage that existed before
    (a BatchNorm's running statistics, parameters an optimizer steps) is copied at its first
    write, so that :meth:`restore` starts a second run from the state the first started from.
    """

    def __init__(self) -> None:
        self._made: set[int] = set()
        self._before: dict[int, tuple[torch.UntypedStorage, torch.UntypedStorage]] = {}

    def will_write(self, func: Any, args: Any, kwargs: dict[str, Any]) -> list[int]:
        """Save what ``func`` is about to overwrite; return the written storages it made."""
        mine: list[int] = []
        for position, name in _written(func):
            value = args[position] if position < len(args) else kwargs.get(name)
            for storage in _storages(value):
                key = storage._cdata
                if key in self._made:
                    mine.append(key)
                elif key not in self._before and storage.nbytes():
                    self._before[key] = (storage, storage.clone())  # type: ignore[no-untyped-call]
        return mine

    def wrote(
        self, func: Any, args: Any, kwargs: dict[str, Any], result: Any, mine: list[int]
    ) -> None:
        """Note the storages ``func`` made (``set_``, ``resize_`` may give a tensor a new one)."""
        new = _makes_new(func)
        if new is not False:
            inputs = (
                set()
                if new
                else {storage._cdata for storage in _storages(tree_leaves((args, kwargs)))}
            )
            self._made.update(
                storage._cdata
                for storage in _storages(tree_leaves(result))
                if storage._cdata not in inputs
            )
        if mine:
            for position, name in _written(func):
                value = args[position] if position < len(args) else kwargs.get(name)
                self._made.update(storage._cdata for storage in _storages(value))

    def restore(self) -> None:
        """Put every storage the run wrote to back as it was before the run."""
        for storage, before in self._before.values():
            if storage.nbytes() == before.nbytes():  # not when the run resized it
                storage.copy_(before)


def find_nondeterminism(
    fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs
) -> OpDivergence | None:
    """Run ``fn`` twice from the same random state and name the first torch op that differs.

    Like :func:`assert_deterministic`, both runs start from the caller's state of every managed
    generator and the root, and the caller's state is put back afterwards. Tensors that existed
    before the call and that ``fn`` changes in place (a BatchNorm's running statistics in train
    mode, parameters an optimizer steps) are put back before the second run too, so that both
    runs start from the same state (afterwards they hold what one run left). Each run is traced
    (see :func:`trace_ops`); the result is None when every op's outputs and the two results are
    the same, else an :class:`OpDivergence` naming the first op whose outputs differ, the module
    it ran in (``Net.encoder.0``, from global forward hooks: ops outside every module, the
    backward pass included, have none), the line that called it and how many values differ by
    how much. If no op differs but the results do, the difference comes from code outside torch
    ops (Python or NumPy arithmetic, ops run in other threads) and ``op`` is None.

    It returns rather than raises, so you can print or inspect what it found: ``assert
    find_nondeterminism(step, batch) is None`` in a test. The first op that differs is where
    the difference enters torch: an op fed by an unseeded NumPy generator shows as
    ``aten.lift_fresh`` (the tensor made from NumPy data) at the line that made it.

    >>> import numpy as np, torch
    >>> from reproducible_block.diagnostics import find_nondeterminism
    >>> unseeded = np.random.default_rng()
    >>> found = find_nondeterminism(lambda x: x + torch.from_numpy(unseeded.random(3)),
    ...                             torch.zeros(3, dtype=torch.float64))
    >>> found.op == "aten.lift_fresh.default" and found.differing == 3
    True
    >>> find_nondeterminism(lambda x: torch.nn.functional.dropout(x, 0.5), torch.ones(8)) is None
    True
    """
    check_callable(fn)
    writes = _Writes()

    def second_run() -> tuple[OpTrace, Any]:
        writes.restore()  # the state the first run started from, not the state it left
        return traced(None, fn, *args, **kwargs)

    first_run: Callable[[], tuple[OpTrace, Any]] = functools.partial(
        traced, writes, fn, *args, **kwargs
    )
    runs = run_from_same_state([first_run, second_run])
    (first, first_result), (second, second_result) = runs
    found = compare_traces(first, second)
    if found is not None:
        return found
    difference = first_difference(first_result, second_result)
    if difference is None:
        return None
    return OpDivergence(
        f"every torch op's outputs agree ({len(first.ops)} ops), but the results differ at "
        f"result{difference.path}: {difference.description}. The difference comes from code "
        "outside torch ops: Python or NumPy arithmetic, or ops run in other threads."
    )
