"""AI raters (paper App K): the App K prompts sent to an OpenAI-compatible endpoint.

:class:`ChatRater` posts one grid per request to ``{base_url}/chat/completions``
(image as a ``data:`` URL) with the App K system and user prompts. The endpoint,
model and key come from environment variables (``KLSC_RATER_BASE_URL``,
``KLSC_RATER_MODEL``, ``KLSC_RATER_API_KEY``); the key is only ever placed in the
request header, never in a file, a log line or the cache. Transport errors, 429 and
5xx answers are retried with exponential backoff; requests are spaced by a rate
limit; every reply text is cached on disk keyed by (model, prompts, image hash), so
a rerun sends nothing. :func:`parse_answer` reads the two-line answer strictly:
anything else becomes a recorded failure, never a crash and never a default score.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from klsc_lib.analysis.raters.packets import SHEET_COLUMNS, Packet
from klsc_lib.analysis.raters.prompts import SYSTEM_PROMPT, USER_PROMPT
from klsc_lib.runtime import atomic_write_text

log = logging.getLogger(__name__)
ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = "KLSC_RATER_BASE_URL", "KLSC_RATER_MODEL", "KLSC_RATER_API_KEY"
_CONCEPT = re.compile(r"^concept\s*:\s*(?P<text>\S.*?)\s*$", re.IGNORECASE)
_SCORE = re.compile(r"^score\s*:\s*(?P<score>[1-4])\s*$", re.IGNORECASE)
FAILURE_COLUMNS = ("item_id", "failure", "reply")


@dataclass(frozen=True)
class Answer:
    """One AI rating: ``score``/``concept`` when parsed, else ``failure`` says why."""

    item_id: str
    concept: str | None
    score: int | None
    failure: str | None
    reply: str | None  # the raw reply text (None when no reply came)

    @property
    def ok(self) -> bool:
        return self.failure is None


def parse_answer(text: str | None) -> tuple[str, int]:
    """``(concept, score)`` from an App K answer, or ``ValueError`` saying what is wrong.

    Accepted: exactly two non-blank lines, ``concept: <text>`` then ``score: <1-4>``, in
    any letter case, with any whitespace around lines, keys and values.
    """
    if text is None or not text.strip():
        raise ValueError("empty reply")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) != 2:
        raise ValueError(f"expected 2 lines (concept, score), got {len(lines)}")
    concept, score = _CONCEPT.match(lines[0]), _SCORE.match(lines[1])
    if concept is None:
        raise ValueError(f"first line is not 'concept: <short sentence>': {lines[0][:80]!r}")
    if score is None:
        raise ValueError(f"second line is not 'score: <1-4 integer>': {lines[1][:80]!r}")
    return concept["text"], int(score["score"])


class ChatRater:
    """An OpenAI-compatible chat-completions endpoint as an App K rater."""

    def __init__(self, base_url: str, model: str, api_key: str | None, cache_dir: str | Path, *,
                 requests_per_minute: float = 30.0, timeout_s: float = 60.0, max_retries: int = 4,
                 backoff_s: float = 2.0, transport: httpx.BaseTransport | None = None):
        if not base_url or not model:
            raise ValueError("a base URL and a model name are needed")
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.min_interval_s = 60.0 / requests_per_minute
        self.max_retries, self.backoff_s = max_retries, backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s,
                                    transport=transport)
        self._last_request = -float("inf")

    @classmethod
    def from_env(cls, cache_dir: str | Path, **kwargs) -> "ChatRater":
        """Endpoint, model and key from ``KLSC_RATER_BASE_URL``, ``KLSC_RATER_MODEL``, ``KLSC_RATER_API_KEY``."""
        missing = [v for v in (ENV_BASE_URL, ENV_MODEL) if not os.environ.get(v)]
        if missing:
            raise RuntimeError(f"set {missing} (and {ENV_API_KEY} if the endpoint needs a key) to run an AI rater")
        return cls(os.environ[ENV_BASE_URL], os.environ[ENV_MODEL], os.environ.get(ENV_API_KEY), cache_dir, **kwargs)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "ChatRater":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cache_key(self, png: bytes) -> str:
        blob = json.dumps([self.model, SYSTEM_PROMPT, USER_PROMPT, hashlib.sha256(png).hexdigest()])
        return hashlib.sha256(blob.encode()).hexdigest()

    def _request(self, png: bytes) -> str:
        """The reply text; raises ``RuntimeError`` once the retries are spent."""
        image_url = "data:image/png;base64," + base64.b64encode(png).decode()
        body = {"model": self.model, "temperature": 0, "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [{"type": "text", "text": USER_PROMPT},
                                         {"type": "image_url", "image_url": {"url": image_url}}]}]}
        problem = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            time.sleep(max(0.0, self._last_request + self.min_interval_s - time.monotonic()))
            self._last_request = time.monotonic()
            try:
                response = self._client.post("/chat/completions", json=body)
            except httpx.TimeoutException:
                problem = "timeout"
            except httpx.TransportError as err:
                problem = f"transport error {type(err).__name__}"
            else:
                if response.status_code == 429 or response.status_code >= 500:
                    problem = f"HTTP {response.status_code}"
                elif response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code} (not retried)")
                else:
                    try:
                        content = response.json()["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise RuntimeError("reply is not a chat-completions JSON object") from None
                    if not isinstance(content, str):
                        raise RuntimeError("reply content is not text")
                    return content
            log.warning("rater request attempt %d/%d failed: %s", attempt + 1, self.max_retries + 1, problem)
        raise RuntimeError(f"{problem} after {self.max_retries + 1} attempts")

    def rate(self, item_id: str, png: bytes) -> Answer:
        """Rate one grid; cached replies are reused, failures are returned, not raised."""
        cached = self.cache_dir / f"{self.cache_key(png)}.json"
        if cached.exists():
            reply = json.loads(cached.read_text())["reply"]
        else:
            try:
                reply = self._request(png)
            except RuntimeError as err:
                return Answer(item_id, None, None, str(err), None)
            atomic_write_text(cached, json.dumps({"model": self.model, "reply": reply}) + "\n")
        try:
            concept, score = parse_answer(reply)
        except ValueError as err:
            return Answer(item_id, None, None, f"parse: {err}", reply)
        return Answer(item_id, concept, score, None, reply)

    def rate_packet(self, packet: Packet, sheet_path: str | Path, failures_path: str | Path) -> list[Answer]:
        """Rate every grid of ``packet``; write the parsed answers as a rater sheet and
        the failures (item, reason, raw reply) beside it."""
        answers = [self.rate(i, packet.grid_path(i).read_bytes())
                   for i in tqdm(packet.item_ids, desc=f"AI rater {self.model}", unit="grid")]
        sheet, failures = io.StringIO(), io.StringIO()
        csv.writer(sheet, lineterminator="\n").writerows(
            [SHEET_COLUMNS, *[(a.item_id, a.concept, a.score) for a in answers if a.ok]])
        csv.writer(failures, lineterminator="\n").writerows(
            [FAILURE_COLUMNS, *[(a.item_id, a.failure, a.reply or "") for a in answers if not a.ok]])
        atomic_write_text(sheet_path, sheet.getvalue())
        atomic_write_text(failures_path, failures.getvalue())
        return answers
