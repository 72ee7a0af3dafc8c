"""Test utilities that are also useful to users: a local MAST-shaped server.

Nothing in the pipeline imports this package; it sits downstream of ``archive``.
"""
