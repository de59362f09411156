"""Whether this thread runs part of an autograd backward pass, such as a checkpoint recompute.

``torch.utils.checkpoint`` runs the checkpointed function a second time during ``backward()``
(with ``use_reentrant=True`` in the checkpoint node's backward, with ``use_reentrant=False`` in
the hook that unpacks a saved activation), and with ``preserve_rng_state=True`` it first puts
torch's generators back where the forward found them, outside every block. The engine marks
the thread that runs a node with the id of its backward pass (a thread-local; on CUDA the
device's autograd thread), and -1 outside every backward pass: :func:`in_backward` reads it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["in_backward"]


def _outside() -> int:  # pragma: no cover - only with a torch that lacks the function
    return -1


_graph_task_id: Callable[[], int] = getattr(torch._C, "_current_graph_task_id", _outside)


def in_backward() -> bool:
    """Whether this thread runs a node of a backward pass (a checkpoint recompute among them).

    >>> import torch
    >>> from reproducible_block._support.autograd import in_backward
    >>> seen = []
    >>> inputs = torch.ones(2, requires_grad=True)
    >>> _ = inputs.register_hook(lambda grad: seen.append(in_backward()))
    >>> (inputs * 2).sum().backward()
    >>> seen, in_backward()
    ([True], False)
    """
    return _graph_task_id() != -1
