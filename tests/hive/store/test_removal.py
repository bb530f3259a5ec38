"""Deleting from the cache keeps it valid for huggingface_hub, also when the hive is killed in the
middle (services/hive/store/removal.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from services.hive.store.inventory import Inventory
from services.hive.store.removal import remove_revision
from tests.hive.store.cache_trees import commit_of, hf_view, write_repo
from tests.hive.store.test_inventory import view_of
from tests.support import REPO, read_until


def test_deleting_one_revision_keeps_the_blobs_another_revision_shares(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    old, new = commit_of("old"), commit_of("new")
    root = write_repo(
        hub,
        "org/m",
        {old: {"config.json": b"{1}", "w.bin": b"shared" * 10}, new: {"config.json": b"{2}", "w.bin": b"shared" * 10}},
        {"main": new, "refs/pr/1": old},
    )
    inventory = Inventory(tmp_path)
    inventory.load()
    scan = inventory.get("org/m")
    assert scan is not None
    remove_revision(root, scan, old, tmp_path / ".rbee" / "trash")
    assert not (root / "refs" / "refs" / "pr" / "1").exists() and (root / "refs" / "main").read_text() == new
    assert sorted(p.name for p in (root / "snapshots").iterdir()) == [new]
    assert len(list((root / "blobs").iterdir())) == 2  # {2} and the shared weights; {1} went
    assert hf_view(hub) == {"org/m": (3 + 60, {new: (("main",), 2, 63)})}


def _cache(hub: Path, repos: int, files: int) -> None:
    for i in range(repos):
        revisions = {
            commit_of(f"{i}-{r}"): {
                f"d{f % 7}/f{f}.bin": f"{i}-{f}-{r if f % 2 else 0}".encode() * 50 for f in range(files)
            }
            for r in range(2)
        }
        write_repo(hub, f"org/m{i:03}", revisions, {"main": commit_of(f"{i}-1")})


def test_a_kill_9_during_evictions_leaves_a_cache_huggingface_hub_reads_without_warnings(tmp_path: Path) -> None:
    """Killed at three points of a run of evictions (and revision deletes), the cache is each time one
    scan_cache_dir reads without warnings, whole models or gone; the next start empties the trash."""
    hub = tmp_path / "hub"
    _cache(hub, repos=24, files=120)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for kill_after in (b"evicting 1\n", b"evicting 6\n", b"evicting 12\n"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hive.store.evicting", str(tmp_path)],
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        try:
            assert proc.stdout is not None
            out = read_until(proc.stdout.fileno(), lambda seen, k=kill_after: k in seen, timeout=60)
            assert kill_after in out, out
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL  # killed, not finished
        seen = hf_view(hub)  # no warnings
        inventory = Inventory(tmp_path)
        inventory.load()
        assert view_of(inventory) == seen
        assert all(revisions for _size, revisions in seen.values())
    done = subprocess.run(
        [sys.executable, "-m", "tests.hive.store.evicting", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.endswith(b"done\n"), done
    assert hf_view(hub) == {} and list((tmp_path / ".rbee" / "trash").iterdir()) == []
