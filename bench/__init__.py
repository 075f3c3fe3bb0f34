"""segbench: classical and deep semantic segmentation side by side.

The harness: one dataset loader (:mod:`bench.datasets`), one evaluator (:mod:`bench.metrics`),
one runner (:mod:`bench.runner`) and reports built from the result files alone
(:mod:`bench.report`).
"""

__version__ = "0.1.0"
