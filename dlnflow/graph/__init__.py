"""The executable graph: layers, their templates (sandboxed Jinja2) and the losses.

May import: ``_util``, ``core``. Never the runtime, backends or anything above.
"""
