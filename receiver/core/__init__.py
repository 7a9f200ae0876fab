"""Pure rules, no I/O: job states, transitions, statuses, signing, id and metadata bounds.

Imports only ``config``.
"""
