"""``python -m gkdcn.cli``: the ``gkdcn`` command."""

from gkdcn.cli import main

main()
