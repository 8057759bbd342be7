"""Who is acting and what they may do: users and roles, local accounts, sign-in mode, run ownership.

May import: cnnlab.model, cnnlab.data and the shared leaves.
"""
