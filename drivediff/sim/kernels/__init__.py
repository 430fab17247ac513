"""Numba kernels. Functions here take arrays and scalars only and trust their inputs: validation happens
once in Python, in the public wrappers (``drivediff.sim.world``, ``drivediff.sim.geometry``)."""
