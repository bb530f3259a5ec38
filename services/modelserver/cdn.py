"""The test hub's CDN: a second host that serves LFS blobs by signed, expiring URL, as cdn-lfs/S3 do.

Stdlib only. The hub `sign`s a URL ``/repos/{aa}/{bb}/{sha256}?response-content-disposition=...
&Expires=<unix>&Signature=<hmac>&Key-Pair-Id=...`` and redirects to it; `Cdn` answers it:

- a bad or missing signature: 403, an expired one (now > Expires): 403, both with an S3/CloudFront-like
  XML body (``<Error><Code>AccessDenied</Code>...``); an unknown blob: 404 ``NoSuchKey``;
- the blob with its own ``ETag``: its Xet hash as the real Xet-backed CDN sends it, 64 hex digits
  that are NOT the sha256 (a client must take the sha256 from the hub's ``X-Linked-Etag``);
  ``Accept-Ranges``, single ``bytes=`` ranges (206/416) and If-Range;
- blobs larger than `max_unranged_bytes` (the real CloudFront limit is 50 GB; tiny in tests) refuse with
  400 ``InvalidRequest`` any answer longer than the limit (a plain GET or HEAD, a range whose If-Range
  failed, a long range) and every open-ended range (``bytes=N-``), as CloudFront does for objects
  above 50 GB: a client must ask bounded ranges;
- every request is recorded (`records()`, `total_bytes_sent()`); `advance_clock` ages all URLs;
- `uplink` (an `Uplink`, unlimited unless given): one byte rate shared by every body the CDN sends,
  over all its connections; the `Hub` hands its CDN the uplink its own answers draw from too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from urllib.parse import parse_qs, quote

from services.modelserver.answer import Answer, file_answer
from services.modelserver.hub_repo import HubFile
from services.modelserver.loopback import LoopbackServer

CLOUDFRONT_MAX_BYTES = 50 * 1000 * 1000 * 1000
KEY_PAIR_ID = "K3RPWS32NSSJCE"
_PATH_RE = re.compile(r"/repos/[0-9a-f]{2}/[0-9a-f]{2}/(?P<sha>[0-9a-f]{64})")
_OPEN_RANGE_RE = re.compile(r"\s*bytes=\d+-\s*")


class Uplink:
    """A total byte rate shared by every connection that sends through it: a token bucket, thread-safe.

    Tokens (bytes) accrue at `rate_bps` up to `burst`. `reserve(n)` books `n` bytes at once and says how
    many seconds the caller must wait before sending them; the balance may go negative, so bookings
    queue in the order they were made and, whatever the number of connections, the bytes released by
    time t never exceed ``burst + rate_bps * t``. `take(n)` books and sleeps. `rate_bps` None: no cap
    (nothing is waited). `taken` counts every byte booked. `chunk` is how much a sender books at a time.
    """

    def __init__(
        self,
        rate_bps: float | None = None,
        burst: int = 256 * 1024,
        chunk: int = 128 * 1024,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if burst < 1 or chunk < 1:
            raise ValueError("burst and chunk must be at least one byte")
        self.burst, self.chunk = burst, chunk
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._rate: float | None = None
        self._tokens = float(burst)
        self._last = clock()
        self.taken = 0
        self.set_rate(rate_bps)

    @property
    def rate_bps(self) -> float | None:
        return self._rate

    def set_rate(self, rate_bps: float | None) -> None:
        """A new cap (None: none) from now on; the bucket starts full again."""
        if rate_bps is not None and rate_bps <= 0:
            raise ValueError("rate_bps must be positive (None for no cap)")
        with self._lock:
            self._rate, self._tokens, self._last = rate_bps, float(self.burst), self._clock()

    def reserve(self, n: int) -> float:
        """Book `n` bytes; the seconds to wait before sending them (0.0 when there are tokens, or no cap)."""
        with self._lock:
            self.taken += n
            if self._rate is None:
                return 0.0
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self._rate)
            self._last = now
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def take(self, n: int) -> None:
        wait = self.reserve(n)
        if wait > 0:
            self._sleep(wait)


def _xml_error(status: int, code: str, message: str) -> Answer:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId></Error>"
    ).encode()
    return Answer.of(status, {"Content-Type": "application/xml", "X-Cache": "Error from cloudfront"}, body)


def cdn_etag(f: HubFile) -> str:
    """A stand-in for the blob's Xet hash: 64 hex digits, derived from the sha256 but not it."""
    return f'"{hashlib.sha256(b"xet:" + f.sha256.encode()).hexdigest()}"'


class Cdn(LoopbackServer):
    server_header = "AmazonS3"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_unranged_bytes: int = CLOUDFRONT_MAX_BYTES,
        uplink: Uplink | None = None,
    ) -> None:
        super().__init__(host, port)
        self.max_unranged_bytes = max_unranged_bytes
        self.uplink = uplink or Uplink()
        self._blobs: dict[str, HubFile] = {}
        self._secret = secrets.token_bytes(16)
        self._clock_offset = 0.0
        self._blob_lock = threading.Lock()

    def add_blob(self, f: HubFile) -> None:
        with self._blob_lock:
            self._blobs[f.sha256] = f

    def now(self) -> float:
        return time.time() + self._clock_offset

    def advance_clock(self, secs: float) -> None:
        """Make the CDN's clock run `secs` ahead: URLs signed before now may have expired."""
        self._clock_offset += secs

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, f: HubFile, ttl: float, filename: str) -> str:
        """An absolute URL for `f`'s blob, valid for `ttl` seconds from now (negative: already expired)."""
        path = f"/repos/{f.sha256[:2]}/{f.sha256[2:4]}/{f.sha256}"
        expires = int(self.now() + ttl)
        disposition = quote(f'inline; filename="{filename.rsplit("/", 1)[-1]}";', safe="")
        return (
            f"{self.url}{path}?response-content-disposition={disposition}&Expires={expires}"
            f"&Signature={self._signature(path, expires)}&Key-Pair-Id={KEY_PAIR_ID}"
        )

    def answer(self, method: str, raw_path: str, query: str, headers: dict[str, str], client: str) -> Answer:
        params = {k: v[0] for k, v in parse_qs(query).items()}
        try:
            expires = int(params.get("Expires", ""))
        except ValueError:
            return _xml_error(403, "MissingKey", "Missing Key-Pair-Id query parameter or cookie value")
        if not hmac.compare_digest(params.get("Signature", ""), self._signature(raw_path, expires)):
            return _xml_error(403, "AccessDenied", "Access denied")
        if self.now() > expires:
            return _xml_error(403, "AccessDenied", "Request has expired")
        m = _PATH_RE.fullmatch(raw_path)
        with self._blob_lock:
            f = self._blobs.get(m["sha"]) if m else None
        if f is None:
            return _xml_error(404, "NoSuchKey", "The specified key does not exist.")
        extra = {"Last-Modified": "Thu, 01 Feb 2024 00:00:00 GMT", "X-Cache": "Miss from cloudfront"}
        answer = file_answer(f.size, cdn_etag(f), headers, extra, data=f.data or b"", file=f.disk)
        open_ended = _OPEN_RANGE_RE.fullmatch(headers.get("range", "")) is not None
        too_long = answer.status in (200, 206) and answer.stop - answer.start > self.max_unranged_bytes
        if f.size > self.max_unranged_bytes and (open_ended or too_long):
            return _xml_error(400, "InvalidRequest", "The object is too large: request it in bounded byte ranges")
        return answer
