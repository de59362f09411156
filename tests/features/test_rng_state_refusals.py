"""load_rng_state refuses what does not fit, and a refused load changes nothing at all."""

from __future__ import annotations

import copy
import io
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from reproducible_block import (
    SEED_ENVIRONMENT_VARIABLE,
    BlockUsageError,
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    _checkpoint,
    get_rng_state,
    load_rng_state,
    register_generator,
    set_seed,
    unregister_generator,
)
from reproducible_block._sources.devices import CudaSource, QueuedSeeds
from reproducible_block._streams.root import peek_seed
from reproducible_block._support.checks import describe
from tests._plain_source import Unplugged

from .._raw import Managed, managed_setup

Entry = dict[str, Any]


@pytest.fixture
def managed() -> Managed:
    return managed_setup()


def assert_refused_changes_nothing(
    managed: Managed, load: Callable[[], None], error: type[Exception], match: str
) -> None:
    """The load raises ``error``; the next draws equal those of a program that never called it."""
    root = peek_seed()
    before = managed.capture()
    with pytest.raises(error, match=match):
        load()
    after_refusal = managed.draw()
    managed.restore(before)
    assert managed.draw() == after_refusal
    assert peek_seed() == root


def edited(edit: Callable[[Entry], object]) -> Callable[[list[Entry]], list[Entry]]:
    """A copy of the states whose only entry ``edit`` changed in place."""

    def apply(states: list[Entry]) -> list[Entry]:
        changed = copy.deepcopy(states)
        edit(changed[0])
        return changed

    return apply


def _set(path: tuple[str | int, ...], value: object) -> Callable[[Entry], None]:
    def edit(entry: Entry) -> None:
        target: Any = entry
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


def _delete(*path: str) -> Callable[[Entry], None]:
    def edit(entry: Entry) -> None:
        target: Any = entry
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return edit


