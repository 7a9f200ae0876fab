"""The worker: the reconcile pass, the event-list reader, the notifier.

Imports flows, store, core, ittybit, observe and config of receiver; never web or cli.
"""
