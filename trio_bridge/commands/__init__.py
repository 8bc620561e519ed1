"""The ``trio-bridge`` commands, one module each (see :mod:`trio_bridge.commands.registry`)."""
