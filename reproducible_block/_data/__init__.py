"""Data loading: worker seeding, generators of their own, a reproducible sampler and per-sample
dataset wrappers.

* ``workers``: :data:`seed_worker` and :class:`WorkerInit`, the ``worker_init_fn`` of a
  DataLoader (per-worker global streams, the parent's root for blocks).
* ``generators``: :func:`torch_generator` and :func:`numpy_generator`, seeded from (root, key).
* ``sampler``: :class:`ReproducibleSampler`, the data order as a pure function of (root, key,
  epoch), for any world size and resume point, and :class:`SampleIndex`, the index it yields.
* ``datasets``: :class:`ReproducibleDataset` and :class:`ReproducibleIterableDataset`, which run
  each sample (each worker's stream) in a block of its own.
"""

from reproducible_block._data.datasets import ReproducibleDataset, ReproducibleIterableDataset
from reproducible_block._data.generators import numpy_generator, torch_generator
from reproducible_block._data.sampler import ReproducibleSampler, SampleIndex
from reproducible_block._data.workers import WorkerInit, seed_worker

__all__ = [
    "ReproducibleDataset",
    "ReproducibleIterableDataset",
    "ReproducibleSampler",
    "SampleIndex",
    "WorkerInit",
    "numpy_generator",
    "seed_worker",
    "torch_generator",
]
