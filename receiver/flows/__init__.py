"""What happens to data: delivery, polling, submit, replay, outbox, history, prune, trigger.

Imports store, core, ittybit, observe and config; never web, cli or reconcile.
"""
