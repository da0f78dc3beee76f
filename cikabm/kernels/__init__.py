"""Numba kernels. Self-contained: nothing here imports the rest of cikabm."""

#: The layout of the kernels' random streams: which draws a step makes, keyed how
#: (:func:`cikabm.kernels.core.stream_key` on seed, patient, clock and purpose), and
#: in what order they are used. The same scenario, seed and stream version give
#: bit-identical results on any machine, thread or worker count; a new version may
#: change every result (the calibrated scenarios are then refitted). Recorded in
#: every ``summary.json``, ``bench.json`` and ``patients.parquet``.
STREAM_VERSION = 2
