"""The embedded backend: a GGUF model run in-process by llama.cpp.
"""
