"""``qifusion serve``: WeNet-protocol WebSocket server, health endpoint and the web page, one process.

Built on ``websockets``' asyncio server. ``process_request`` answers plain HTTP GETs (the page under
``static/``, ``/health``) and checks the bearer token of WebSocket upgrades; each connection runs
:meth:`App._handle` (protocol in :mod:`.protocol`); all streams are decoded by one
:class:`~qifusion.serve.scheduler.DecodeScheduler` in a worker thread.

Start in-process (tests, benchmarks)::

    with ServerThread(ServerConfig(port=0), recognizer=rec) as srv:
        print(srv.url)           # ws://127.0.0.1:PORT/
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from qifusion.decode.options import DEFAULT_CHUNK, DEFAULT_MODE
from qifusion.errors import UserError
from qifusion.eval.calibration import AccentView
from qifusion.serve import protocol
from qifusion.serve.protocol import EndSignal, ProtocolError, StartSignal
from qifusion.serve.scheduler import DecodeScheduler
from qifusion.serve.session import Outgoing, Session

log = logging.getLogger("qifusion.serve")

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js",
                "/worklet.js": "worklet.js"}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
CLOSE_TRY_AGAIN = 1013  # RFC 6455 "try again later"


@dataclass
class ServerConfig:
    """Server options; every limit is configurable (``qifusion serve --help``)."""

    model_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 10086  # 0 = any free port (tests)
    backend: str = "torch"
    chunk_size: int = DEFAULT_CHUNK
    left_chunks: int = -1
    mode: str = DEFAULT_MODE
    max_sessions: int = 32  # concurrent WebSocket sessions; extra clients get `failed` and a close
    max_message_bytes: int = 1 << 20  # largest client frame (1 MiB = 32 s of PCM)
    max_utterance_s: float = 300.0  # audio per utterance (since start or the last final)
    idle_timeout_s: float = 30.0  # close a session that sends nothing for this long
    token: str | None = None  # require `Authorization: Bearer TOKEN` (or `?token=TOKEN`)
    max_batch: int = 64  # most streams per decode_streams call
    lm: str | None = None  # LM dir for the LM modes (default <model dir>/lm)
    lm_options: Any = None  # qifusion.decode.options.LmOptions (None: defaults)
    hotwords: tuple[Any, ...] | None = None  # server-wide hotwords (a start message's replace them)

    def __post_init__(self) -> None:
        for key in ("max_sessions", "max_message_bytes", "max_batch", "chunk_size"):
            if int(getattr(self, key)) <= 0:
                raise UserError(f"serve option '{key}' must be positive, got {getattr(self, key)}")
        for key in ("max_utterance_s", "idle_timeout_s"):
            if float(getattr(self, key)) <= 0:
                raise UserError(f"serve option '{key}' must be positive, got {getattr(self, key)}")
        if not 0 <= self.port < 65536:
            raise UserError(f"serve option 'port' must be in 0..65535, got {self.port}")


def load_recognizer(config: ServerConfig) -> Any:
    """The streaming Recognizer of ``config.model_dir`` (the only way the server reaches the model)."""
    from qifusion.decode.recognizer import Recognizer

    if config.model_dir is None or not Path(config.model_dir).is_dir():
        raise UserError(f"model dir not found: {config.model_dir}")
    return Recognizer.from_model_dir(config.model_dir, chunk_size=config.chunk_size,
                                     left_chunks=config.left_chunks, mode=config.mode, backend=config.backend,
                                     chunk_threads=None,  # batches of many sessions: the process's threads
                                     **_lm_fields(config))


def _lm_fields(config: ServerConfig) -> dict[str, Any]:
    """Recognizer options of the LM modes that ``config`` sets."""
    out: dict[str, Any] = {"lm": config.lm, "hotwords": config.hotwords}
    if config.lm_options is not None:
        out["lm_options"] = config.lm_options
    return out


class App:
    """One server: sessions, scheduler, HTTP routes and the WebSocket handler."""

    def __init__(self, config: ServerConfig, recognizer: Any) -> None:
        self.config = config
        self.recognizer = recognizer
        self.sessions: set[Session] = set()
        self.started_at = time.monotonic()
        self.totals = {"sessions": 0, "audio_s": 0.0, "compute_s": 0.0}
        self.scheduler: DecodeScheduler | None = None
        self.accent_view = AccentView.for_model_dir(config.model_dir)

    # ---- HTTP --------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """The ``/health`` JSON body."""
        return {
            "status": "ok",
            "sessions": len(self.sessions),
            "max_sessions": self.config.max_sessions,
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "sessions_total": self.totals["sessions"],
            "audio_s_total": round(self.totals["audio_s"], 3),
            "compute_s_total": round(self.totals["compute_s"], 3),
            "backend": self.config.backend,
            "chunk_size": self.config.chunk_size,
            "model": _model_name(self.config.model_dir),
            "accent_id": self.accent_view.summary(),
        }

    def _authorized(self, request: Request, query: str) -> bool:
        token = self.config.token
        if not token:
            return True
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if given is None:  # browsers cannot set headers on a WebSocket: allow ?token=
            given = (parse_qs(query).get("token") or [None])[0]
        return given is not None and hmac.compare_digest(given.encode(), token.encode())

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Plain GETs get the page or ``/health``; WebSocket upgrades need the token (when set)."""
        path, _, query = request.path.partition("?")
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if not upgrade:
            if path == "/health":
                return _response(200, "OK", json.dumps(self.health()).encode(), "application/json")
            if path in STATIC_FILES:
                file = STATIC_DIR / STATIC_FILES[path]
                return _response(200, "OK", file.read_bytes(), CONTENT_TYPES[file.suffix])
            return _response(404, "Not Found", b"not found\n", "text/plain")
        if not self._authorized(request, query):
            log.info("rejected a connection without a valid token from %s", connection.remote_address)
            resp = _response(401, "Unauthorized", b"missing or wrong bearer token\n", "text/plain")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        if path != "/":
            return _response(404, "Not Found", b"the WebSocket endpoint is /\n", "text/plain")
        return None

    # ---- WebSocket ----------------------------------------------------------------------------
    async def handle(self, ws: ServerConnection) -> None:
        """One client connection: admission, receive loop, clean-up (also when the client vanishes)."""
        assert self.scheduler is not None
        cfg = self.config
        if len(self.sessions) >= cfg.max_sessions:
            msg = f"server busy: all {cfg.max_sessions} sessions are in use, try again later"
            with contextlib.suppress(ConnectionClosed):
                await ws.send(protocol.failed(msg))
                await ws.close(CLOSE_TRY_AGAIN, "server busy")
            return
        peer = ws.remote_address
        session = Session(peer=f"{peer[0]}:{peer[1]}" if peer else "?")
        self.sessions.add(session)
        self.totals["sessions"] += 1
        sender = asyncio.create_task(self._send_loop(ws, session))
        reason = "client closed"
        try:
            reason = await self._receive_loop(ws, session, sender)
        except ConnectionClosed:
            reason = "client closed" if session.done else "client vanished mid-stream"
        finally:
            self.scheduler.remove(session)
            self.sessions.discard(session)
            sender.cancel()
            self.totals["audio_s"] += session.audio_s
            self.totals["compute_s"] += session.compute_s
            log.info("%s; %s", session.summary(), reason)

    async def _send_loop(self, ws: ServerConnection, session: Session) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                out = await session.outbox.get()
                await ws.send(out.text)
                if out.close:
                    await ws.close(1000, out.reason)
                    return

    async def _receive_loop(self, ws: ServerConnection, session: Session, sender: asyncio.Task[None]) -> str:
        cfg = self.config
        while True:
            timeout = None if session.end_requested else cfg.idle_timeout_s
            try:
                message = await asyncio.wait_for(ws.recv(), timeout)
            except TimeoutError:
                session.outbox.put_nowait(Outgoing(
                    protocol.failed(f"idle timeout: no message for {cfg.idle_timeout_s:g} s, closing"),
                    close=True, reason="idle timeout"))
                await sender
                return "idle timeout"
            try:
                if isinstance(message, str):
                    await self._on_text(session, protocol.parse_text_message(message))
                else:
                    self._on_audio(session, message)
            except ProtocolError as e:
                session.outbox.put_nowait(Outgoing(protocol.failed(str(e))))

    async def _on_text(self, session: Session, signal_: StartSignal | EndSignal) -> None:
        assert self.scheduler is not None
        if isinstance(signal_, StartSignal):
            if session.stream is not None:
                raise ProtocolError("already started: send audio, then {\"signal\": \"end\"}")
            session.continuous = signal_.continuous_decoding
            session.nbest = signal_.nbest
            try:
                session.stream = await self.scheduler.create_stream(signal_.hotwords)
            except UserError as e:  # e.g. hotwords without an LM mode: this session only
                raise ProtocolError(str(e)) from None
            self.scheduler.add(session)
            session.outbox.put_nowait(Outgoing(protocol.server_ready()))
            return
        if session.stream is None:
            raise ProtocolError("end before start: send {\"signal\": \"start\"} first")
        if not session.end_requested:
            session.end_requested = True
            self.scheduler.notify()

    def _on_audio(self, session: Session, data: bytes) -> None:
        assert self.scheduler is not None
        if session.stream is None:
            raise ProtocolError("audio before start: send {\"signal\": \"start\"} first")
        if session.end_requested:
            if session.over_limit:
                return  # the client was told once; it may still be streaming
            raise ProtocolError("audio after end: the utterance is finished")
        x = protocol.pcm16_to_float(data)
        limit = int(self.config.max_utterance_s * protocol.SAMPLE_RATE)
        room = limit - session.samples_since_final
        over = x.shape[0] > room
        x = x[: max(room, 0)]
        if x.shape[0]:
            session.pending_audio.append(x)
            session.samples_in += x.shape[0]
            session.samples_since_final += x.shape[0]
        if over:
            # the client still gets the final result of the audio that was kept
            session.end_requested = session.over_limit = True
            session.outbox.put_nowait(Outgoing(protocol.failed(
                f"utterance longer than max_utterance_s={self.config.max_utterance_s:g} s: "
                "later audio is dropped and the utterance is ended")))
        self.scheduler.notify()

    # ---- lifecycle ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        """Serve until the context exits; yields the bound port."""
        self.scheduler = DecodeScheduler(self.recognizer, max_batch=self.config.max_batch,
                                         accent_view=self.accent_view)
        task = asyncio.create_task(self.scheduler.run())
        cfg = self.config
        try:
            async with ws_serve(self.handle, cfg.host, cfg.port, process_request=self.process_request,
                                max_size=cfg.max_message_bytes, ping_interval=20, ping_timeout=20) as server:
                port = next(iter(server.sockets)).getsockname()[1]
                yield port
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _model_name(model_dir: Path | None) -> str | None:
    """``accents-en-qifusion`` for a model dir, ``accents-en-qifusion/onnx`` for its export dir."""
    if model_dir is None:
        return None
    p = Path(model_dir).resolve()
    return f"{p.parent.name}/{p.name}" if p.name in ("onnx", "int8") else p.name


