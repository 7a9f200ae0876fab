"""jobhooks reconciler: the ittybit API client, the stuck-job poller, submit and reconcile."""
