"""Starter pipelines written by ``dlnflow init``.
"""
