"""The benchmark suite of mutator and mutator_governance: ``python -m benchmarks``.

See ``benchmarks/README.md``. Scenario definitions live in :mod:`benchmarks.engine` and
:mod:`benchmarks.governance`; timing, statistics and results files in
:mod:`benchmarks.harness`.
"""
