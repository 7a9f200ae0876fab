"""Storage: tables, engines, migrations glue, hot statements, the inbox. Imports core, config."""
