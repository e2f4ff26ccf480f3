// Microphone -> 8 kHz G.711 mu-law frames, for the softphone.
//
// Loaded twice: as an AudioWorklet module (registers the "mulaw-capture" processor, which runs on
// the audio thread) and as an ordinary ES module by softphone.js (the ScriptProcessor fallback and
// the decoder for playback). So nothing here may touch a global that only one of them has.
//
// The codec is G.711 exactly as CPython's audioop implements it (st_14linear2ulaw /
// st_ulaw2linear16), the same tables the gateway builds in audio/mulaw.py, so the browser and the
// server agree byte for byte.

export const TELEPHONE_RATE = 8000;
export const FRAME_SAMPLES = 160; // 20 ms at 8 kHz: the frame size Twilio sends
const CUTOFF_HZ = 3600; // telephone band; below the 4 kHz Nyquist limit of the 8 kHz output
const SEG_UEND = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];

function encodeSample(value) {
  let pcm = value >> 2; // audioop works on the top 14 bits
  let mask = 0xff;
  if (pcm < 0) {
    pcm = -pcm;
    mask = 0x7f;
  }
  if (pcm > 32635) pcm = 32635;
  pcm += 0x84 >> 2;
  let seg = 0;
  while (seg < 8 && pcm > SEG_UEND[seg]) seg++;
  if (seg >= 8) return 0x7f ^ mask;
  return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0f)) ^ mask;
}

// Index: the int16 sample's 16-bit pattern (value & 0xffff).
export const ENCODE_TABLE = new Uint8Array(65536);
for (let i = 0; i < 65536; i++) ENCODE_TABLE[i] = encodeSample(i >= 32768 ? i - 65536 : i);

// Mu-law code -> int16 value.
export const DECODE_TABLE = new Int16Array(256);
for (let i = 0; i < 256; i++) {
  const u = ~i & 0xff;
  let t = ((u & 0x0f) << 3) + 0x84;
  t <<= (u & 0x70) >> 4;
  DECODE_TABLE[i] = u & 0x80 ? 0x84 - t : t - 0x84;
}

export function floatToMulaw(x) {
  let s = Math.round(x * 32768);
  if (s > 32767) s = 32767;
  else if (s < -32768) s = -32768;
  return ENCODE_TABLE[s & 0xffff];
}

// A windowed-sinc low-pass at the input rate (Blackman window), normalised to unity gain.
function lowpass(rate, cutoff, halfTaps) {
  const n = 2 * halfTaps + 1;
  const taps = new Float32Array(n);
  const fc = cutoff / rate;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const k = i - halfTaps;
    const sinc = k === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * k) / (Math.PI * k);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (n - 1));
    taps[i] = sinc * w;
    sum += taps[i];
  }
  for (let i = 0; i < n; i++) taps[i] /= sum;
  return taps;
}

// Any input rate (44.1, 48, 96 kHz...) down to 8 kHz: low-pass at the input rate, then read the
// filtered signal at 8 kHz instants by linear interpolation (only the samples needed are filtered).
export class MulawEncoder {
  constructor(inputRate, frameSamples = FRAME_SAMPLES) {
    this.step = inputRate / TELEPHONE_RATE;
    this.half = Math.max(8, Math.ceil(this.step * 8));
    this.taps = lowpass(inputRate, Math.min(CUTOFF_HZ, inputRate / 2.2), this.half);
    this.buf = new Float32Array(0);
    this.pos = this.half; // next output instant, in input samples from buf[0]
    this.frame = new Uint8Array(frameSamples);
    this.fill = 0;
    this.sumSquares = 0; // level of the frame being filled, for the page's meter
  }

  filtered(i) {
    const taps = this.taps;
    const buf = this.buf;
    const start = i - this.half;
    let acc = 0;
    for (let k = 0; k < taps.length; k++) acc += taps[k] * buf[start + k];
    return acc;
  }

  // Feed input samples; returns the complete frames ([{frame: Uint8Array, rms: number}]).
  push(input) {
    const joined = new Float32Array(this.buf.length + input.length);
    joined.set(this.buf);
    joined.set(input, this.buf.length);
    this.buf = joined;
    const out = [];
    while (Math.floor(this.pos) + 1 + this.half < this.buf.length) {
      const i = Math.floor(this.pos);
      const f = this.pos - i;
      const a = this.filtered(i);
      const y = f === 0 ? a : a + (this.filtered(i + 1) - a) * f;
      this.frame[this.fill++] = floatToMulaw(y);
      this.sumSquares += y * y;
      if (this.fill === this.frame.length) {
        out.push({ frame: this.frame.slice(), rms: Math.sqrt(this.sumSquares / this.frame.length) });
        this.fill = 0;
        this.sumSquares = 0;
      }
      this.pos += this.step;
    }
    const drop = Math.floor(this.pos) - this.half;
    if (drop > 0) {
      this.buf = this.buf.slice(drop);
      this.pos -= drop;
    }
    return out;
  }
}

if (typeof AudioWorkletProcessor !== "undefined" && typeof registerProcessor === "function") {
  class MulawCaptureProcessor extends AudioWorkletProcessor {
    constructor() {
      super();
      this.encoder = new MulawEncoder(sampleRate); // the AudioWorkletGlobalScope's rate
      this.running = true;
      this.port.onmessage = (event) => {
        if (event.data === "stop") this.running = false;
      };
    }

    process(inputs) {
      if (!this.running) return false;
      const channel = inputs[0] && inputs[0][0];
      if (channel) {
        for (const { frame, rms } of this.encoder.push(channel)) {
          this.port.postMessage({ frame, rms }, [frame.buffer]);
        }
      }
      return true;
    }
  }
  registerProcessor("mulaw-capture", MulawCaptureProcessor);
}
