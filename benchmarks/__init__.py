"""Benchmarks of the brain-CT assistant (not part of the default test run).

* :mod:`benchmarks.localization` — does the Grad-CAM heatmap point at the bleed? Measured on
  synthetic hemorrhages with known masks: ``python -m benchmarks.localization``.
"""
