"""The command line: the ``batchrun`` commands, their options, help and progress bar.

The only package that prints. ``main`` is the console script (``batchrun.cli:main``) and
``python -m batchrun``; ``cli`` is the click group.
"""

from batchrun.cli.commands import cli, main

__all__ = ["cli", "main"]
