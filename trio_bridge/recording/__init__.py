"""Usage recording (contract section 8): records, the bounded queue and batch writer,
the sinks, and the per-exchange tap the request path feeds."""

from .recorder import Recorder
from .records import Interception, client_kind
from .tap import ExchangeTap, new_tap

__all__ = ["ExchangeTap", "Interception", "Recorder", "client_kind", "new_tap"]
