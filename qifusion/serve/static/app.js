// qifusion web page: microphone (AudioWorklet) or uploaded file -> 16 kHz int16 PCM -> WebSocket
// (WeNet runtime protocol, continuous decoding) -> live partial text, final text, and the accent only
// with its calibrated probability and the model's measured accent-ID accuracy (else a note saying why not).
"use strict";

const RATE = 16000;
const FRAME = 1600; // 100 ms per binary message
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let finals = [];
let mic = null; // {ws, ctx, media, src, node}

function wsUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const token = params.get("token"); // browsers cannot send an Authorization header on a WebSocket
  return `${proto}//${location.host}/` + (token ? `?token=${encodeURIComponent(token)}` : "");
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

function setBusy(busy) {
  $("mic-start").disabled = busy;
  $("file-send").disabled = busy;
  $("mic-stop").disabled = !busy || !mic;
}

function sentence(msg) {
  const nbest = JSON.parse(msg.nbest); // a JSON string inside the message, as in WeNet
  return nbest.length ? nbest[0].sentence : "";
}

function pct(x) {
  return `${(100 * x).toFixed(1)}%`;
}

function showAccent(msg) {
  const aid = msg.accent_id;
  // an empty segment (silence after an endpoint) says nothing about the accent: keep what speech said
  const shown = $("accent").textContent;
  if (!msg.accent && !sentence(msg) && shown !== "-" && shown !== "not reported") return;
  if (msg.accent && aid && aid.status === "ok") {
    $("accent").textContent = msg.accent;
    $("accent-prob").textContent =
      `(calibrated probability ${pct(msg.accent_prob)}; this model's accent-ID accuracy on dev: ` +
      `${pct(aid.accuracy)}, chance ${pct(aid.chance)})`;
    $("accent-note").textContent = "";
  } else {
    $("accent").textContent = "not reported";
    $("accent-prob").textContent = "";
    $("accent-note").textContent = aid ? aid.note : "";
  }
}

// The model this server runs and how well its accent ID works (from /health).
async function showModel() {
  try {
    const h = await (await fetch("health", { cache: "no-store" })).json();
    $("model-name").textContent = h.model || "(unnamed)";
    $("aid-note").textContent = h.accent_id ? h.accent_id.note : "";
  } catch (err) {
    $("model-name").textContent = "(unknown: /health did not answer)";
  }
}

function resetText() {
  finals = [];
  $("final").textContent = "";
  $("partial").textContent = "";
  $("accent").textContent = "-";
  $("accent-prob").textContent = "";
}

// Open a WebSocket and send "start"; resolves with the socket once the server is ready.
function openSession() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl());
    ws.binaryType = "arraybuffer";
    let ready = false;
    ws.onopen = () => ws.send(JSON.stringify({ signal: "start", nbest: 1, continuous_decoding: true }));
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.status !== "ok") {
        setStatus("error", `server: ${msg.message}`);
        return;
      }
      if (msg.type === "server_ready") {
        ready = true;
        resolve(ws);
      } else if (msg.type === "partial_result") {
        $("partial").textContent = sentence(msg);
        showAccent(msg);
      } else if (msg.type === "final_result") {
        const s = sentence(msg);
        if (s) finals.push(s);
        $("final").textContent = finals.join(" ");
        $("partial").textContent = "";
        showAccent(msg);
      } else if (msg.type === "speech_end") {
        setStatus("done", "done");
        setBusy(false);
        ws.close();
      }
    };
    ws.onclose = (e) => {
      if (!ready) reject(new Error(e.reason || "connection refused"));
      if ($("status").dataset.state !== "done" && $("status").dataset.state !== "error") {
        setStatus("error", `connection closed${e.reason ? ": " + e.reason : ""}`);
      }
      setBusy(false);
      mic = null;
    };
  });
}

function toPcm16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i];
    pcm[i] = Math.max(-32768, Math.min(32767, Math.round(s * 32768)));
  }
  return pcm.buffer;
}

async function startMic() {
  resetText();
  setStatus("connecting", "opening the microphone");
  setBusy(true);
  try {
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const ctx = new AudioContext();
    await ctx.audioWorklet.addModule("worklet.js");
    const src = ctx.createMediaStreamSource(media);
    const node = new AudioWorkletNode(ctx, "pcm16-sender", { numberOfInputs: 1, numberOfOutputs: 1 });
    const m = { ws: null, ctx, media, src, node, queue: [], onFlushed: null };
    mic = m;
    node.port.onmessage = (e) => {
      if (e.data instanceof ArrayBuffer) {
        if (m.ws && m.ws.readyState === WebSocket.OPEN) m.ws.send(e.data);
        else if (!m.ws) m.queue.push(e.data); // captured while the WebSocket opens
      } else if (e.data && e.data.flushed && m.onFlushed) {
        m.onFlushed();
      }
    };
    const mute = ctx.createGain();
    mute.gain.value = 0;
    src.connect(node).connect(mute).connect(ctx.destination);
    await ctx.resume();
    m.ws = await openSession();
    for (const buf of m.queue.splice(0)) m.ws.send(buf);
    setBusy(true);
    setStatus("recording", `recording (${ctx.sampleRate} Hz -> 16 kHz): speak now`);
  } catch (err) {
    setStatus("error", `microphone: ${err.message}`);
    mic = null;
    setBusy(false);
  }
}

async function stopMic() {
  if (!mic || !mic.ws) return;
  const m = mic;
  $("mic-stop").disabled = true;
  setStatus("finishing", "finishing");
  m.media.getTracks().forEach((t) => t.stop());
  m.src.disconnect();
  await new Promise((resolve) => {
    m.onFlushed = resolve;
    m.node.port.postMessage({ cmd: "flush" });
    setTimeout(resolve, 1000);
  });
  if (m.ws.readyState === WebSocket.OPEN) m.ws.send(JSON.stringify({ signal: "end" }));
  await m.ctx.close();
}

async function sendFile() {
  const file = $("file").files[0];
  if (!file) {
    setStatus("error", "choose an audio file first");
    return;
  }
  resetText();
  setBusy(true);
  setStatus("decoding", `decoding ${file.name}`);
  try {
    // decodeAudioData resamples to the context's rate: an offline context at 16 kHz does it for us
    const decoded = await new OfflineAudioContext(1, 1, RATE).decodeAudioData(await file.arrayBuffer());
    const mono = new Float32Array(decoded.length);
    for (let c = 0; c < decoded.numberOfChannels; c++) {
      const ch = decoded.getChannelData(c);
      for (let i = 0; i < mono.length; i++) mono[i] += ch[i] / decoded.numberOfChannels;
    }
    const ws = await openSession();
    setStatus("streaming", `streaming ${(mono.length / RATE).toFixed(1)} s of audio`);
    for (let i = 0; i < mono.length; i += FRAME) {
      ws.send(toPcm16(mono.subarray(i, i + FRAME)));
      while (ws.bufferedAmount > 1 << 20) await new Promise((r) => setTimeout(r, 10));
    }
    ws.send(JSON.stringify({ signal: "end" }));
    setStatus("finishing", "finishing");
  } catch (err) {
    setStatus("error", `file: ${err.message}`);
    setBusy(false);
  }
}

showModel();
$("mic-start").addEventListener("click", startMic);
$("mic-stop").addEventListener("click", stopMic);
$("file-send").addEventListener("click", sendFile);
