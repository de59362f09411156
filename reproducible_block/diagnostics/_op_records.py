"""What :func:`trace_ops` and :func:`find_nondeterminism` return: ops, traces and divergences.

An :class:`OpTrace` is every op one run ran (:class:`OpCall`, with its :class:`OpOutput`\\ s); it
goes to JSON and back, for nondeterminism that only shows across processes. An
:class:`OpDivergence` says where two runs first differ, op by op.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from reproducible_block._support.errors import ReproducibleBlockValueError

__all__ = ["SCALAR_DTYPES", "OpCall", "OpDivergence", "OpOutput", "OpTrace"]

_TRACE_FORMAT = "reproducible_block-op-trace"
_TRACE_VERSION = 1


@dataclass(frozen=True)
class OpOutput:
    """One output of an op: its fingerprint, dtype and shape, and its values when kept."""

    #: A short fingerprint of the values; None for outputs that are not compared
    #: (uninitialised memory, such as ``aten.empty``'s).
    fingerprint: str | None
    dtype: str
    shape: tuple[int, ...]
    #: A CPU copy of the values (within the trace's budget, :data:`KEPT_VALUES_BYTES`). Not
    #: compared by ``==`` (the fingerprint stands for them; tensors have no single truth value).
    values: torch.Tensor | None = field(default=None, compare=False)


@dataclass(frozen=True)
class OpCall:
    """One op as traced: which, where (module path, Python line) and its outputs."""

    index: int
    #: The op, as torch names it: ``aten.add.Tensor``.
    op: str
    #: The module it ran in, as a path from the outermost module called: ``Net.encoder.0``.
    module: str | None
    #: That module's class name: ``Linear``.
    module_type: str | None
    #: ``file:line`` of the first Python frame outside torch (ops called from
    #: reproducible_block itself are not traced).
    line: str
    #: The source code on that line ("" when it cannot be read).
    source: str
    outputs: tuple[OpOutput, ...]


def _tensor_json(values: torch.Tensor | None) -> list[Any] | None:
    if values is None or values.is_complex():
        return None
    flat: list[Any] = values.reshape(-1).tolist()
    return flat


# Python scalars (``.item()``) keep their type's name as dtype; ``torch.float`` would be float32.
SCALAR_DTYPES = {"float": torch.float64, "int": torch.int64, "bool": torch.bool}


def _tensor_from_json(values: list[Any] | None, dtype: str, shape: tuple[int, ...]) -> Any:
    if values is None:
        return None
    torch_dtype = SCALAR_DTYPES.get(dtype) or getattr(torch, dtype.removeprefix("torch."))
    return torch.tensor(values, dtype=torch_dtype).reshape(shape)


@dataclass(frozen=True)
class OpTrace:
    """Every op one run of a function ran, in order: what :func:`trace_ops` returns.

    Compare two with :func:`compare_traces`. :meth:`to_json` and :meth:`from_json` carry a trace
    between processes, for nondeterminism that only shows across them (``PYTHONHASHSEED``).
    """

    ops: tuple[OpCall, ...]

    def __len__(self) -> int:
        return len(self.ops)

    def to_json(self) -> str:
        """The trace as JSON text (kept values included)."""
        return json.dumps(
            {
                "format": _TRACE_FORMAT,
                "version": _TRACE_VERSION,
                "ops": [
                    {
                        "op": call.op,
                        "module": call.module,
                        "module_type": call.module_type,
                        "line": call.line,
                        "source": call.source,
                        "outputs": [
                            {
                                "fingerprint": output.fingerprint,
                                "dtype": output.dtype,
                                "shape": list(output.shape),
                                "values": _tensor_json(output.values),
                            }
                            for output in call.outputs
                        ],
                    }
                    for call in self.ops
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> OpTrace:
        """Rebuild a trace from :meth:`to_json`'s text.

        >>> import torch
        >>> from reproducible_block.diagnostics import compare_traces, trace_ops
        >>> trace = trace_ops(lambda: torch.ones(2) + 1)
        >>> again = OpTrace.from_json(trace.to_json())
        >>> compare_traces(trace, again) is None and again.ops[-1].op == "aten.add.Tensor"
        True
        """
        try:
            data = json.loads(text)
            if data.get("format") != _TRACE_FORMAT or data.get("version") != _TRACE_VERSION:
                raise ValueError("not an op trace of this version")
            calls = []
            for index, call in enumerate(data["ops"]):
                outputs = tuple(
                    OpOutput(
                        output["fingerprint"],
                        output["dtype"],
                        tuple(output["shape"]),
                        _tensor_from_json(
                            output["values"], output["dtype"], tuple(output["shape"])
                        ),
                    )
                    for output in call["outputs"]
                )
                calls.append(
                    OpCall(
                        index,
                        call["op"],
                        call["module"],
                        call["module_type"],
                        call["line"],
                        call["source"],
                        outputs,
                    )
                )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ReproducibleBlockValueError(
                f"this text is not an op trace that OpTrace.from_json reads ({error}); pass "
                "what OpTrace.to_json() returned, from the same version of reproducible_block."
            ) from None
        return cls(tuple(calls))


@dataclass(frozen=True)
class OpDivergence:
    """Where two runs first differ, op by op: what :func:`find_nondeterminism` returns.

    ``op``, ``module``, ``module_type``, ``line`` and ``source`` describe the first op whose
    outputs differ (``index`` is its number among the ops; ``output`` which of its outputs).
    ``differing`` of ``elements`` values differ there, by at most ``max_abs_difference``
    (None when the values were not kept or are not numbers). When the two runs ran different
    ops, ``op`` is the first run's (``description`` says what the other ran). When every op
    agreed but the results did not, ``index`` and ``op`` are None: the difference comes from
    code outside torch ops. ``str()`` gives ``description``.
    """

    description: str
    index: int | None = None
    op: str | None = None
    module: str | None = None
    module_type: str | None = None
    line: str | None = None
    source: str | None = None
    output: int | None = None
    differing: int | None = None
    elements: int | None = None
    max_abs_difference: float | None = None

    def __str__(self) -> str:
        return self.description
