"""The one decorator every simulator kernel goes through.

Kernels are cached on disk (``NUMBA_CACHE_DIR``; keep it inside the checkout) and compiled with a
fastmath policy that allows contraction and reciprocal/approximate functions but keeps NaN/inf semantics:
kernels use ``inf`` as the "no constraint" value for gaps and time-to-collision, so ``nnan``/``ninf``
must stay off. Numba's cache does not notice edits to a helper imported from another file: after editing
kernels, clear the cache (``make clean-cache``).
"""

from __future__ import annotations

import numba

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn"})


def kernel(fn=None, *, parallel: bool = False, inline: bool = False, nrt: bool = False, exact: bool = False):
    """Compile ``fn`` with drivediff's kernel policy (cache, fastmath, nogil).

    Use ``@kernel`` for serial helpers and ``@kernel(parallel=True)`` for the top-level entry points that
    ``prange`` over worlds. ``inline=True`` inlines the function into its callers at the Numba IR level:
    use it for per-vehicle helpers that take the world/road tuples, whose out-of-line calls cost ~50 ns
    each (Numba flattens every array of a tuple into scalar arguments).

    Kernels compile without Numba's reference counting (NRT) unless ``nrt=True``: they allocate nothing
    (scratch buffers are passed in), and with NRT every binding of an array view in a per-vehicle loop
    costs an atomic increment and decrement (measured: 435 -> 140 ns per vehicle for the decision loop).
    The parallel entry points keep NRT, which the parallel runtime needs.

    Rule: an NRT-free kernel may take arrays but must not return arrays (or tuples holding them) to a
    kernel compiled with NRT: the NRT caller would release references it never took (a double free).
    ``tests/sim/test_world.py::test_no_reference_leaks_across_many_calls`` and its environment twin in
    ``tests/env/test_vector.py`` check the entry points against this.

    ``exact=True`` compiles without fastmath, for kernels that must give NumPy's numbers to the last bit
    (reset placement and positions, which replaced NumPy code: a fused multiply-add moves a result by an
    ulp, and a seed would no longer give the same scene). It applies to the kernel's own code and to helpers
    inlined into it, not to out-of-line ``@kernel`` helpers it calls, which keep the fastmath policy.
    """

    def wrap(f):
        opts = dict(cache=True, fastmath=False if exact else set(FASTMATH), nogil=True, parallel=parallel,
                    error_model="numpy", inline="always" if inline else "never")
        if not (nrt or parallel):
            opts["_nrt"] = False
        return numba.njit(**opts)(f)

    return wrap(fn) if fn is not None else wrap
