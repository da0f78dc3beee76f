"""Numba kernels. Self-contained: nothing here imports the rest of cikabm."""
