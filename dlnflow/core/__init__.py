"""Plain types and protocols every layer shares: errors, requests and results, the backend,
call-runner and optimizer protocols, examples.

May import: ``dlnflow._util``.
"""
