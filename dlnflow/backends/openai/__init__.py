"""The ``openai`` backend: the OpenAI API and any OpenAI-compatible server.
"""
