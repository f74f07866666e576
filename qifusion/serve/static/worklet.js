// AudioWorklet processor: microphone audio at the context rate -> 16 kHz mono int16 PCM frames.
//
// Resampling is a windowed-sinc interpolator (Hann window, 16 taps each side, cut-off below the lower
// Nyquist rate, so downsampling from 44.1/48 kHz does not alias). Frames of 100 ms (1600 samples,
// 3200 bytes) are posted to the page as ArrayBuffers; a {cmd: "flush"} message posts what is left.
"use strict";

const TARGET_RATE = 16000;
const FRAME = 1600;

class SincResampler {
  constructor(inRate, outRate, halfTaps = 16) {
    this.step = inRate / outRate;
    this.half = halfTaps;
    this.cutoff = Math.min(1, outRate / inRate) * 0.94; // fraction of the input Nyquist rate
    this.buf = new Float32Array(halfTaps); // leading zeros: the first output is centred on sample 0
    this.t = halfTaps; // position (in buf) of the next output sample
  }

  kernel(x) {
    if (Math.abs(x) >= this.half) return 0;
    const c = this.cutoff;
    const sinc = x === 0 ? c : Math.sin(Math.PI * c * x) / (Math.PI * x);
    return sinc * (0.5 + 0.5 * Math.cos((Math.PI * x) / this.half));
  }

  process(input) {
    const buf = new Float32Array(this.buf.length + input.length);
    buf.set(this.buf);
    buf.set(input, this.buf.length);
    const out = [];
    while (this.t + this.half < buf.length) {
      const centre = Math.floor(this.t);
      let acc = 0;
      for (let k = centre - this.half + 1; k <= centre + this.half; k++) {
        if (k >= 0) acc += buf[k] * this.kernel(this.t - k);
      }
      out.push(acc);
      this.t += this.step;
    }
    const keepFrom = Math.max(0, Math.floor(this.t) - this.half);
    this.buf = buf.slice(keepFrom);
    this.t -= keepFrom;
    return out;
  }
}

class Pcm16Sender extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new SincResampler(sampleRate, TARGET_RATE);
    this.pending = [];
    this.port.onmessage = (e) => {
      if (e.data && e.data.cmd === "flush") {
        // push the resampler's look-ahead out with zeros, then send the rest
        this.push(this.resampler.process(new Float32Array(this.resampler.half * 2)));
        this.send(this.pending.length);
        this.port.postMessage({ flushed: true });
      }
    };
  }

  push(samples) {
    for (const s of samples) this.pending.push(s);
    while (this.pending.length >= FRAME) this.send(FRAME);
  }

  send(n) {
    if (n <= 0) return;
    const pcm = new Int16Array(n);
    for (let i = 0; i < n; i++) {
      const s = this.pending[i];
      pcm[i] = Math.max(-32768, Math.min(32767, Math.round(s * 32768)));
    }
    this.pending = this.pending.slice(n);
    this.port.postMessage(pcm.buffer, [pcm.buffer]);
  }

  process(inputs, outputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const n = input[0].length;
      const mono = new Float32Array(n);
      for (const ch of input) for (let i = 0; i < n; i++) mono[i] += ch[i] / input.length;
      this.push(this.resampler.process(mono));
    }
    for (const out of outputs) for (const ch of out) ch.fill(0); // silent output keeps the node pulled
    return true;
  }
}

registerProcessor("pcm16-sender", Pcm16Sender);
