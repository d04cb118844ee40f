"""Test and demo infrastructure: a real registry on loopback and a deterministic image builder.

Kept outside the ``occystrap`` package so that the product never depends on its own test rig,
while tests, demos and benchmarks can all ``import tools``.
"""
