"""Dry runs: predicted calls, tokens and cost of a training run, against the cache.

May import the layers below, ``training`` included.
"""
