"""Run the stand-in: ``python -m devtools.standin --port 8100``."""

from __future__ import annotations

from devtools.standin.cli import main

__all__: list[str] = []

raise SystemExit(main())
