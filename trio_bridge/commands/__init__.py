"""The ``trio-bridge`` subcommands, one module each."""
