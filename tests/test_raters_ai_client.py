"""The AI-rater client against a fake chat-completions server on 127.0.0.1: the strict
App K parser, retries, cache, and the key never written anywhere."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from klsc_lib.analysis.raters import ChatRater, parse_answer, read_key, unblind, write_packet
from klsc_lib.analysis.raters.packets import SampleSet
from klsc_lib.analysis.raters.prompts import SYSTEM_PROMPT, USER_PROMPT

KEY = "sk-test-DO-NOT-LEAK-4f2a9c"


@pytest.mark.parametrize("text, expected", [
    ("concept: red digits\nscore: 3", ("red digits", 3)),
    ("Concept: Red digits\nSCORE: 4", ("Red digits", 4)),
    ("  concept :  red digits  \r\n\n  score:1 \n", ("red digits", 1)),
    ("CONCEPT:a: b\nscore :\t2", ("a: b", 2)),
])
def test_parser_accepts_app_k_format(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize("text", [
    None, "", "   \n ", "concept: red digits", "score: 3", "concept: red\nscore: 0", "concept: red\nscore: 5",
    "concept: red\nscore: 3.0", "concept: red\nscore: three", "concept: red\nscore: 3/4", "concept:\nscore: 3",
    "score: 3\nconcept: red", "concept: red\nscore: 3\nThe images show digits.", "Sure!\nconcept: red\nscore: 3",
    "**concept:** red\n**score:** 3", '{"concept": "red", "score": 3}', "concept: red score: 3",
])
def test_parser_rejects_everything_else(text):
    with pytest.raises(ValueError):
        parse_answer(text)


@given(st.text(max_size=60))
def test_parser_never_crashes_otherwise(text):
    try:
        concept, score = parse_answer(text)
    except ValueError:
        return
    assert score in (1, 2, 3, 4) and concept == concept.strip() and concept


class FakeServer:
    """Replies from a queue: ('ok', text) | ('status', code) | ('raw', bytes) | ('slow', seconds)."""

    def __init__(self):
        self.replies: list[tuple[str, object]] = []
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                kind, value = server.replies.pop(0) if server.replies else ("ok", "concept: x\nscore: 2")
                if kind == "slow":
                    time.sleep(value)
                    kind, value = "ok", "concept: late\nscore: 2"
                if kind == "status":
                    self.send_response(value)
                    self.end_headers()
                    return
                payload = value if kind == "raw" else json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": value}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def packet(tmp_path):
    gen = torch.Generator().manual_seed(1)
    sets = [SampleSet(f"u{i}", "EnergyDPS", torch.rand(4, 3, 4, 4, generator=gen) * 2 - 1) for i in range(6)]
    return write_packet(sets, tmp_path / "packet", tmp_path / "key.csv", seed=0, cell=8)


def _rater(server, tmp_path, **kw):
    return ChatRater(server.url, "fake-vlm", KEY, tmp_path / "cache", requests_per_minute=1e6, timeout_s=0.5,
                     max_retries=2, backoff_s=0.01, **kw)


def test_rate_packet_records_failures_and_caches(server, packet, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("KLSC_RATER_BASE_URL", server.url)
    monkeypatch.setenv("KLSC_RATER_MODEL", "fake-vlm")
    monkeypatch.setenv("KLSC_RATER_API_KEY", KEY)
    server.replies = [
        ("ok", "concept: red digits\nscore: 4"),
        ("ok", "concept: red digits\nscore: 5"),  # out of range -> parse failure
        ("raw", b"not json at all"),  # non-JSON -> failure
        ("status", 503), ("ok", " Concept: blue glyphs \n score: 2 "),  # retried, then parsed
        ("slow", 1.0), ("slow", 1.0), ("slow", 1.0),  # three timeouts -> failure after retries
        ("ok", ""),  # empty reply -> failure
    ]
    caplog.set_level(logging.DEBUG)
    with ChatRater.from_env(tmp_path / "cache", requests_per_minute=1e6, timeout_s=0.5, max_retries=2,
                            backoff_s=0.01) as rater:
        answers = rater.rate_packet(packet, tmp_path / "ai_sheet.csv", tmp_path / "ai_failures.csv")
    assert [a.score for a in answers] == [4, None, None, 2, None, None]
    assert [a.concept for a in answers if a.ok] == ["red digits", "blue glyphs"]
    failures = [a.failure for a in answers if not a.ok]
    assert failures[0].startswith("parse") and "score" in failures[0]
    assert "JSON" in failures[1] and "timeout" in failures[2] and failures[3] == "parse: empty reply"
    assert all(r["auth"] == f"Bearer {KEY}" and r["path"] == "/v1/chat/completions" for r in server.requests)
    body = server.requests[0]["body"]
    assert body["messages"][0]["content"] == SYSTEM_PROMPT
    assert body["messages"][1]["content"][0]["text"] == USER_PROMPT
    assert body["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    ratings = unblind(tmp_path / "ai_sheet.csv", packet.key_path, "GPT", "ai", allow_missing=True)
    key = read_key(packet.key_path)
    assert [(r.feature, r.score) for r in ratings] == [(key[packet.item_ids[0]].unit, 4),
                                                       (key[packet.item_ids[3]].unit, 2)]
    # the key is in no file and no log line
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.parent.name == "cache" for p in written)
    assert not any(KEY.encode() in p.read_bytes() for p in written)
    assert KEY not in caplog.text and "attempt" in caplog.text
    # a rerun is served from the cache for every reply that arrived, and sends only the failed transports
    n_before = len(server.requests)
    with _rater(server, tmp_path) as rater:
        again = rater.rate_packet(packet, tmp_path / "ai_sheet2.csv", tmp_path / "ai_failures2.csv")
    assert len(server.requests) - n_before == 2  # the JSON error and the timeout item, nothing else
    assert [a.reply for a in again][:2] == [a.reply for a in answers][:2]


def test_client_error_is_a_failure_not_a_crash(server, packet, tmp_path):
    server.replies = [("status", 401)]
    with _rater(server, tmp_path) as rater:
        answer = rater.rate("x", packet.grid_path(packet.item_ids[0]).read_bytes())
    assert not answer.ok and "401" in answer.failure and len(server.requests) == 1


def test_cache_key_depends_on_model_and_image(tmp_path):
    a = ChatRater("http://127.0.0.1:9", "m1", None, tmp_path)
    b = ChatRater("http://127.0.0.1:9", "m2", None, tmp_path)
    assert a.cache_key(b"png") == a.cache_key(b"png") != a.cache_key(b"png2")
    assert a.cache_key(b"png") != b.cache_key(b"png")


def test_from_env_names_missing_variables(monkeypatch, tmp_path):
    monkeypatch.delenv("KLSC_RATER_BASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="KLSC_RATER_BASE_URL"):
        ChatRater.from_env(tmp_path)
