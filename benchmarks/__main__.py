"""``python -m benchmarks``: the speed and memory benchmark (see :mod:`benchmarks.run`)."""

from benchmarks.run import main

main()
