"""Learned prompts stored next to the spec; drift; the best run's settings.

May import: ``_util``, ``core``, ``graph``, ``spec``. Never ``experiments`` or ``planning``.
"""
