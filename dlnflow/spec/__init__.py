"""Pipeline specs: loading with positions, schema messages, settings, wiring, the compiler,
overrides and the generated reference.

May import: ``_util``, ``core``, ``graph``. Never the runtime or backends.
"""
