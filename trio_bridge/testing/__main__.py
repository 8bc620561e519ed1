"""``python -m trio_bridge.testing``: same as ``python -m trio_bridge.testing.fake_upstream``."""

import sys

from .fake_upstream import main

sys.exit(main())
