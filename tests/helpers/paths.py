"""Where the tests find data that is not in the repository.

The third-party capture corpus lives in ``shared/public-captures`` beside the
repository (CI clones the repo with ``shared/`` next to it). ``$PCAPFLOW_PUBLIC_CAPTURES``
overrides. Tests that need it skip when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_pcaps"


def _public() -> Path:
    env = os.environ.get("PCAPFLOW_PUBLIC_CAPTURES")
    if env:
        return Path(env)
    for cand in (REPO.parent / "shared" / "public-captures", Path("/work/shared/public-captures")):
        if cand.exists():
            return cand
    return REPO.parent / "shared" / "public-captures"


PUBLIC = _public()