def _edit_tensor(path: tuple[str, ...], change: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    def edit(entry: Entry) -> None:
        target: Any = entry
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = change(target[path[-1]])

    return edit


def _torch_position(state: torch.Tensor) -> torch.Tensor:
    """A CPU state whose Mersenne Twister position is out of range (torch's own check)."""
    raw = bytearray(state.numpy().tobytes())
    struct.pack_into("<i", raw, 8, 10**6)  # `left`, after the u64 seed
    return torch.frombuffer(raw, dtype=torch.uint8).clone()


def _word(value: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def change(key: torch.Tensor) -> torch.Tensor:
        key = key.clone()
        key[7] = value
        return key

    return change


PYTHON = ("sources", "random", "state")
NUMPY = ("sources", "numpy", "state")
TORCH = ("sources", "torch", "state")
USER_NUMPY = ("sources", "user-numpy", "state", "state")

# (what is wrong, how to make it so, the error, a phrase of its message)
CORRUPTIONS: list[tuple[str, Callable[[list[Entry]], object], type[Exception], str]] = [
    ("a dict, not the list", lambda states: states[0], ReproducibleBlockTypeError, "the list"),
    ("an empty list", lambda states: [], ReproducibleBlockTypeError, "the list"),
    (
        "an entry that is no dict",
        lambda states: ["entry"],
        ReproducibleBlockValueError,
        r"states\[0\] is str",
    ),
    (
        "an unknown format version",
        edited(_set(("format_version",), 2)),
        ReproducibleBlockValueError,
        "reads format_version 1",
    ),
    (
        "a format version that is a bool",
        edited(_set(("format_version",), True)),
        ReproducibleBlockValueError,
        "reads format_version 1",
    ),
    (
        "no format version",
        edited(_delete("format_version")),
        ReproducibleBlockValueError,
        "format_version",
    ),
    (
        "another derivation version",
        edited(_set(("derivation",), 2)),
        ReproducibleBlockValueError,
        r"derivation version 2.*derives version 1.*version that saved",
    ),
    (
        "no derivation version",
        edited(_delete("derivation")),
        ReproducibleBlockValueError,
        r"\['derivation'\] is NoneType",
    ),
    ("a truncated entry", edited(_delete("root")), ReproducibleBlockValueError, "keys"),
    (
        "another rank's entry",
        edited(_set(("rank",), 1)),
        ReproducibleBlockValueError,
        r"\['rank'\] is int 1",
    ),
    (
        "a world size that is not the list's",
        edited(_set(("world_size",), 2)),
        ReproducibleBlockValueError,
        r"\['world_size'\]",
    ),
    (
        "a source missing",
        edited(_delete("sources", "user-torch")),
        ReproducibleBlockValueError,
        r"missing from the states: \['user-torch'\]",
    ),
    (
        "a source of another kind",
        edited(_set(("sources", "user-torch", "kind"), "numpy-generator")),
        ReproducibleBlockValueError,
        "'torch-generator'",
    ),
    (
        "a truncated torch state",
        edited(_edit_tensor((*TORCH, "state"), lambda t: t[:-1])),
        ReproducibleBlockValueError,
        "5056 elements",
    ),
    (
        "a torch state of another dtype",
        edited(_edit_tensor((*TORCH, "state"), lambda t: t.float())),
        ReproducibleBlockValueError,
        "uint8",
    ),
    (
        "a torch state torch rejects",
        edited(_edit_tensor((*TORCH, "state"), _torch_position)),
        ReproducibleBlockValueError,
        "valid torch CPU state",
    ),
    (
        "a torch generator on another device",
        edited(_set((*TORCH, "device"), "cuda:0")),
        ReproducibleBlockValueError,
        r"\['device'\]",
    ),
    (
        "a Python key word out of range",
        edited(_edit_tensor((*PYTHON, "key"), _word(2**32))),
        ReproducibleBlockValueError,
        "2\\*\\*32 - 1",
    ),
    (
        "a Python key word below zero",
        edited(_edit_tensor((*PYTHON, "key"), _word(-1))),
        ReproducibleBlockValueError,
        "from 0 to",
    ),
    (
        "a Python position out of range",
        edited(_set((*PYTHON, "pos"), 625)),
        ReproducibleBlockValueError,
        r"\['pos'\] is int 625",
    ),
    (
        "a Python version that is not 3",
        edited(_set((*PYTHON, "version"), 2)),
        ReproducibleBlockValueError,
        r"\['version'\]",
    ),
    (
        "a cached Gaussian that is no float",
        edited(_set((*PYTHON, "gauss_next"), "0.5")),
        ReproducibleBlockValueError,
        r"\['gauss_next'\]",
    ),
    (
        "a truncated NumPy key",
        edited(_edit_tensor((*NUMPY, "key"), lambda t: t[:-1])),
        ReproducibleBlockValueError,
        "624 elements",
    ),
    (
        "a NumPy has_gauss out of range",
        edited(_set((*NUMPY, "has_gauss"), 2)),
        ReproducibleBlockValueError,
        r"\['has_gauss'\]",
    ),
    (
        "a bool where NumPy has an int",
        edited(_set((*NUMPY, "pos"), True)),
        ReproducibleBlockValueError,
        r"\['pos'\] is bool",
    ),
    (
        "a NumPy legacy state of another bit generator",
        edited(_set((*NUMPY, "bit_generator"), "PCG64")),
        ReproducibleBlockValueError,
        "'MT19937'",
    ),
    (
        "a cached NumPy Gaussian that is no float",
        edited(_set((*NUMPY, "cached_gaussian"), 1)),
        ReproducibleBlockValueError,
        "a float",
    ),
    (
        "a Generator state of another bit generator",
        edited(_set((*USER_NUMPY, "bit_generator"), "MT19937")),
        ReproducibleBlockValueError,
        "PCG64",
    ),
    (
        "a Generator state that overflows",
        edited(_set((*USER_NUMPY, "state", "state"), 2**200)),
        ReproducibleBlockValueError,
        "a state of PCG64.*OverflowError",
    ),
    (
        "a Generator flag NumPy would keep",
        edited(_set((*USER_NUMPY, "has_uint32"), 5)),
        ReproducibleBlockValueError,
        r"\['has_uint32'\] is int 5",
    ),
    (
        "a Generator state that is no dict",
        edited(_set(USER_NUMPY, 5)),
        ReproducibleBlockValueError,
        "a dict",
    ),
    (
        "a Generator state with a float array",
        edited(_set((*USER_NUMPY, "has_uint32"), ("ndarray", "float64", [1], [1]))),
        ReproducibleBlockValueError,
        "ndarray",
    ),
    (
        "a Generator state with an array value out of range",
        edited(_set((*USER_NUMPY, "has_uint32"), ("ndarray", "uint8", [1], [256]))),
        ReproducibleBlockValueError,
        "uint8 values",
    ),
    (
        "a Generator state holding a list",
        edited(_set((*USER_NUMPY, "state", "inc"), [1])),
        ReproducibleBlockValueError,
        "an int, float, str",
    ),
    (
        "a root seed out of range",
        edited(_set(("root", "seed"), -1)),
        ReproducibleBlockValueError,
        r"\['seed'\]",
    ),
    (
        "a root seed that is a bool",
        edited(_set(("root", "seed"), True)),
        ReproducibleBlockValueError,
        r"\['seed'\] is bool",
    ),
    (
        "a truncated root",
        edited(_delete("root", "seed")),
        ReproducibleBlockValueError,
        r"\['root'\] is a dict with the keys \[\]; expected a dict with the keys \['seed'\]",
    ),
    (
        "a root with an extra field",
        edited(_set(("root", "snapshot"), {})),
        ReproducibleBlockValueError,
        r"\['root'\]",
    ),
    (
        "open blocks that are no list",
        edited(_set(("open_blocks",), "none")),
        ReproducibleBlockValueError,
        r"\['open_blocks'\]",
    ),
    (
        "sources that are no dict",
        edited(_set(("sources",), [])),
        ReproducibleBlockValueError,
        r"\['sources'\]",
    ),
]


@pytest.mark.parametrize(
    ("corrupt", "error", "match"),
    [case[1:] for case in CORRUPTIONS],
    ids=[case[0] for case in CORRUPTIONS],
)
def test_a_corrupted_or_mismatched_checkpoint_is_refused_untouched(
    managed: Managed,
    corrupt: Callable[[list[Entry]], Any],
    error: type[Exception],
    match: str,
) -> None:
    states = corrupt(get_rng_state())
    managed.draw()  # the generators move on, so a half-applied load would show
    assert_refused_changes_nothing(managed, lambda: load_rng_state(states), error, match)


def test_states_from_a_different_number_of_ranks_are_refused(managed: Managed) -> None:
    (entry,) = get_rng_state()
    second = {**copy.deepcopy(entry), "rank": 1, "world_size": 2}
    states = [{**entry, "world_size": 2}, second]
    managed.draw()
    assert_refused_changes_nothing(
        managed,
        lambda: load_rng_state(states),
        ReproducibleBlockValueError,
        "saved by 2 rank.* this run has 1.*on_world_size_change='derive'",
    )


def test_derive_restores_the_ranks_the_checkpoint_has(managed: Managed) -> None:
    (entry,) = get_rng_state()
    expected = managed.draw()
    other = {**copy.deepcopy(entry), "rank": 1, "world_size": 2}
    other["sources"]["torch"]["state"] = torch.Generator().get_state()  # rank 1 differs
    load_rng_state([{**entry, "world_size": 2}, other], on_world_size_change="derive")
    assert managed.draw() == expected


def test_an_unknown_world_size_policy_is_refused(managed: Managed) -> None:
    states = get_rng_state()
    assert_refused_changes_nothing(
        managed,
        lambda: load_rng_state(states, on_world_size_change="ignore"),  # type: ignore[arg-type]
        ReproducibleBlockValueError,
        "'error' .* or 'derive'",
    )


def test_a_generator_registered_since_the_save_is_refused(managed: Managed) -> None:
    states = get_rng_state()
    register_generator(torch.Generator(), name="late")
    assert_refused_changes_nothing(
        managed,
        lambda: load_rng_state(states),
        ReproducibleBlockValueError,
        r"missing from the states: \['late'\]",
    )


def test_a_generator_unregistered_since_the_save_is_refused(managed: Managed) -> None:
    states = get_rng_state()
    unregister_generator("user-numpy")
    before = (managed.capture(), managed.user_numpy.bit_generator.state)
    with pytest.raises(ReproducibleBlockValueError, match=r"not managed here: \['user-numpy'\]"):
        load_rng_state(states)
    assert managed.user_numpy.bit_generator.state == before[1]
    after = managed.draw()
    managed.restore(before[0])
    assert managed.draw() == after


def test_states_saved_outside_blocks_are_refused_inside_one(managed: Managed) -> None:
    states = get_rng_state()

    def load_inside() -> None:
        with ReproducibleBlock("train"):
            load_rng_state(states)

    assert_refused_changes_nothing(managed, load_inside, BlockUsageError, "outside every block")


def test_states_saved_inside_a_block_are_refused_elsewhere(managed: Managed) -> None:
    with ReproducibleBlock("train"):
        states = get_rng_state()
    assert_refused_changes_nothing(
        managed,
        lambda: load_rng_state(states),
        BlockUsageError,
        r"saved inside the blocks \[\"ReproducibleBlock\('train'\)\"\].*inside no block",
    )

    def load_in_another_block() -> None:
        with ReproducibleBlock("eval"):
            load_rng_state(states)

    assert_refused_changes_nothing(managed, load_in_another_block, BlockUsageError, "'eval'")


def test_a_derived_rank_needs_a_saved_root() -> None:
    with pytest.raises(ReproducibleBlockValueError, match="holds none"):
        _checkpoint._derive_for_new_rank(_checkpoint._Plan([], [], True, None, ()), rank=1)


# CUDA's format, read with the CUDA source of a machine without CUDA (it never touches CUDA).


def test_a_queued_cuda_seed_round_trips_without_cuda() -> None:
    source = CudaSource()
    state = QueuedSeeds((("all", 2**64 - 1), ("current", 7)))
    data = source.to_checkpoint(state)
    assert data == {
        "device_count": torch.cuda.device_count(),
        "queued": [["all", 2**64 - 1], ["current", 7]],
    }
    assert source.from_checkpoint(data, "cuda") == state


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"device_count": torch.cuda.device_count() + 1, "queued": [["all", 1]]}, "device"),
        ({"device_count": torch.cuda.device_count() + 2, "states": []}, "device"),
        ({"device_count": torch.cuda.device_count(), "queued": [["all", 2**64]]}, "queued"),
        ({"device_count": torch.cuda.device_count(), "queued": [["some", 1]]}, "'current'"),
        ({"device_count": torch.cuda.device_count(), "queued": "all"}, "'current'"),
        ({"device_count": torch.cuda.device_count(), "states": "none"}, "one per device"),
        ({"device_count": torch.cuda.device_count()}, "keys"),
    ],
)
def test_cuda_states_of_another_device_count_or_shape_are_refused(data: Entry, match: str) -> None:
    source = CudaSource()
    with pytest.raises(ReproducibleBlockValueError, match=match):
        source.from_checkpoint(data, "cuda")


