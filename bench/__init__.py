"""Benchmarks: the webhook path against bare Flask, and a reconcile pass against its ideal."""
