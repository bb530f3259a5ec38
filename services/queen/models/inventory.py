"""FleetInventory: which models sit on which hive, and each hive's disk (README, "The model store"). Pure.

Fed by the queen's streams: a hive's whole list (`GET /v2/models`) when its stream connects, one
repository's entry (`GET /v2/models/{org}/{repo}`) when a `model` event or a download's end says it
changed, and the `model` events themselves where they say all there is to know (a whole model deleted
or evicted, pinned, unpinned). A hive's disk `used` and `free` follow the sizes of the models that
come and go between two whole lists, so they stay close without asking the hive again.

`GET /v1/models` answers from here: nothing is asked of a hive per request. `version` grows with every
change, so an answer can be kept until it does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.wire.models import (
    DiskBody,
    FleetHolder,
    FleetModel,
    FleetModels,
    HiveDisk,
    HiveModels,
    ModelAction,
    ModelBody,
    ModelEventBody,
)

__all__ = ["FleetInventory", "holder_of"]

_GONE = frozenset({ModelAction.DELETED, ModelAction.EVICTED})
_PIN = {ModelAction.PINNED: True, ModelAction.UNPINNED: False}


@dataclass(slots=True)
class _Hive:
    disk: DiskBody
    models: dict[str, ModelBody] = field(default_factory=dict)


def holder_of(hive_id: str, model: ModelBody) -> FleetHolder:
    """One hive's copy of a model as `GET /v1/models` shows it."""
    return FleetHolder(
        hive_id=hive_id,
        commits=[r.commit for r in model.revisions],
        complete=any(r.complete for r in model.revisions),
        size_on_disk=model.size_on_disk,
        pinned=model.pinned,
        in_use=model.in_use,
        last_used=model.last_used,
    )


class FleetInventory:
    def __init__(self) -> None:
        self._hives: dict[str, _Hive] = {}
        self.version = 0

    # -- what the hives said ---------------------------------------------------------------

    def load(self, hive_id: str, body: HiveModels) -> None:
        """A hive's whole list: it replaces everything known of that hive."""
        self._hives[hive_id] = _Hive(body.disk.model_copy(), {m.repo_id: m for m in body.models})
        self.version += 1

    def put(self, hive_id: str, repo_id: str, model: ModelBody | None) -> None:
        """One repository's entry as the hive gave it now (None: the hive no longer has it)."""
        hive = self._hives.get(hive_id)
        if hive is None:  # not loaded yet: its whole list will come
            return
        before = hive.models.pop(repo_id, None)
        if model is not None:
            hive.models[repo_id] = model
        self._moved(hive, (model.size_on_disk if model else 0) - (before.size_on_disk if before else 0))
        self.version += 1

    def apply(self, event: ModelEventBody) -> bool:
        """A `model` event; True when it does not say enough and the repository must be asked for."""
        hive = self._hives.get(event.hive_id)
        if hive is None:
            return False
        model = hive.models.get(event.repo_id)
        if event.action in _GONE and event.commit is None:
            self.put(event.hive_id, event.repo_id, None)
            return False
        if event.action in _PIN and model is not None:
            hive.models[event.repo_id] = model.model_copy(update={"pinned": _PIN[event.action]})
            self.version += 1
            return False
        return True  # added, used, one revision deleted, or a model not known here yet

    def forget(self, hive_id: str) -> None:
        if self._hives.pop(hive_id, None) is not None:
            self.version += 1

    @staticmethod
    def _moved(hive: _Hive, delta: int) -> None:
        if delta:
            hive.disk = hive.disk.model_copy(
                update={"used": max(0, hive.disk.used + delta), "free": max(0, hive.disk.free - delta)}
            )

    # -- questions -------------------------------------------------------------------------

    def loaded(self, hive_id: str) -> bool:
        return hive_id in self._hives

    def holdings(self, repo_id: str) -> dict[str, ModelBody]:
        """Every hive's entry of the repository (hive_id -> its entry)."""
        return {h: m for h, hive in self._hives.items() if (m := hive.models.get(repo_id)) is not None}

    def model(self, hive_id: str, repo_id: str) -> ModelBody | None:
        hive = self._hives.get(hive_id)
        return None if hive is None else hive.models.get(repo_id)

    def counts(self) -> dict[str, tuple[int, int]]:
        """hive_id -> (models, bytes of its cache) as last known."""
        return {h: (len(hive.models), hive.disk.used) for h, hive in self._hives.items()}

    def fleet(self, hive_ids: Iterable[str], unreachable: Iterable[str]) -> FleetModels:
        """`GET /v1/models` over these hives: models by repo id, holders and disks by hive id."""
        shown = sorted(h for h in set(hive_ids) if h in self._hives)
        by_repo: dict[str, list[FleetHolder]] = {}
        for hive_id in shown:
            for repo_id, model in self._hives[hive_id].models.items():
                by_repo.setdefault(repo_id, []).append(holder_of(hive_id, model))
        return FleetModels(
            models=[FleetModel(repo_id=r, hives=by_repo[r]) for r in sorted(by_repo)],
            hives=[HiveDisk(hive_id=h, **self._hives[h].disk.model_dump()) for h in shown],
            unreachable_hives=sorted(set(unreachable)),
        )
