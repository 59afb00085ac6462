"""``python -m tokenops`` is the ``tokenops`` command."""

from tokenops.cli import main

main()
