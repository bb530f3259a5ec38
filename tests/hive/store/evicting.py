"""`python -m tests.hive.store.evicting MODELS_DIR`: a model store that deletes every model of the cache,
one after the other (whole models evicted, and of a model with two revisions first one revision), and
says `evicting N` before each: for the test that kills it with SIGKILL in the middle."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.hive.cache.layout import marks_file
from services.hive.store.events import ModelEvents
from services.hive.store.inventory import Inventory
from services.hive.store.marks import Marks
from services.hive.store.models import ModelStore


async def evict_all(models_dir: Path) -> None:
    store = ModelStore(
        models_dir, Inventory(models_dir), Marks(marks_file(models_dir)), ModelEvents("h", lambda e: None), dict
    )
    store.open()
    for i, scan in enumerate(sorted(store.inventory.all(), key=lambda s: s.repo_id)):
        print(f"evicting {i}", flush=True)
        if len(scan.revisions) > 1:
            await store.delete(scan.repo_id, scan.revisions[0].commit)
        await store.evict(scan.repo_id)
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(evict_all(Path(sys.argv[1])))
