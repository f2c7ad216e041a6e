"""The trainer loop, evaluation and run folders.

May import everything below it (``optim``, ``runtime``, ``data``, ``spec``, ``graph``, ``core``,
``_util``) and ``lockfile``; never ``experiments``, ``planning``, ``backends`` or above.
"""
