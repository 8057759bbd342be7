"""Training: one run (fit, callbacks, events, health), the operator's budgets, the device, the
engine (queue, slots) and its executors (local worker processes; Ray).

May import: cnnlab.runs and everything below it.
"""
