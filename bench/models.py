"""Scenarios 6 and 7: whole models from the test hub (hive vs snapshot_download and `hf download`; memory).

The test hub (services/modelserver/hub.py) runs on this process's threads: the model API, the tree and
the resolves from the hub, LFS blobs by signed, expiring URL from its CDN, bodies sent with sendfile.
Every client pulls the same repo at the same commit into a Hugging Face cache, and every result is
checked file by file (the set of paths, and each file's sha256 against the hub's), so a fast wrong
answer counts as a failure, not as a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.context import MIB, Context, Trial, hive_fetch, rounds, size_text
from bench.procs import RssSampler, Service, run_checked
from bench.report import Measurement, Ratio, Section, Target, fmt, ratio
from bench.system import module_version
from services.modelserver.files import sha256_file
from services.modelserver.hub import Hub
from services.modelserver.hub_repo import Generated, HubFile

__all__ = ["Published", "check_snapshot", "hub_env", "many_files", "model", "publish", "shard_names"]

MODEL_REPO = "bench/model"
MANY_REPO = "bench/many-files"
SHARDS = 4
MAX_WORKERS = 8  # snapshot_download's and `hf download`'s default, given explicitly
HF_PREFIXES = ("HF_", "HUGGING_FACE_")  # a token or cache of whoever runs the bench must not leak in
HIVE_RSS_LIMIT_MB = 150.0


# --------------------------------------------------------------------------- the repos


@dataclass(frozen=True)
class Published:
    """A repo on the test hub whose main is `commit`, holding `files` (by path)."""

    repo: str
    commit: str
    files: Mapping[str, HubFile]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def ref(self) -> str:
        return f"hf:{self.repo}"


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


def shard_names(count: int) -> list[str]:
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def publish(ctx: Context, repo: str, shards: Mapping[str, int]) -> Published:
    """`repo` on the test hub, its main holding the shards (LFS, generated) and the small files."""
    hub = ctx.hub()
    ctx.log(f"publishing {repo}: {len(shards)} shards, {size_text(sum(shards.values()))} on the test hub")
    hub.add_repo(repo)
    vocab = min(100_000, max(1000, min(shards.values()) // 64))
    content = {path: Generated(size, seed=i + 1) for i, (path, size) in enumerate(sorted(shards.items()))}
    commit = hub.commit(repo, {**content, **_small_files(shards, vocab)}, message="upload the model")
    return Published(repo, commit, dict(hub.repo(repo).commits[commit].files))


# --------------------------------------------------------------------------- clients and checks


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
    bad = [path for path, f in sorted(model.files.items()) if sha256_file(snapshot / path) != f.sha256]
    if bad:
        raise RuntimeError(f"{snapshot}: sha256 differs from the hub's for {bad[:5]}")


def hub_env(hub: Hub, home: Path) -> dict[str, str | None]:
    """For the hive and huggingface_hub alike: the test hub, a fresh HF_HOME, no token of the caller's."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(HF_PREFIXES)}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",  # the CLI would ask pypi.org for a newer release first
    )
    return env


def _environ(env: Mapping[str, str | None]) -> dict[str, str]:
    merged = {**os.environ, **env}
    return {k: v for k, v in merged.items() if v is not None}


def _env_text(env: Mapping[str, str | None]) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items() if v is not None and k != "HF_HOME") + " HF_HOME=<fresh dir>"


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


def _hive_pull(hive: Service, models: Path, model: Published, timeout: float) -> float:
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


def _snapshot_download(
    cache: Path, model: Published, env: Mapping[str, str | None], timeout: float
) -> tuple[float, float]:
    """`snapshot_download` in a fresh interpreter into a fresh `cache`, checked and removed after:
    (seconds of the call, seconds of the call and a `sync`)."""
    argv = [sys.executable, "-m", "bench.hf_fetch", "--repo", model.repo, "--revision", "main"]
    argv += ["--max-workers", str(MAX_WORKERS), "--cache-dir", str(cache)]
    Context.remove(cache)
    try:
        result = run_checked(argv, timeout, env=_environ(env))
        info: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        check_snapshot(Path(info["path"]), model)
    finally:
        Context.remove(cache)
    return float(info["seconds"]), float(info["seconds_with_sync"])


def _snapshot_command(model: Published, env: Mapping[str, str | None]) -> str:
    return (
        f"{_env_text(env)} python -m bench.hf_fetch --repo {model.repo} --revision main "
        f"--max-workers {MAX_WORKERS} --cache-dir <fresh dir>   # snapshot_download(...), then os.sync()"
    )


