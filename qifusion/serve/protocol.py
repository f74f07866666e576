"""WeNet runtime WebSocket protocol: parsing client messages and building server messages.

The message shapes follow WeNet's runtime websocket server (``runtime/core/websocket``) so existing
WeNet clients work unchanged:

- client text ``{"signal": "start", "nbest": 1, "continuous_decoding": false}`` starts an utterance;
  the server answers ``{"status": "ok", "type": "server_ready"}``;
- client binary frames: 16-bit little-endian mono PCM at 16 kHz;
- server ``{"status": "ok", "type": "partial_result", "nbest": "<JSON string>"}`` while decoding and
  ``"final_result"`` at an endpoint (continuous decoding) or after ``{"signal": "end"}``, followed by
  ``{"status": "ok", "type": "speech_end"}``. ``nbest`` is a JSON *string* holding a list of
  ``{"sentence": ...}`` objects (finals add ``word_pieces`` with times in ms), exactly as WeNet does.
- errors: ``{"status": "failed", "message": ...}``.

Qifusion adds ``"accent"``, ``"accent_prob"`` (the running accent estimate, temperature-calibrated;
both null when the model's accent ID is not calibrated or not better than chance) and ``"accent_id"``
(``{"status", "accuracy", "chance", "note"}``: the model's measured dev accuracy) to every result
message; old clients ignore unknown keys. The start message may carry ``"hotwords"``: a list of words
or phrases (strings, or ``{"word": ..., "boost": ...}``) that bias this session's LM search (servers
started with an LM mode only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
BYTES_PER_SAMPLE = 2


class ProtocolError(ValueError):
    """A malformed or out-of-order client message; its text is sent back in a ``failed`` message."""


@dataclass(frozen=True)
class StartSignal:
    """``{"signal": "start", ...}``: ``nbest`` >= 1, ``continuous_decoding`` on/off."""

    nbest: int = 1
    continuous_decoding: bool = False
    hotwords: tuple[Any, ...] | None = None  # qifusion.lm.files.Hotword entries


@dataclass(frozen=True)
class EndSignal:
    """``{"signal": "end"}``: no more audio for this utterance."""


def parse_text_message(text: str) -> StartSignal | EndSignal:
    """Parse a client text frame; raises :class:`ProtocolError` with a message a client can act on."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ProtocolError(f"bad JSON in text message: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("text message must be a JSON object with a 'signal' key")
    signal = obj.get("signal")
    if signal is None:
        raise ProtocolError("text message has no 'signal' key (expected 'start' or 'end')")
    if signal == "start":
        nbest = obj.get("nbest", 1)
        if isinstance(nbest, bool) or not isinstance(nbest, int) or nbest < 1:
            raise ProtocolError(f"option 'nbest' must be a positive integer, got {nbest!r}")
        continuous = obj.get("continuous_decoding", False)
        if not isinstance(continuous, bool):
            raise ProtocolError(f"option 'continuous_decoding' must be true or false, got {continuous!r}")
        hotwords = None
        if "hotwords" in obj:
            from qifusion.errors import UserError
            from qifusion.lm.files import hotwords_from_json

            try:
                hotwords = tuple(hotwords_from_json(obj["hotwords"]))
            except UserError as e:
                raise ProtocolError(str(e)) from None
        return StartSignal(nbest=nbest, continuous_decoding=continuous, hotwords=hotwords)
    if signal == "end":
        return EndSignal()
    raise ProtocolError(f"unknown signal {signal!r} (expected 'start' or 'end')")


def pcm16_to_float(data: bytes) -> np.ndarray:
    """16-bit little-endian PCM bytes -> (N,) float32 samples in [-1, 1).

    Raises :class:`ProtocolError` for an odd number of bytes (not whole 16-bit samples).
    """
    if len(data) % BYTES_PER_SAMPLE:
        raise ProtocolError(f"binary frame of {len(data)} bytes is not whole 16-bit samples")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False)


def server_ready() -> str:
    """The answer to a valid ``start`` signal."""
    return _dumps({"status": "ok", "type": "server_ready"})


def speech_end() -> str:
    """Sent after the last ``final_result`` of an utterance ended by the client."""
    return _dumps({"status": "ok", "type": "speech_end"})


def failed(message: str) -> str:
    """An error message; the connection stays usable unless the server says it closes."""
    return _dumps({"status": "failed", "message": message})


def _word_pieces(words: list[Any]) -> list[dict[str, Any]]:
    """WeNet's ``word_pieces``: ``[{"word", "start", "end"}]`` with times in milliseconds."""
    return [{"word": w.word, "start": round(w.start * 1000), "end": round(w.end * 1000)} for w in words]


def result_message(sentences: list[str], *, final: bool, accent: str | None, accent_prob: float | None,
                   words: list[Any] | None = None, accent_id: dict[str, Any] | None = None) -> str:
    """A ``partial_result`` / ``final_result`` message.

    ``sentences``: the n-best texts, best first (usually one); ``words``: objects with ``word``,
    ``start``, ``end`` (seconds) for the best sentence, attached as ``word_pieces`` to finals.
    ``nbest`` is serialised to a JSON string, as WeNet does.
    """
    nbest: list[dict[str, Any]] = [{"sentence": s} for s in sentences]
    if final and words is not None and nbest:
        nbest[0]["word_pieces"] = _word_pieces(words)
    msg: dict[str, Any] = {
        "status": "ok",
        "type": "final_result" if final else "partial_result",
        "nbest": _dumps(nbest),
        "accent": accent,
        "accent_prob": None if accent_prob is None else round(float(accent_prob), 4),
    }
    if accent_id is not None:
        msg["accent_id"] = accent_id
    return _dumps(msg)


def parse_server_message(text: str) -> dict[str, Any]:
    """Client-side helper: decode a server message, with ``nbest`` turned into a list.

    Used by tests, the load benchmark and Python clients; ``msg["sentence"]`` holds the best text of a
    result message.
    """
    msg = json.loads(text)
    if isinstance(msg.get("nbest"), str):
        msg["nbest"] = json.loads(msg["nbest"])
        msg["sentence"] = msg["nbest"][0]["sentence"] if msg["nbest"] else ""
    return msg
