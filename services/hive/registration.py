"""Self-registration: a hive with HIVE_QUEEN_URL announces itself to the queen and keeps doing so.

POST {queen}/v1/hives {"hive_id", "url"} at start-up, retrying with backoff while the queen is
down, then again every `heartbeat_secs`, so a restarted queen learns of this hive within one beat.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import structlog

from services.hive.settings import HiveSettings
from shared.backoff import Backoff

__all__ = ["register_forever"]

log = structlog.get_logger()

FIRST_RETRY_SECS = 0.25
REQUEST_TIMEOUT_SECS = 5.0


async def register_forever(settings: HiveSettings, client: httpx.AsyncClient) -> None:
    """Run until cancelled. Never raises on a queen failure: logs it and tries again."""
    if not settings.queen_url:
        return
    url = settings.queen_url.rstrip("/") + "/v1/hives"
    body = {"hive_id": settings.id, "url": settings.advertised_url}
    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    backoff = Backoff(min(FIRST_RETRY_SECS, settings.heartbeat_secs), settings.heartbeat_secs, jitter=0.1)
    registered = False
    failing = False
    while True:
        headers["X-Correlation-Id"] = uuid.uuid4().hex
        try:
            response = await client.post(url, json=body, headers=headers, timeout=REQUEST_TIMEOUT_SECS)
            ok = response.is_success
            problem = f"queen answered {response.status_code}"
        except httpx.HTTPError as exc:
            ok, problem = False, f"{type(exc).__name__}: {exc}"
        if ok:
            if not registered or failing:
                log.info("registered_with_queen", queen_url=settings.queen_url, url=body["url"])
            registered, failing = True, False
            backoff.reset()
            delay = settings.heartbeat_secs
        else:
            if not failing:
                log.warning("queen_registration_failed", queen_url=settings.queen_url, error=problem)
            failing = True
            delay = backoff.next()
        await asyncio.sleep(delay)
