"""Exporting a trained network to other frameworks.

- :mod:`dlnflow.export.to_dspy`: what to export and the checks (the entry point
  :func:`~dlnflow.export.to_dspy.export_dspy`);
- :mod:`dlnflow.export.templates`: a layer's template as parts the exported program renders;
- :mod:`dlnflow.export.program`: the plan written as the Python source of ``program.py``;
- :mod:`dlnflow.export.runtime`: the fixed code shipped inside ``program.py``;
- :mod:`dlnflow.export.readme`: the export's README.
"""
