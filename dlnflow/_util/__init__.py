"""Small helpers with no knowledge of dlnflow: atomic files, suggestions, JSON pointers, paths.

Imports nothing of dlnflow.
"""
