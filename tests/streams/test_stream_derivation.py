"""Keys and derivation: valid keys, injective encoding, independent streams, O(1) keys."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reproducible_block as rb
from reproducible_block import ReproducibleBlock, set_seed
from reproducible_block._streams.derivation import encode_key
from reproducible_block._streams.keys import MAX_KEY_INT, validate_key

key_parts = st.one_of(st.integers(0, MAX_KEY_INT), st.text(max_size=20))
keys = st.one_of(
    key_parts, st.tuples(key_parts), st.lists(key_parts, min_size=1, max_size=4).map(tuple)
)


@settings(deadline=None)  # examples: the Hypothesis profile (conftest.py), 500 in "ci"
@given(keys, keys)
def test_encoding_is_injective(first: object, second: object) -> None:
    a, b = validate_key(first), validate_key(second)
    assert (encode_key(a) == encode_key(b)) == (a == b and type(a) is type(b))


@pytest.mark.parametrize(
    ("bad", "error", "fragment"),
    [
        (-1, ValueError, "-1"),
        (2**64, ValueError, "2**64"),
        (True, TypeError, "bool"),
        (1.5, TypeError, "float"),
        (None, TypeError, "None"),
        ([1, 2], TypeError, "list"),
        ((), ValueError, "empty"),
        ((("a", 1),), TypeError, "nested"),
        (("a", -2), ValueError, "item 1"),
        (tuple(range(33)), ValueError, "33 items"),
        ("x" * 4097, ValueError, "4097"),
        (float("nan"), TypeError, "nan"),
    ],
)
def test_bad_keys_raise_clear_errors(bad: object, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match="allowed") as info:
        ReproducibleBlock(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, rb.ReproducibleBlockError)
    assert fragment in str(info.value)


def test_decorator_without_a_key_says_how_to_use_it() -> None:
    with pytest.raises(TypeError, match=r"@ReproducibleBlock\(key\)"):

        @ReproducibleBlock  # type: ignore[arg-type]
        def forgot_parentheses() -> None: ...


def test_neighbouring_keys_do_not_give_shifted_weights() -> None:
    # torch-reproducible-block 0.0.1 advanced the stream by `key` draws, so block 65's weights
    # were block 64's shifted by one element. Derived streams must share no such window.
    set_seed(0)
    with ReproducibleBlock(64):
        w64 = torch.nn.Linear(64, 64).weight.detach().flatten()
    with ReproducibleBlock(65):
        w65 = torch.nn.Linear(64, 64).weight.detach().flatten()
    for shift in range(-64, 65):
        a = w64[max(shift, 0) : len(w64) + min(shift, 0)]
        b = w65[max(-shift, 0) : len(w65) + min(-shift, 0)]
        assert not torch.equal(a[:32], b[:32])


def test_streams_of_many_keys_share_no_window() -> None:
    set_seed(0)
    windows: dict[tuple[int, ...], int] = {}
    for key in range(200):
        with ReproducibleBlock(key):
            values = torch.randint(0, 2**31, (256,)).tolist()
        for start in range(0, 256 - 4):
            window = tuple(values[start : start + 4])
            assert windows.setdefault(window, key) == key


def test_torch_block_states_use_more_than_32_bits() -> None:
    # torch's CPU manual_seed keeps 32 bits; a block installs a full Mersenne Twister key,
    # so its stream is not the stream of any 32-bit seed placed in the first word.
    set_seed(0)
    with ReproducibleBlock("wide"):
        state = torch.get_rng_state()
        drawn = torch.rand(4)
    words = state[24 : 24 + 8 * 624].view(torch.int64)
    assert len(set(words.tolist())) > 600
    probe = torch.Generator()
    probe.manual_seed(int(words[1]))
    assert not torch.equal(torch.rand(4, generator=probe), drawn)


@pytest.mark.parametrize("key", [1, 10**12, 2**64 - 1, "a" * 64, ("epoch", 10**12)])
def test_any_valid_key_enters_and_repeats(key: object) -> None:
    set_seed(9)
    with ReproducibleBlock(key):  # type: ignore[arg-type]
        first = torch.rand(2)
    with ReproducibleBlock(key):  # type: ignore[arg-type]
        assert torch.equal(torch.rand(2), first)
