"""Build ``pcapflow.parsers._kernels_aot``: ``aot.EXPORTS`` compiled by ``numba.pycc``.

    python parsers/aot_build.py [OUTPUT_FILE]    # from a checkout (setup.py runs this)

Without ``OUTPUT_FILE`` it writes ``parsers/_kernels_aot<the platform's suffix>``, where an
editable install finds it (rebuilding after a kernel was edited).

Run from the source tree, before pcapflow is installed: ``pcapflow``, ``pcapflow.parsers``
and the sub-packages the kernels live in are made as bare packages over this checkout's
directories (their ``__init__`` files are not run: they import what a build environment
lacks), then the kernels' modules are imported, which needs NumPy and Numba only.
``NUMBA_CACHE_DIR`` should point somewhere temporary (``setup.py`` does): compiling a
kernel that calls another compiles and caches the callee.

Two corrections to ``numba.pycc`` (0.68): it compiles every export with one ``Flags``
object, which a compile may change (a kernel whose loops need it turns ``enable_ssa``
off), so each export gets a copy, as each Numba dispatcher compiles with flags of its
own; and a kernel declared ``nogil`` releases the GIL as its dispatcher does. The
module also exports ``build_key()``, the hash of the sources it was compiled from
(``aot.source_key``), which ``aot`` checks before using it.
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0] == __import__("os").path.dirname(__file__):
    del sys.path[0]  # (run as a script: parsers/ itself would shadow `http`, `tls`...)

import importlib
import os
import time
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
_PACKAGES = {
    "pcapflow": ROOT / "pcapflow",
    "pcapflow.parsers": HERE,
    "pcapflow.parsers.capture": HERE / "capture",
    "pcapflow.parsers.tcp": HERE / "tcp",
}


def _bare_packages() -> None:
    for name, path in _PACKAGES.items():
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]
            mod.__file__ = str(path / "__init__.py")
            sys.modules[name] = mod


def build(output: Path) -> None:
    """Compile ``aot.EXPORTS`` into the extension module ``output`` (its file name as
    the platform names extensions)."""
    _bare_packages()
    aot = importlib.import_module("pcapflow.parsers.aot")
    from numba.core import compiler as _compiler
    from numba.core import sigutils
    from numba.pycc import CC
    from numba.pycc import compiler as pycc_compiler

    key = aot.source_key(HERE)
    if key < 0:
        raise RuntimeError("aot_build: a source file cannot be read")
    nogil: set[object] = set()
    compile_extra = pycc_compiler.compile_extra

    def _compile_extra(typingctx: Any, targetctx: Any, func: Any, args: Any, return_type: Any,
                       flags: Any, **kw: Any) -> Any:
        flags = flags.copy()  # (pycc shares one Flags between exports: module docstring)
        if func in nogil:
            flags.release_gil = True
        return compile_extra(typingctx, targetctx, func, args, return_type, flags, **kw)

    pycc_compiler.compile_extra = _compile_extra  # type: ignore[assignment]
    assert _compiler is not None
    stem = output.name.split(".", 1)[0]
    cc = CC(stem)
    cc.output_dir = str(output.parent)
    cc.output_file = output.name
    for (module, name), (args, ret) in aot.EXPORTS.items():
        k = getattr(importlib.import_module(f"pcapflow.parsers.{module}"), name)
        fn = getattr(k, "py_func", k)
        if getattr(k, "options", {}).get("nogil"):
            nogil.add(fn)
        sig = sigutils.normalize_signature(f"{ret}({args})")
        cc.export(aot.export_name(module, name), sig[1](*sig[0]))(fn)
    ns: dict[str, object] = {}
    exec(f"def build_key():\n    return {key}\n", ns)
    cc.export("build_key", "i8()")(ns["build_key"])
    imported = {
        str(Path(str(m.__file__)).resolve().relative_to(HERE))
        for n, m in list(sys.modules.items())
        if n.startswith("pcapflow.parsers.") and n not in _PACKAGES and getattr(m, "__file__", None)
    }
    missing = imported - set(aot.SOURCES) - {"aot.py", "jitload.py"}
    if missing:
        raise RuntimeError(f"aot_build: add {sorted(missing)} to aot.SOURCES")
    cc.compile()


def main(argv: list[str]) -> int:
    if len(argv) > 1 or argv[:1] in (["-h"], ["--help"]):
        print(__doc__, file=sys.stderr)
        return 2
    t = time.perf_counter()
    if argv:
        out = Path(argv[0]).resolve()
    else:  # (beside aot.py: where an editable install imports it from)
        import importlib.machinery

        out = HERE / f"_kernels_aot{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    build(out)
    print(f"aot_build: {out.name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PCAPFLOW_AOT", "0")
    raise SystemExit(main(sys.argv[1:]))
