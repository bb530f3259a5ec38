"""The demo's model: a small sharded checkpoint on the test hub, as a real one has its files."""

from __future__ import annotations

import json

from services.modelserver.published import shard_names

__all__ = ["MODEL_REF", "ORG_REPO", "SHARDS", "small_files"]

ORG_REPO = "demo-org/demo-model"
MODEL_REF = f"hf:{ORG_REPO}"
SHARDS = tuple(shard_names(2))


def small_files(shard_size: int) -> dict[str, str]:
    """The model's text files, as a real sharded checkpoint has them (the weights are random bytes)."""
    config = {"architectures": ["DemoForCausalLM"], "model_type": "demo", "hidden_size": 256, "num_hidden_layers": 2}
    tokenizer = {"version": "1.0", "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1}, "merges": []}}
    index = {
        "metadata": {"total_size": shard_size * len(SHARDS)},
        "weight_map": {f"layers.{i}.weight": shard for i, shard in enumerate(SHARDS)},
    }
    texts = {"config.json": config, "tokenizer.json": tokenizer, "model.safetensors.index.json": index}
    return {path: json.dumps(body, indent=2) + "\n" for path, body in texts.items()}
