"""mmapp's benchmark suite: ``python -m benchmarks.run`` (or ``make bench``); see docs/benchmarks.md."""
