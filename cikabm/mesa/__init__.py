"""Mesa front end of cikabm (optional extra: ``pip install cikabm[teach]``).

* :mod:`cikabm.mesa.model` — :class:`CIKModel`, a ``mesa.Model`` that wraps the
  Numba kernel (keyword-only parameters, a ``DataCollector``, the lattice as
  property layers that are views of the kernel's arrays).
* :mod:`cikabm.mesa.reference` — a pure-Mesa reference implementation of the
  same rules, agents as Python objects, for teaching and as an independent
  check of the kernel.
* :mod:`cikabm.mesa.app` — the Solara teaching app that ``cikabm teach`` serves
  (one model per browser session).

Nothing here is imported by the core package; importing this subpackage does
not import Mesa.
"""
