"""Untrusted model files: what a .keras archive declares, read before anything is built, a load in a
child process under a memory ceiling, and the safe load itself.

May import: cnnlab.train (budgets) and everything below it.
"""
