"""Run reports: markdown and a learning-curve picture.

Reads run folders; imports ``training`` for their layout.
"""
