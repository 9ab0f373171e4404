"""A package's public names imported at their first use (PEP 562).

How this works. A protocol package (``parsers/tls``, ``http``...) re-exports the
names of its modules (``from pcapflow.parsers.tls import TlsSession``). Importing
them in its ``__init__`` made importing *any* of its modules (the registry's probe
constants, a key log) import the whole protocol: its session, the compiled kernels
it defines, ``cryptography``. ``lazy`` gives the package a module ``__getattr__``
that imports a name's module the first time the name is read, and keeps the value
in the package, so a capture without the protocol never imports its parsers. The
package lists the same names under ``TYPE_CHECKING`` for type checkers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package`` (its ``__name__``) for ``names``: public
    name -> the module, relative to the package, that defines it."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
