"""The one client to the models and the call cache (keys, tiers).

May import: ``_util``, ``core``.
"""
