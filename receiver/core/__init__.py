"""Pure rules, no I/O: job states, transitions, statuses, signing. Imports only ``config``."""