def test_a_generator_state_numpy_would_convert_is_refused() -> None:
    generator = np.random.Generator(np.random.MT19937(3))
    register_generator(generator, name="mt")
    states = get_rng_state()
    key = states[0]["sources"]["mt"]["state"]["state"]["state"]["key"]
    states[0]["sources"]["mt"]["state"]["state"]["state"]["key"] = ("ndarray", "uint64", *key[2:])
    before = generator.bit_generator.state
    with pytest.raises(ReproducibleBlockValueError, match="keeps as it is"):
        load_rng_state(states)
    after = generator.random(3)
    generator.bit_generator.state = before
    assert np.array_equal(generator.random(3), after)


def test_numpy_arrays_are_saved_as_tagged_int_lists() -> None:
    generator = np.random.Generator(np.random.Philox(3))
    register_generator(generator, name="philox")
    (entry,) = get_rng_state()
    saved = entry["sources"]["philox"]["state"]["state"]
    assert saved["state"]["key"] == (
        "ndarray",
        "uint64",
        [2],
        generator.bit_generator.state["state"]["key"].tolist(),
    )


# Tensors a checkpoint can hold after a real torch.save / torch.load: without data, or sparse.


def through_file(value: Any, **load: Any) -> Any:
    """``value`` after torch.save and torch.load(weights_only=True, **load)."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True, **load)


def test_a_checkpoint_loaded_on_the_meta_device_is_refused_untouched(managed: Managed) -> None:
    states = through_file(get_rng_state(), map_location="meta")
    managed.draw()
    assert_refused_changes_nothing(
        managed,
        lambda: load_rng_state(states),
        ReproducibleBlockValueError,
        r"on the meta device.*expected a dense 1-D .* with data",
    )


@pytest.mark.parametrize(
    "field",
    [
        (*TORCH, "state"),
        (*PYTHON, "key"),
        (*NUMPY, "key"),
        ("sources", "user-torch", "state", "state"),
    ],
    ids=["torch", "random", "numpy", "registered torch.Generator"],
)
def test_a_sparse_tensor_in_an_entry_is_refused_untouched(
    managed: Managed, field: tuple[str, ...]
) -> None:
    states = through_file(edited(_edit_tensor(field, lambda t: t.to_sparse()))(get_rng_state()))
    managed.draw()
    assert_refused_changes_nothing(
        managed,
        lambda: load_rng_state(states),
        ReproducibleBlockValueError,
        r"sparse_coo.*expected a dense 1-D",
    )


# Every field: corrupted, removed or added, anywhere in the entry, is refused and changes nothing.


def _fields(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) below ``value``, containers included."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _fields(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _fields(item, (*path, index))


def _replaced(entry: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``entry`` whose field at ``path`` is ``value`` (tuples rebuilt)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(entry, dict):
        return {**entry, head: _replaced(entry[head], rest, value)}
    items = list(entry)
    items[head] = _replaced(items[head], rest, value)
    return type(entry)(items)


def _wrong_values(value: Any) -> list[Any]:
    """Values of other types than ``value``, and tensors without data, sparse or misshapen."""
    if isinstance(value, torch.Tensor):
        return [
            value.to("meta"),
            value.to_sparse(),
            value.double(),
            value[:-1],
            value.view(1, -1),
            value.tolist(),
        ]
    others = ["text", -1, 2**70, 0.5, True, None, [], {}]
    return [other for other in others if type(other) is not type(value)]


def _is_allowed(path: tuple[Any, ...], value: Any) -> bool:
    """The two fields that may legitimately be None: Python's cached Gaussian and the root."""
    return value is None and path in ((*PYTHON, "gauss_next"), ("root",))


