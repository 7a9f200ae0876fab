"""The ittybit API client: our own httpx one, for every shape ittybit has spoken. Imports core."""
