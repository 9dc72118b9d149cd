"""Fuzzing (docs/security.md): property tests of the parsers, and prodio's own routes.

Every test here is bounded and reproducible: a fixed number of examples, derandomized, and no
example database (see :data:`tests.fuzz.harness.FUZZ`), so CI runs the same inputs each time.
"""
