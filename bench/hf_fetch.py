"""Time one `hf_hub_download` call in a fresh interpreter (env: HF_ENDPOINT and friends, set by the caller).

Prints one JSON line: {"seconds": <the call alone, without interpreter start-up and imports>, "path": ...}.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.hf_fetch")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--cache-dir", required=True)
    args = parser.parse_args()

    from huggingface_hub import hf_hub_download

    t0 = time.perf_counter()
    path = hf_hub_download(args.repo, args.file, cache_dir=args.cache_dir)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "path": path}), flush=True)


if __name__ == "__main__":
    main()
