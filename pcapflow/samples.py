"""The bundled sample captures (real loopback captures of a mock exchange).

``sample_dir()`` finds them inside the installed package (``pcapflow/_samples``,
shipped as package data in the wheel) or, in a source checkout, in the
repository's ``sample_pcaps/``. Each sample is a capture with, where it has one,
its TLS key log and the client's ground-truth log (see ``MANIFEST.md`` there).

    >>> from pcapflow.samples import samples
    >>> [s.name for s in samples()]                                   # doctest: +SKIP
    ['binance_rest_dsb', 'binance_rest_tls13', ...]
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from .parsers.errors import ConfigError

PACKAGED_DIR = "_samples"
"""Sub-directory of the installed ``pcapflow`` package that holds the samples."""

CAPTURE_SUFFIXES = (".pcap", ".pcapng")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One bundled capture and its companion files."""

    name: str
    capture: Path
    keylog: Path | None
    truth: Path | None


def sample_dir() -> Path:
    """Directory of the bundled samples: packaged copy first, then the source checkout."""
    packaged = importlib.resources.files("pcapflow") / PACKAGED_DIR
    if packaged.is_dir() and (packaged / "MANIFEST.md").is_file():
        return Path(str(packaged))
    repo = Path(__file__).resolve().parent.parent / "sample_pcaps"
    if (repo / "MANIFEST.md").is_file():
        return repo
    raise ConfigError(
        "bundled sample captures not found: neither pcapflow/_samples in the installed "
        f"package nor {repo} exists (reinstall pcapflow from a wheel that includes them)",
        code="no_samples",
    )


def samples() -> list[Sample]:
    """Every bundled capture, sorted by name."""
    root = sample_dir()
    out = []
    for path in sorted(p for p in root.iterdir() if p.suffix in CAPTURE_SUFFIXES):
        keylog, truth = path.with_suffix(".keylog"), path.with_suffix(".truth.jsonl")
        out.append(Sample(name=path.stem, capture=path,
                          keylog=keylog if keylog.is_file() else None,
                          truth=truth if truth.is_file() else None))
    return out


def sample(name: str) -> Sample:
    """One bundled sample by name (``binance_rest_tls13`` or ``binance_rest_tls13.pcap``)."""
    stem = Path(name).stem if Path(name).suffix in CAPTURE_SUFFIXES else name
    for s in samples():
        if s.name == stem:
            return s
    raise ConfigError(f"no bundled sample {name!r}; samples: "
                      f"{', '.join(s.name for s in samples())}", code="no_sample")
