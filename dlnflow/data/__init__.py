"""Data sets: file readers per format, splits, and the generated tasks.

May import: ``_util``, ``core``, ``spec`` (settings). Never the runtime or backends.
"""
