"""A worker of the benchmark suite: ``python -m cikabm.bench SPEC.json RESULT.json``.

Started by :func:`cikabm.bench.suite.run_suite`, one per task; what it runs is
:func:`cikabm.bench.worker._worker_main`.
"""

from __future__ import annotations

import sys

from cikabm.bench.worker import _worker_main

if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
