"""Time one huggingface_hub call in a fresh interpreter (env: HF_ENDPOINT and friends, set by the caller).

With `--file`: `hf_hub_download(repo, file)`; without: `snapshot_download(repo, max_workers=...)`.
Prints one JSON line: {"seconds": <the call alone, without interpreter start-up and imports>,
"seconds_with_sync": <the call, then `sync` so its files are on disk as the hive's are>, "path": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.hf_fetch")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--file", help="one file (hf_hub_download); without it the whole repo (snapshot_download)")
    parser.add_argument("--revision")
    parser.add_argument("--max-workers", type=int, default=8, help="snapshot_download's threads")
    parser.add_argument("--cache-dir", required=True)
    args = parser.parse_args()

    from huggingface_hub import hf_hub_download, snapshot_download

    t0 = time.perf_counter()
    if args.file:
        path = hf_hub_download(args.repo, args.file, revision=args.revision, cache_dir=args.cache_dir)
    else:
        path = snapshot_download(
            args.repo, revision=args.revision, cache_dir=args.cache_dir, max_workers=args.max_workers
        )
    seconds = time.perf_counter() - t0
    os.sync()
    synced = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "seconds_with_sync": synced, "path": path}), flush=True)


if __name__ == "__main__":
    main()
