"""mmlongtail's benchmark, demo and synthetic-data machinery.

Not part of the library: :mod:`mmlongtail` never imports this package (a test
checks it). It holds what the repository's commands run on top of the
library:

* :mod:`mmlongtail_bench.synthetic`: generated data, a rendered image dataset
  for training and annotation-only ground truth and predictions for the
  metric's tests and benchmarks;
* :mod:`mmlongtail_bench.benchmark`: the long-tail benchmark
  (``tools/benchmark_longtail.py``, ``make bench``);
* :mod:`mmlongtail_bench.demo`: the CPU demo (``tools/demo.py``,
  ``make demo``).

Nothing is imported here, so importing one part does not load the others.
"""
