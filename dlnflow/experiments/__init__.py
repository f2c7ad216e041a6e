"""Sweeps: the matrix of runs, running it resumably, and statistics over seeds.

May import the layers below, up to ``training`` and ``lockfile``; a sweep receives its cost
predictor as a callable, so it never imports ``planning``.
"""