def test_every_field_corrupted_removed_or_added_is_refused_untouched(managed: Managed) -> None:
    (entry,) = through_file(get_rng_state())
    assert isinstance(entry["sources"]["random"]["state"]["gauss_next"], float)  # a float field
    cases: list[tuple[str, Any]] = []
    for path, value in _fields(entry):
        if path:
            cases += [
                (f"{path} = {describe(wrong)}", _replaced(entry, path, wrong))
                for wrong in _wrong_values(value)
                if not _is_allowed(path, wrong)
            ]
        if isinstance(value, dict):
            cases += [
                (
                    f"{path} without {key!r}",
                    _replaced(entry, path, {k: v for k, v in value.items() if k != key}),
                )
                for key in value
            ]
            cases.append(
                (f"{path} with an extra field", _replaced(entry, path, {**value, "extra": 0}))
            )
    assert len(cases) > 150
    managed.draw()
    before = managed.capture()
    root = peek_seed()
    accepted = []
    for label, corrupted in cases:
        try:
            load_rng_state([corrupted])
        except (ReproducibleBlockValueError, ReproducibleBlockTypeError):
            continue
        accepted.append(label)
        managed.restore(before)
    assert accepted == []
    after_refusals = managed.draw()
    managed.restore(before)
    assert managed.draw() == after_refusals
    assert peek_seed() == root


