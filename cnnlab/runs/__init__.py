"""The run store on disk (one folder per run, atomic and locked) and what is read back from it:
predictions, evaluation, a person's corrections.

May import: cnnlab.people, cnnlab.model, cnnlab.data and the shared leaves.
"""
