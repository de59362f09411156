"""Raw-memory speed tricks, behind one switch: ``REPRODUCIBLE_BLOCK_FAST_PATHS=0`` turns them off.

Every trick here reads or writes a generator's private state directly, where the public API is
slow: :mod:`.cpython_random` copies CPython's ``random`` C struct, :mod:`.numpy_legacy` NumPy's
legacy global ``RandomState`` (its MT19937 state and its cached Gaussian), :mod:`.pcg64` writes a
PCG64's state in place to expand 128 bits into a Mersenne Twister key, :mod:`.cuda_queue` swaps
torch's private record of the CUDA seeding queued until CUDA starts, and :mod:`.torch_cpu`
reads a torch CPU state's bytes through its data pointer. :mod:`.views` holds what they share:
:func:`~.views.memory_view`, the free-threaded check, the switching lock and the switch.

**The switch.** :data:`views.ENABLED` is read once, at import, from the environment variable
``REPRODUCIBLE_BLOCK_FAST_PATHS`` (``"0"`` turns every trick off; anything else, or unset, leaves
them on), and then at every use, so a test may flip it. With it off, the sources use only the
public API (``random.getstate``/``setstate``, ``np.random.get_state``/``set_state``, torch's
``get_state``/``set_state``, ``torch.cuda.manual_seed_all``/``manual_seed``) and derivation
expands keys with the public PCG64 API: the streams are bit-identical either way
(``make unit-public`` runs the suite with the switch off, golden streams included). Each trick
also checks its layout against the public API at first use and steps aside on its own (with a
warning naming the fallback) when the check fails, or on a free-threaded build.

Two things are not tricks, so the switch leaves them on: reading which CUDA seeding torch has
queued (no public API reports it), and the layout of torch's CPU state tensor, through which
blocks install a 624-word key derived from all 128 bits (``manual_seed`` keeps 32 of them; see
:mod:`.torch_cpu`).
"""
