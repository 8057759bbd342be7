"""The command line, ``cnnlab …`` or ``python -m cnnlab …``: its argument parsing and readable
output.

May import: every room of cnnlab (it is the top).
"""
