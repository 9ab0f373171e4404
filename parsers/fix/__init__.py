"""FIX tag=value (4.x and FIXT.1.1): sans-IO session per connection, BodyLength
and CheckSum checked, with a compiled batch path for well-formed messages.

Modules: ``events`` (``FixMessage``, ``FixMessageRun``, framing constants), ``session``
(``FixSession``, framing, the batch scan), ``rows`` (the
``fix_messages`` table), ``spec`` (the registration).
"""

from typing import TYPE_CHECKING

from ..lazy_exports import lazy

if TYPE_CHECKING:  # (imported at their first use: ``lazy_exports``)
    from .events import FixMessage, FixMessageRun
    from .session import FixSession

__all__ = ["FixMessage", "FixMessageRun", "FixSession"]

__getattr__ = lazy(__name__, {
    "FixMessage": ".events",
    "FixMessageRun": ".events",
    "FixSession": ".session",
})
