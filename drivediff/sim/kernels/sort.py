"""In-place sorting on scratch buffers (kernels compiled without NRT cannot allocate)."""

from __future__ import annotations

from drivediff.sim.jit import kernel


@kernel
def sort_pairs(key, val, a, e):
    """Sort ``key[a:e]`` ascending, carrying ``val`` along; ties ordered by ``val`` (deterministic).

    Insertion sort for short ranges, Shell sort (gaps 701, 301, ... 1, Ciura) otherwise.
    """
    n = e - a
    if n < 2:
        return
    gaps = (701, 301, 132, 57, 23, 10, 4, 1)
    for g in gaps:
        if g >= n and g != 1:
            continue
        for q in range(a + g, e):
            kv = key[q]
            vv = val[q]
            r = q
            while r - g >= a and (key[r - g] > kv or (key[r - g] == kv and val[r - g] > vv)):
                key[r] = key[r - g]
                val[r] = val[r - g]
                r -= g
            key[r] = kv
            val[r] = vv
