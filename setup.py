"""Build step of ``pip install``: the kernels of a small plain-TCP ingest compiled ahead of
time (``parsers/aot.py``). Everything else about the package is in pyproject.toml.

The extension ``pcapflow.parsers._kernels_aot`` is made by ``parsers/aot_build.py`` in a
child process (Numba's ``pycc``, a C compiler and Python's headers; ~10-30 s). If that
fails for any reason (no compiler, a Numba without ``pycc``...), the install goes on
without it and pcapflow compiles those kernels with Numba at run time, as it does every
other kernel: the tables are the same, a small ingest's start-up is ~0.3 s longer.
``PCAPFLOW_AOT_BUILD=0`` skips the build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
AOT = "pcapflow.parsers._kernels_aot"


class BuildExt(build_ext):
    def build_extension(self, ext: Extension) -> None:
        if ext.name != AOT:
            super().build_extension(ext)
            return
        out = Path(self.get_ext_fullpath(ext.name)).resolve()
        if os.environ.get("PCAPFLOW_AOT_BUILD", "1") == "0":
            self.warn("PCAPFLOW_AOT_BUILD=0: kernels compiled at run time by Numba")
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="pcapflow-aot-") as tmp:
            # (PYTHONPATH kept: it is how pip's isolated build environment, with the Numba
            # of [build-system].requires, reaches this child)
            env = dict(os.environ, NUMBA_CACHE_DIR=tmp, PCAPFLOW_AOT="0")
            try:
                done = subprocess.run(
                    [sys.executable, str(HERE / "parsers" / "aot_build.py"), str(out)],
                    env=env, cwd=tmp, capture_output=True, text=True, timeout=900,
                )
            except (OSError, subprocess.SubprocessError) as e:
                done = None
                why = str(e)
            else:
                why = (done.stderr or done.stdout).strip()[-2000:]
        if done is None or done.returncode != 0 or not out.exists():
            self.warn(
                "pcapflow: the ahead-of-time kernels were not built; Numba compiles them "
                f"at run time instead (same tables, slower start-up):\n{why}"
            )
            if out.exists():
                out.unlink()

    def get_outputs(self) -> list[str]:
        # (only what was built: a failed AOT build leaves no file to install)
        return [p for p in super().get_outputs() if os.path.exists(p)]


setup(
    ext_modules=[Extension(AOT, sources=[], optional=True)],
    cmdclass={"build_ext": BuildExt},
)
