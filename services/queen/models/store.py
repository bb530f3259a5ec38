"""ModelStore: the queen's side of the fleet's model store (README, "The model store").

It keeps the FleetInventory current from what the AggregateHub sees on every hive's one stream: when
a hive's stream connects (first time and after each reconnect) its whole list is loaded, a `model`
event is applied or its repository asked for again, and so is an `hf:` ref's whenever a download of it
begins or ends there (`in_use`).
Nothing is asked of a hive per `GET /v1/models`. A delete, pin or unpin goes to its hives at once
(`fan_out`), a result per hive; what changed comes back as `model` events, and the repository is asked
for again on every hive that answered, so a second `GET /v1/models` already shows it.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine
from typing import Any

import structlog
from pydantic import ValidationError

from services.queen.hives.client import HiveClient
from services.queen.hives.fan_out import fan_out
from services.queen.hives.placement import repo_id_of
from services.queen.hives.registry import Health, HiveInfo, HiveRegistry
from services.queen.models.inventory import FleetInventory
from services.queen.models.targets import target_hives
from services.queen.streams.upstream import decode_payload
from shared.backoff import Backoff
from shared.errors import ApiError
from shared.models import EventType, ProgressEvent
from shared.wire.models import FleetModels, HiveModelResult, HiveModels, ModelBody, ModelEventBody, ModelResults

__all__ = ["ModelStore"]

log = structlog.get_logger()

_LOAD_ATTEMPTS = 8  # a hive's whole list, while it fails: 0.5 s doubling to 8 s, about 40 s in all


class ModelStore:
    def __init__(
        self,
        registry: HiveRegistry,
        hives: HiveClient,
        inventory: FleetInventory,
        time_limit: float,
        orchestrator_id: str,
        retry_initial: float = 0.5,
    ) -> None:
        self.registry = registry
        self.orchestrator_id = orchestrator_id
        self._event_ids = itertools.count(1)  # the queen's own ids of the `model` events it relays
        self.hives = hives
        self.inventory = inventory
        self.time_limit = time_limit
        self.retry_initial = retry_initial  # seconds before a failed load is tried again (doubling)
        self._background: set[asyncio.Task[None]] = set()
        self._loading: dict[str, set[str]] = {}  # hive_id -> repos changed while its whole list was asked for
        self._asking: dict[tuple[str, str], bool] = {}  # (hive, repo) asked for now -> asked again after it
        self._stale: set[str] = set()  # hives whose stream dropped since their list was loaded

    # -- fed by the hives' streams ---------------------------------------------------------

    def connected(self, hive: HiveInfo) -> None:
        """The hive's stream (re)connected: load its whole list."""
        if hive.hive_id not in self._loading:
            self._loading[hive.hive_id] = set()
            self._spawn(self._load(hive))

    def disconnected(self, hive_id: str) -> None:
        """The hive's stream dropped: its models are not shown until its list is loaded again."""
        self._stale.add(hive_id)

    def on_model_event(self, hive_id: str, data: str) -> ProgressEvent | None:
        """A hive's `model` event (its SSE data): applied, and returned as the queen relays it (with
        `orchestrator_id` and the queen's own id); None when it is no such event."""
        try:
            event = ModelEventBody.model_validate({**(decode_payload(data) or {}), "hive_id": hive_id})
        except ValidationError:
            return None
        # (while its list is on its way, the list may be older than the event: ask for the repo after it)
        if self.inventory.apply(event) or hive_id in self._loading:
            self.changed(hive_id, event.repo_id)
        relayed = {**event.model_dump(mode="json"), "orchestrator_id": self.orchestrator_id}
        return ProgressEvent(next(self._event_ids), EventType.MODEL, relayed)

    def download_changed(self, hive_id: str, model_ref: object) -> None:
        """A download of an `hf:` ref began or ended there: its repository changed (`in_use`, revisions)."""
        parsed = repo_id_of(model_ref) if isinstance(model_ref, str) else None
        if parsed is not None:
            self.changed(hive_id, parsed[0])

    def changed(self, hive_id: str, repo_id: str) -> None:
        """Ask the hive for the repository again (once more after a question in flight)."""
        if (pending := self._loading.get(hive_id)) is not None:
            pending.add(repo_id)
        elif (hive_id, repo_id) in self._asking:
            self._asking[hive_id, repo_id] = True
        elif (hive := self.registry.get(hive_id)) is not None:
            self._asking[hive_id, repo_id] = False
            self._spawn(self._refresh(hive, repo_id))

    async def _load(self, hive: HiveInfo) -> None:
        """The hive's whole list, asked for again with backoff (bounded) while it fails; until it comes the
        hive is among `unreachable_hives`, and after the last attempt until its stream connects again."""
        structlog.contextvars.bind_contextvars(correlation_id=f"models-{uuid.uuid4().hex[:16]}", hive_id=hive.hive_id)
        backoff = Backoff(self.retry_initial, self.retry_initial * 16)
        for attempt in range(1, _LOAD_ATTEMPTS + 1):
            try:
                body = HiveModels.model_validate(await self.hives.models(hive, self.time_limit))
                break
            except (ApiError, ValidationError) as exc:
                log.warning("hive_models_load_failed", attempt=attempt, error=str(exc)[:300])
            if attempt < _LOAD_ATTEMPTS:
                await asyncio.sleep(backoff.next())
        else:
            self._loading.pop(hive.hive_id, None)
            return
        self.inventory.load(hive.hive_id, body)
        self._stale.discard(hive.hive_id)
        log.info("hive_models_loaded", models=len(body.models), used=body.disk.used)
        for repo_id in sorted(self._loading.pop(hive.hive_id, set())):
            self.changed(hive.hive_id, repo_id)

    async def _ask(self, hive: HiveInfo, repo_id: str) -> None:
        """The repository's entry on the hive, now (a failure is logged: the next event or load mends it)."""
        try:
            answer = await self.hives.model(hive, repo_id, self.time_limit)
            self.inventory.put(hive.hive_id, repo_id, None if answer is None else ModelBody.model_validate(answer))
        except (ApiError, ValidationError) as exc:
            log.warning("hive_model_refresh_failed", hive_id=hive.hive_id, repo_id=repo_id, error=str(exc)[:300])

    async def _refresh(self, hive: HiveInfo, repo_id: str) -> None:
        try:
            while True:
                await self._ask(hive, repo_id)
                if not self._asking.get((hive.hive_id, repo_id)):
                    return
                self._asking[hive.hive_id, repo_id] = False
        finally:
            self._asking.pop((hive.hive_id, repo_id), None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    # -- the routes ------------------------------------------------------------------------

    def fleet(self) -> FleetModels:
        """`GET /v1/models`: every hive whose list is loaded, since its stream last connected, and that is not
        known to be down; the others are `unreachable_hives`."""
        known = self.registry.all()
        shown = [
            h.hive_id
            for h in known
            if h.health is not Health.UNHEALTHY and self.inventory.loaded(h.hive_id) and h.hive_id not in self._stale
        ]
        return self.inventory.fleet(shown, [h.hive_id for h in known if h.hive_id not in shown])

    async def change(
        self, repo_id: str, hives: str | None, method: str, suffix: str, params: dict[str, str]
    ) -> ModelResults:
        """One change of the model on its hives (`DELETE` the model, `PUT`/`DELETE` its pin): a result per hive."""
        chosen = target_hives(
            hives, (h.hive_id for h in self.registry.all()), self.inventory.holdings(repo_id), repo_id
        )
        targets = [h for hive_id in chosen if (h := self.registry.get(hive_id)) is not None]
        answers = await fan_out(
            targets, lambda h: self.hives.change_model(h, method, repo_id + suffix, params, self.time_limit), None
        )
        results: list[HiveModelResult] = []
        for hive in targets:
            answer = answers[hive.hive_id]
            if isinstance(answer, ApiError):
                reached = answer.code != "HIVE_UNREACHABLE"
                error = {"code": answer.code, "message": answer.message}
                results.append(
                    HiveModelResult(
                        hive_id=hive.hive_id, ok=False, status=answer.status if reached else None, error=error
                    )
                )
            else:
                results.append(HiveModelResult(hive_id=hive.hive_id, ok=True, status=answer.status_code))
        # what changed, asked for at once, so the next GET /v1/models shows it (the events confirm it)
        await asyncio.gather(*(self._ask(h, repo_id) for h, r in zip(targets, results, strict=True) if r.ok))
        failed = [r.hive_id for r in results if not r.ok]
        log.info(
            "fleet_model_changed", repo_id=repo_id, method=method, suffix=suffix, hives=chosen, failed=failed or None
        )
        return ModelResults(repo_id=repo_id, results=results)
