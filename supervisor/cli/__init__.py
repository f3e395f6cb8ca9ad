"""The `posguard` command: its entry point is `main` (setup.py: posguard=supervisor.cli:main)."""

from supervisor.cli.main import main

__all__ = ["main"]
