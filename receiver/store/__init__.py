"""Storage: tables, engines, migrations, hot statements, the inbox, leases, stuck queries.

Imports core, config.
"""