# A registered generator replaced by one of another kind under the same name.


REPLACEMENTS = {
    "torch.Generator -> np.random.Generator": (
        torch.Generator,
        np.random.default_rng,
        r"saved 'augment' as a 'torch-generator' and 'augment' is a 'numpy-generator' here",
    ),
    "np.random.Generator -> torch.Generator": (
        np.random.default_rng,
        torch.Generator,
        r"saved 'augment' as a 'numpy-generator' and 'augment' is a 'torch-generator' here",
    ),
    "PCG64 -> Philox": (
        lambda: np.random.Generator(np.random.PCG64()),
        lambda: np.random.Generator(np.random.Philox()),
        r"a state of PCG64 and 'augment' is a Generator over Philox here",
    ),
}


@pytest.mark.parametrize(
    ("before", "after", "match"), REPLACEMENTS.values(), ids=list(REPLACEMENTS)
)
def test_a_generator_replaced_under_its_name_saves_and_loads_its_own_states(
    before: Callable[[], Any], after: Callable[[], Any], match: str
) -> None:
    register_generator(before(), name="augment")
    set_seed(0)
    old = through_file(get_rng_state())
    unregister_generator("augment")
    generator = after()
    register_generator(generator, name="augment")  # no set_seed since: the same root
    fresh = through_file(get_rng_state())  # the process saves its new generator...

    def draw() -> list[float]:
        if isinstance(generator, torch.Generator):
            return torch.rand(3, generator=generator).tolist()
        return generator.random(3).tolist()

    expected = draw()
    load_rng_state(fresh)  # ...and loads what it saved
    assert draw() == expected
    load_rng_state(fresh)
    with pytest.raises(ReproducibleBlockValueError, match=match):  # the old kind: refused
        load_rng_state(old)
    assert draw() == expected  # untouched


def test_a_checkpoint_saved_in_a_numpy_str_key_loads_in_the_same_str_key() -> None:
    set_seed(0)
    with ReproducibleBlock(np.str_("train")):
        torch.rand(2)
        states = through_file(get_rng_state())
        expected = torch.rand(3)
    with ReproducibleBlock("train"):
        load_rng_state(states)
        assert torch.equal(torch.rand(3), expected)


def test_a_load_that_fails_while_installing_changes_nothing(managed: Managed) -> None:
    unplugged = Unplugged()
    register_generator(unplugged, name="unplugged")  # installed last, after every other source
    set_seed(1)
    states = get_rng_state()
    set_seed(2)
    managed.draw()
    unplugged.plugged = False
    exported = os.environ[SEED_ENVIRONMENT_VARIABLE]
    assert_refused_changes_nothing(managed, lambda: load_rng_state(states), OSError, "unplugged")
    assert os.environ[SEED_ENVIRONMENT_VARIABLE] == exported == "2"
