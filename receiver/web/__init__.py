"""The web process: webhooks, health, errors, headers, /metrics, the slot guard and "ask
ittybit now", the API and the admin view.

Imports flows, store, core, ittybit, observe and config; never reconcile.
"""
