"""Data sets and pictures: the registry (MNIST, Fashion-MNIST, CIFAR-10, the bundled sample), zips,
camera sets, canvas and picture preprocessing; images stay uint8 in memory.

May import: cnnlab.text, cnnlab.settings.
"""