def _hf_cli() -> tuple[str | None, str, list[str]]:
    """The `hf` command huggingface_hub installs: (path, why not, extra flags), checked against its --help."""
    beside = Path(sys.executable).parent / "hf"
    path = str(beside) if beside.exists() else shutil.which("hf")
    if path is None:
        return None, "the `hf` command is not installed (huggingface_hub >= 0.34 provides it)", []
    try:
        help_text = subprocess.run([path, "download", "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`hf download --help` failed: {exc}", []
    lacking = [flag for flag in ("--revision", "--cache-dir", "--max-workers") if flag not in help_text]
    if lacking:
        return None, f"`hf download` of this huggingface_hub has no {', '.join(lacking)}", []
    return path, "", ["--quiet"] if "--quiet" in help_text else []


# --------------------------------------------------------------------------- 6. one model, three clients


def model(ctx: Context) -> Section:
    shard = ctx.sizes.model_shard
    hub = ctx.hub()
    published = publish(ctx, MODEL_REPO, dict.fromkeys(shard_names(SHARDS), shard))
    total, small = published.size, len(published.files) - SHARDS
    section = Section(
        "model", f"6. A whole model from the test hub: {SHARDS} x {size_text(shard)} shards and {small} files"
    )
    timeout = 120 + total / (20 * MIB)
    out = ctx.workdir / "out"
    section.method = [
        f"The test hub (`services/modelserver/hub.py`, on the harness's threads, bodies sent with sendfile) holds "
        f"`{MODEL_REPO}` at one commit: {SHARDS} safetensors shards of {size_text(shard)} (LFS: the hub's resolve "
        f"answers 302 to a signed, expiring URL on its CDN, a second host) and {small} small files "
        f"(config, tokenizer, index, `.gitattributes`; served by the hub itself), {total / 1e6:.0f} MB in all. "
        "The blobs sit in the page cache, so this measures the clients, not a disk read.",
        "Each run measures every client once, one after the other, in an order rotated each run; `sync` runs "
        "before and after every measurement, each result is deleted after it, and a measurement waits (at most "
        "4 s) for other processes on the machine to go quiet first (see the notes).",
        "Every client asks for `main` and gets a fresh Hugging Face cache; its snapshot directory "
        f"(`models--{MODEL_REPO.replace('/', '--')}/snapshots/<commit>`) must hold exactly the commit's files, "
        "each with the hub's sha256 (checked after the clock stops; a failed check is a failed run).",
        f"hive: a real `rbee-hive` subprocess (default settings, one process for all runs), `HF_ENDPOINT` at the "
        f'hub; wall time from sending `POST /v2/downloads {{"model_ref": "{published.ref}"}}` to receiving the one '
        "`complete` event of the model on `GET /v2/downloads/{id}/stream`, whose `path` must be the snapshot "
        "directory under `HIVE_MODELS_DIR/hub`. The hive fsyncs every file before it is renamed into place. "
        "psutil samples its RSS every 50 ms during the pull.",
        f"snapshot_download: `snapshot_download(repo_id, revision='main', cache_dir=<fresh dir>, "
        f"max_workers={MAX_WORKERS})` in its own interpreter; the figure is the call alone (interpreter start-up "
        "and imports excluded, in its favour). huggingface_hub does not fsync: the same call followed by `sync` "
        "is listed too (the hive's durability).",
        f"hf download: `hf download {MODEL_REPO} --revision main --cache-dir <fresh dir> --max-workers {MAX_WORKERS}`, "
        "timed from spawning the command to its exit (start-up included: that is what a user waits for; `hf "
        "version`, the start-up alone, is listed for reference). `HF_HUB_DISABLE_UPDATE_CHECK=1` keeps it from "
        "asking pypi.org for a newer release first.",
    ]

    hive_models = ctx.workdir / "models" / "hive-model"
    hive = ctx.hive("hive-model", env=hub_env(hub, ctx.workdir / "hive-model-home"), models_dir=hive_models)
    section.commands.append(
        f'HF_ENDPOINT={hub.url} rbee-hive; POST /v2/downloads {{"model_ref": "{published.ref}"}}; '
        "GET /v2/downloads/{id}/stream until `complete`"
    )
    traffic = Traffic(hub)
    trials: list[tuple[Measurement, Trial]] = []
    missing: list[str] = []

    m_hive = section.measure("hive (POST -> complete)", "s")
    m_rss = section.measure("hive peak RSS during the pull", "MB")

    def hive_trial() -> float:
        traffic.start()
        with RssSampler(hive.pid, 0.05) as sampler:
            seconds = _hive_pull(hive, hive_models, published, timeout)
        m_rss.runs.append(sampler.peak / 1e6)
        traffic.took("hive")
        return seconds

    trials.append((m_hive, hive_trial))

    m_snap = m_snap_sync = None
    if module_version("huggingface_hub") is None:
        missing.append("snapshot_download and hf download skipped: huggingface_hub is not installed")
    else:
        env = hub_env(hub, ctx.workdir / "hf-home-model")
        m_snap = section.measure("snapshot_download", "s", note="the call alone")
        m_sync = m_snap_sync = section.measure("snapshot_download, then sync", "s", note="the call alone")
        section.commands.append(_snapshot_command(published, env))

        def snapshot_trial() -> float:
            traffic.start()
            seconds, synced = _snapshot_download(out / "hf-snapshot-cache", published, env, timeout + 30)
            traffic.took("snapshot_download")
            m_sync.runs.append(synced)
            return seconds

        trials.append((m_snap, snapshot_trial))

    m_cli = None
    hf, why_no_cli, flags = _hf_cli() if module_version("huggingface_hub") else (None, "", [])
    if hf is None and why_no_cli:
        missing.append(f"hf download skipped: {why_no_cli}")
        ctx.log(f"hf download skipped: {why_no_cli}")
    elif hf is not None:
        cli_spec = hub_env(hub, ctx.workdir / "hf-home-cli")
        cli_env = _environ(cli_spec)
        m_cli = section.measure("hf download", "s", note="start-up included")
        m_start = section.measure("hf version (the CLI's start-up alone, for reference)", "s")
        argv = [hf, "download", MODEL_REPO, "--revision", "main", "--max-workers", str(MAX_WORKERS), *flags]
        section.commands.append(f"{_env_text(cli_spec)} {' '.join(['hf', *argv[1:]])} --cache-dir <fresh dir>")

        def cli_trial() -> float:
            cache = out / "hf-cli-cache"
            ctx.remove(cache)
            traffic.start()
            try:
                t0 = time.perf_counter()
                result = run_checked([*argv, "--cache-dir", str(cache)], timeout + 30, env=cli_env)
                seconds = time.perf_counter() - t0
                traffic.took("hf download")
                check_snapshot(Path(result.stdout.strip().splitlines()[-1]), published)
            finally:
                ctx.remove(cache)
            t0 = time.perf_counter()
            run_checked([hf, "version"], 60, env=cli_env)
            m_start.runs.append(time.perf_counter() - t0)
            return seconds

        trials.append((m_cli, cli_trial))

    ctx.log(
        f"scenario 6: {total / 1e6:.0f} MB in {len(published.files)} files x {len(trials)} clients x {ctx.runs} runs"
    )
    rounds(ctx, section, trials)

    r_snap = ratio(m_hive, m_snap)
    r_cli = ratio(m_hive, m_cli)
    section.ratios = [
        Ratio("hive / snapshot_download", r_snap, "time ratio, lower is better"),
        Ratio("hive / (snapshot_download + sync)", ratio(m_hive, m_snap_sync), "time ratio (the same durability)"),
        Ratio("hive / hf download", r_cli, "time ratio (hf download's start-up included)"),
    ]
    for label, m in (("hive", m_hive), ("snapshot_download", m_snap), ("hf download", m_cli)):
        if m is not None and m.median:
            section.notes.append(f"{label} throughput: {total / m.median / 1e6:.0f} MB/s (median)")
    section.notes += traffic.notes() + missing
    why = "" if m_snap is not None else "huggingface_hub not installed"
    section.targets = [Target("hive <= 0.5x snapshot_download's wall time", r_snap, 0.5, "<=", "x", why)]
    if r_cli is not None:
        section.notes.append(f"Against `hf download` (no target) the hive is at {fmt(r_cli, 'x')}.")
    return section


# --------------------------------------------------------------------------- 7. memory, many files


def many_files(ctx: Context) -> Section:
    count, base = ctx.sizes.many_files, ctx.sizes.many_file_size
    hub = ctx.hub()
    names = shard_names(count - SMALL_FILES)
    # sizes spread evenly over [base, 2 * base), in a scrambled but fixed order
    shards = {name: base + (i * 7919 % len(names)) * base // len(names) for i, name in enumerate(names)}
    published = publish(ctx, MANY_REPO, shards)
    total = published.size
    section = Section("model-memory", f"7. Hive memory: a model of {len(published.files)} files")
    timeout = 120 + total / (20 * MIB)
    section.method = [
        f"The test hub holds `{MANY_REPO}` at one commit: {len(names)} safetensors shards of {size_text(base)} to "
        f"{size_text(2 * base)} (LFS, through the CDN) and {len(published.files) - len(names)} small files, "
        f"{len(published.files)} files, {total / 1e6:.0f} MB in all.",
        f'A fresh `rbee-hive` per run (default settings); `POST /v2/downloads {{"model_ref": "{published.ref}"}}`, '
        "then the model's stream until its `complete` event; the snapshot is checked file by file (paths and "
        "sha256) and deleted. psutil samples the hive's RSS every 50 ms from before the POST to the end; the "
        "figure is the peak. The idle RSS (after start-up, before the POST) is listed too. MB = 10^6 bytes.",
        f"For comparison (no target): `snapshot_download(max_workers={MAX_WORKERS})` of the same repo in its own "
        "interpreter after each hive run, the call alone, and the call followed by `sync`.",
    ]
    section.commands.append(f'HF_ENDPOINT={hub.url} rbee-hive; POST /v2/downloads {{"model_ref": "{published.ref}"}}')
    m_peak = section.measure("hive peak RSS", "MB")
    m_idle = section.measure("hive idle RSS (before)", "MB")
    m_time = section.measure("hive wall time (POST -> complete)", "s")
    env = hub_env(hub, ctx.workdir / "hf-home-many")
    has_hf = module_version("huggingface_hub") is not None
    m_snap = m_sync = None
    if has_hf:
        m_snap = section.measure("snapshot_download (for comparison)", "s", note="the call alone")
        m_sync = section.measure("snapshot_download, then sync (for comparison)", "s", note="the call alone")
        section.commands.append(_snapshot_command(published, env))
    traffic = Traffic(hub)
    for run in range(ctx.runs):
        label = f"run {run + 1}"
        try:
            peak, idle, seconds = _many_run(ctx, f"hive-many-{run + 1}", published, timeout, traffic)
        except Exception as exc:
            section.notes.append(f"{label}: the hive's pull failed: {type(exc).__name__}: {exc}")
            ctx.log(f"  {label}: hive FAILED {exc}")
        else:
            for m, value in ((m_peak, peak), (m_idle, idle), (m_time, seconds)):
                m.runs.append(value)
            ctx.log(f"  {label}: peak RSS {peak:.0f} MB, idle {idle:.0f} MB, {seconds:.2f} s")
        if m_snap is not None and m_sync is not None:
            ctx.quiet()
            try:
                seconds, synced = _snapshot_download(ctx.workdir / "out" / "hf-many", published, env, timeout)
            except Exception as exc:
                section.notes.append(f"{label}: snapshot_download failed: {type(exc).__name__}: {exc}")
            else:
                m_snap.runs.append(seconds)
                m_sync.runs.append(synced)
            finally:
                ctx.settle()
    section.ratios = [
        Ratio("hive / snapshot_download", ratio(m_time, m_snap), "time ratio, for comparison (no target)"),
        Ratio("hive / (snapshot_download + sync)", ratio(m_time, m_sync), "time ratio (the same durability)"),
    ]
    section.notes += traffic.notes()
    limit = HIVE_RSS_LIMIT_MB
    files = len(published.files)
    section.targets = [Target(f"hive peak RSS < {limit:.0f} MB ({files} files)", m_peak.median, limit, "<", "MB")]
    return section


def _many_run(
    ctx: Context, name: str, model: Published, timeout: float, traffic: Traffic
) -> tuple[float, float, float]:
    """One fresh hive pulls the model: (peak RSS MB, idle RSS MB, seconds)."""
    with ExitStack() as run_stack:
        run_stack.callback(ctx.settle)
        models = ctx.workdir / "models" / name
        hive = ctx.hive("hive-many", env=hub_env(ctx.hub(), ctx.workdir / f"{name}-home"), models_dir=models)
        run_stack.callback(hive.stop)
        sampler = RssSampler(hive.pid, 0.05).start()
        run_stack.callback(sampler.stop)
        ctx.quiet()
        idle = sampler.now()
        traffic.start()
        seconds = _hive_pull(hive, models, model, timeout)
        sampler.stop()
        traffic.took("hive")
        return sampler.peak / 1e6, idle / 1e6, seconds
