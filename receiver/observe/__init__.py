"""Logs and metrics, shared by both processes. Imports store, core, config."""
