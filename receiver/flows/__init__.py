"""What happens to data: delivery, polling, submit, replay, the outbox and its endpoints,
history, prune, trigger, submission records, admin accounts and API keys.

Imports store, core, ittybit, observe and config; never web, cli or reconcile.
"""
