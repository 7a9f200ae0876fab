"""Logs, metrics and (when configured) traces, shared by both processes.

Imports store, core, config.
"""
