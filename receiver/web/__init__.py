"""The web process: the app class, webhooks (in turns on SQLite), health, errors, headers,
/metrics, the slot guard and "ask ittybit now", the API and the admin view.

Imports flows, store, core, ittybit, observe and config; never reconcile.
"""
