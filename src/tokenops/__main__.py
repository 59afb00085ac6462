"""``python -m tokenops`` is the ``tokenops`` command."""

from tokenops.cli import main

if __name__ == "__main__":  # guarded: the ledger writer's child process re-imports the main module
    main()
