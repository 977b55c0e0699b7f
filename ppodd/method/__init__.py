"""The method: PoDD and P-PoDD as pure tensor functions.

Tensors and validated settings in, tensors out. Nothing here opens a file, reads the
environment, logs or keeps global state; every random draw comes from a generator passed in.
"""