def _response(status: int, reason: str, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store")])
    return Response(status, reason, headers, body)


class ServerThread:
    """Run an :class:`App` in a background thread with its own event loop (tests, benchmarks)."""

    def __init__(self, config: ServerConfig, *, recognizer: Any) -> None:
        self.app = App(config, recognizer)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="qifusion-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://{self.app.config.host}:{self.port}/"

    @property
    def http_url(self) -> str:
        return f"http://{self.app.config.host}:{self.port}/"

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                async with self.app.running() as port:
                    self.port = port
                    self._ready.set()
                    await self._stop.wait()
            except BaseException as e:
                self._error = e
                self._ready.set()

        self._loop.run_until_complete(main())
        self._loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(timeout=60)
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the server loop and return its result (read sessions safely)."""
        async def wrap() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout=30)

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(*, model_dir: Path, host: str = "127.0.0.1", port: int = 10086, backend: str = "torch",
          chunk_size: int = DEFAULT_CHUNK, max_sessions: int = 32, token: str | None = None,
          **limits: Any) -> None:
    """Load the model dir and serve until SIGINT/SIGTERM. ``limits``: other :class:`ServerConfig` fields."""
    config = ServerConfig(model_dir=Path(model_dir), host=host, port=port, backend=backend,
                          chunk_size=chunk_size, max_sessions=max_sessions, token=token, **limits)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    recognizer = load_recognizer(config)
    asyncio.run(_serve_forever(App(config, recognizer)))


async def _serve_forever(app: App) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with app.running() as port:
        host = app.config.host
        log.info("serving %s on ws://%s:%d/ (web page http://%s:%d/, health /health)%s",
                 app.config.model_dir, host, port, host, port, ", token required" if app.config.token else "")
        await stop.wait()
    log.info("stopped")
