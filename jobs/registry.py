"""The stages, in pipeline order. The one module that imports them all; the runner and the CLI
import this, and no stage imports either (ARCHITECTURE: who may import whom)."""

from __future__ import annotations

from jobs import build_sft, chats, commits, dedup, filtering, ingest, split
from jobs.stage import Stage

STAGES: dict[str, Stage] = {
    s.name: s for s in (ingest.STAGE, filtering.STAGE, dedup.STAGE, split.STAGE,
                        commits.STAGE, chats.STAGE, build_sft.STAGE)}
