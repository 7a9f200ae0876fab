"""The web process: webhooks, health, errors, /metrics, slots, the API and the admin view.

Imports flows, store, core, ittybit, observe and config; never reconcile.
"""
