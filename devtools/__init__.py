"""Development tools: a local ittybit stand-in, process helpers and ``make demo``.

Not shipped with the service; used by the tests, the benchmarks and the demo.
"""
