"""Models the benchmarks publish on the test hub (a transformers checkpoint: shards and its small files),
the hive pulling one, and the checks of what a client got: the snapshot file by file, the hub's traffic."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from bench.context import Context, hive_fetch, size_text
from bench.procs import Service
from services.modelserver.files import sha256_file
from services.modelserver.hub import Hub
from services.modelserver.hub_repo import Generated
from services.modelserver.published import Published

__all__ = ["SMALL_FILES", "Traffic", "check_snapshot", "hive_pull", "publish"]


def _tokenizer(entries: int) -> bytes:
    vocab = {f"tok{i:06d}": i for i in range(entries)}
    return json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": vocab}}).encode()


def _small_files(shards: Mapping[str, int], vocab: int) -> dict[str, bytes]:
    """The small (plain git) files a transformers model has beside its shards; with `.gitattributes`, 8."""
    names = sorted(shards)
    weight_map = {f"model.layers.{i}.mlp.weight": names[i * len(names) // 32] for i in range(32)}
    index = {"metadata": {"total_size": sum(shards.values())}, "weight_map": weight_map}
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32}
    return {
        "config.json": json.dumps(config, indent=2).encode(),
        "generation_config.json": b'{"bos_token_id": 1, "eos_token_id": 2, "do_sample": true}\n',
        "model.safetensors.index.json": json.dumps(index, indent=2).encode(),
        "special_tokens_map.json": b'{"bos_token": "<s>", "eos_token": "</s>"}\n',
        "tokenizer.json": _tokenizer(vocab),
        "tokenizer_config.json": b'{"model_max_length": 8192, "tokenizer_class": "PreTrainedTokenizerFast"}\n',
        "README.md": b"---\nlicense: apache-2.0\n---\n# A generated model for the benchmarks\n",
    }


SMALL_FILES = 8  # _small_files and the `.gitattributes` every new repo has


def publish(ctx: Context, repo: str, shards: Mapping[str, int]) -> Published:
    """`repo` on the test hub, its main holding the shards (LFS, generated) and the small files."""
    hub = ctx.hub()
    ctx.log(f"publishing {repo}: {len(shards)} shards, {size_text(sum(shards.values()))} on the test hub")
    hub.add_repo(repo)
    vocab = min(100_000, max(1000, min(shards.values()) // 64))
    content = {path: Generated(size, seed=i + 1) for i, (path, size) in enumerate(sorted(shards.items()))}
    commit = hub.commit(repo, {**content, **_small_files(shards, vocab)}, message="upload the model")
    return Published.of(hub, repo, commit)


def check_snapshot(snapshot: Path, model: Published) -> None:
    """`snapshot` is `models--{org}--{repo}/snapshots/{commit}` of a Hugging Face cache and holds exactly the
    model's files, each with the hub's sha256."""
    want = f"models--{model.repo.replace('/', '--')}"
    if snapshot.name != model.commit or snapshot.parent.name != "snapshots" or snapshot.parent.parent.name != want:
        raise RuntimeError(f"{snapshot} is not {want}/snapshots/{model.commit}")
    expected = set(model.files)
    got = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    if got != expected:
        raise RuntimeError(f"{snapshot}: missing {sorted(expected - got)[:5]}, unexpected {sorted(got - expected)[:5]}")
    bad = [path for path, sha in sorted(model.files.items()) if sha256_file(snapshot / path) != sha]
    if bad:
        raise RuntimeError(f"{snapshot}: sha256 differs from the hub's for {bad[:5]}")


class Traffic:
    """What the hub and its CDN answered during each client's runs (from their request records)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.runs: dict[str, list[str]] = {}

    def start(self) -> None:
        self.hub.clear_records()
        self.hub.cdn.clear_records()

    def took(self, client: str) -> None:
        hub = self.hub
        api = [r for r in hub.records() if r.path.startswith("/api/")]
        resolves = [r for r in hub.records() if "/resolve/" in r.path]
        heads = sum(1 for r in resolves if r.method == "HEAD")
        cdn = hub.cdn.records()
        sent = hub.total_bytes_sent() + hub.cdn.total_bytes_sent()
        self.runs.setdefault(client, []).append(
            f"{len(api)} API, {len(resolves)} resolve ({heads} HEAD), {len(cdn)} CDN requests "
            f"({sum(1 for r in cdn if r.range)} ranged), {sent / 1e6:.0f} MB"
        )

    def notes(self) -> list[str]:
        return [
            f"{client}, what the hub and its CDN answered per run: " + "; ".join(runs)
            for client, runs in self.runs.items()
        ]


def hive_pull(hive: Service, models: Path, model: Published, timeout: float) -> float:
    """The hive pulls the model: seconds from POST to its `complete` event, whose `path` must be the snapshot
    under `models/hub`, byte for byte. The cache is removed after."""
    try:
        seconds, payload = hive_fetch(hive.url, model.ref, timeout)
        snapshot = Path(payload["path"])
        if snapshot.parent.parent.parent != models / "hub":
            raise RuntimeError(f"the model landed at {snapshot}, not under {models / 'hub'}")
        check_snapshot(snapshot, model)
        return seconds
    finally:
        Context.remove(models / "hub")
