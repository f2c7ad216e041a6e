"""The public facade: :class:`~dlnflow.training.network.Network` and the functions the CLI calls.

May import every layer below; nothing but the CLI imports it.
"""
