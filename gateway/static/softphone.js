// The browser softphone: this page plays Twilio's part of a Media Stream.
//
// It speaks exactly what Twilio speaks to /twilio/media (PROTOCOLS.md section 5): `connected`,
// `start` (with a generated streamSid/callSid and customParameters {caller, direction}), a 160-byte
// mu-law `media` frame every 20 ms with string sequenceNumber/chunk/timestamp, `dtmf`, and `stop`
// on hang-up. It plays the gateway's audio in the order received, echoes each `mark` once the
// audio queued before it has played (at once if nothing is queued), and on `clear` drops the
// queued audio and echoes every pending mark immediately, as Twilio does.

import { DECODE_TABLE, MulawEncoder, TELEPHONE_RATE } from "./capture-worklet.js";

const PLAYBACK_LEAD_S = 0.03; // scheduling margin when the speaker is idle: one render quantum is ~3 ms
const LEVEL_SMOOTHING = 0.3;

function randomHex(bytes) {
  const data = new Uint8Array(bytes);
  crypto.getRandomValues(data);
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("");
}

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

// The phone's speaker: mu-law chunks scheduled back to back on the AudioContext's clock.
export class Speaker {
  constructor(context, onMarkPlayed) {
    this.context = context;
    this.onMarkPlayed = onMarkPlayed;
    this.output = context.createGain();
    this.output.connect(context.destination);
    this.queue = []; // scheduled chunks not yet finished, in play order
    this.pendingMarks = []; // {name, after}: echo once `after` (a queued chunk) has finished
    this.nextStart = 0;
    this.playedSamples = 0;
    this.receivedSamples = 0;
  }

  play(mulaw) {
    const n = mulaw.length;
    if (!n) return;
    const buffer = this.context.createBuffer(1, n, TELEPHONE_RATE);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < n; i++) samples[i] = DECODE_TABLE[mulaw[i]] / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.output);
    const start = Math.max(this.nextStart, this.context.currentTime + PLAYBACK_LEAD_S);
    source.start(start);
    this.nextStart = start + n / TELEPHONE_RATE;
    const chunk = { source, samples: n };
    source.onended = () => this.finished(chunk);
    this.queue.push(chunk);
    this.receivedSamples += n;
  }

  finished(chunk) {
    const index = this.queue.indexOf(chunk);
    if (index < 0) return;
    // Chunks end in order, so anything queued before this one has finished too.
    for (const done of this.queue.splice(0, index + 1)) this.playedSamples += done.samples;
    while (this.pendingMarks.length && !this.queue.includes(this.pendingMarks[0].after)) {
      this.onMarkPlayed(this.pendingMarks.shift().name);
    }
  }

  mark(name) {
    if (!this.queue.length && !this.pendingMarks.length) {
      this.onMarkPlayed(name); // nothing buffered: Twilio echoes straight away
      return;
    }
    this.pendingMarks.push({ name, after: this.queue[this.queue.length - 1] });
  }

  clear() {
    for (const chunk of this.queue) {
      chunk.source.onended = null;
      try {
        chunk.source.stop();
      } catch (_) {
        /* never started */
      }
    }
    this.queue = [];
    this.nextStart = 0;
    const marks = this.pendingMarks;
    this.pendingMarks = [];
    for (const mark of marks) this.onMarkPlayed(mark.name);
    return marks.length;
  }

  get playing() {
    return this.queue.length > 0;
  }
}

// One call. `events` receives {type: "state" | "level" | "stats" | "ended" | "error", ...}.
export class Softphone {
  constructor({ url, events, caller = "softphone", direction = "browser" }) {
    this.url = url;
    this.events = events || (() => {});
    this.caller = caller;
    this.direction = direction;
    this.streamSid = "MZ" + randomHex(16);
    this.callSid = "CA" + randomHex(16);
    this.accountSid = "AC" + randomHex(16);
    this.sequence = 0;
    this.chunk = 0;
    this.started = false;
    this.ended = false;
    this.level = 0;
    this.stats = { framesSent: 0, marksEchoed: 0, clears: 0, playedMs: 0, receivedMs: 0 };
  }

  async start() {
    this.emit("state", { state: "starting" });
    this.context = new AudioContext({ latencyHint: "interactive" });
    await this.context.resume();
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    this.speaker = new Speaker(this.context, (name) => this.echoMark(name));
    const source = this.context.createMediaStreamSource(this.stream);
    this.sink = this.context.createGain();
    this.sink.gain.value = 0; // the capture node must reach the destination to be pulled; silently
    this.sink.connect(this.context.destination);
    if (this.context.audioWorklet) {
      await this.context.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
      this.capture = new AudioWorkletNode(this.context, "mulaw-capture", { numberOfInputs: 1, numberOfOutputs: 1 });
      this.capture.port.onmessage = (event) => this.onFrame(event.data.frame, event.data.rms);
    } else {
      // No AudioWorklet (an old browser): the same encoder on the main thread.
      const encoder = new MulawEncoder(this.context.sampleRate);
      this.capture = this.context.createScriptProcessor(1024, 1, 1);
      this.capture.onaudioprocess = (event) => {
        for (const { frame, rms } of encoder.push(event.inputBuffer.getChannelData(0))) this.onFrame(frame, rms);
      };
    }
    source.connect(this.capture);
    this.capture.connect(this.sink);
    this.source = source;

    this.ws = new WebSocket(this.url);
    this.ws.onopen = () => this.onOpen();
    this.ws.onmessage = (event) => this.onMessage(event.data);
    this.ws.onclose = (event) => this.finish(event.code === 1000 || event.code === 1005 ? "ended" : `closed (${event.code})`);
    this.ws.onerror = () => this.emit("error", { message: "the gateway refused or dropped the call" });
  }

  emit(type, detail) {
    try {
      this.events({ type, ...detail });
    } catch (err) {
      console.error(err);
    }
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  nextSequence() {
    this.sequence += 1;
    return String(this.sequence);
  }

  onOpen() {
    this.send({ event: "connected", protocol: "Call", version: "1.0.0" });
    this.send({
      event: "start",
      sequenceNumber: this.nextSequence(),
      streamSid: this.streamSid,
      start: {
        accountSid: this.accountSid,
        streamSid: this.streamSid,
        callSid: this.callSid,
        tracks: ["inbound"],
        mediaFormat: { encoding: "audio/x-mulaw", sampleRate: TELEPHONE_RATE, channels: 1 },
        customParameters: { caller: this.caller, direction: this.direction },
      },
    });
    this.started = true;
    this.startedAt = performance.now();
    this.emit("state", { state: "in-call", callSid: this.callSid, streamSid: this.streamSid });
  }

  onFrame(frame, rms) {
    this.level = this.level * (1 - LEVEL_SMOOTHING) + rms * LEVEL_SMOOTHING;
    if (!this.started || this.ended) return;
    this.chunk += 1;
    this.send({
      event: "media",
      sequenceNumber: this.nextSequence(),
      media: {
        track: "inbound",
        chunk: String(this.chunk),
        timestamp: String((this.chunk - 1) * 20),
        payload: toBase64(frame),
      },
      streamSid: this.streamSid,
    });
    this.stats.framesSent += 1;
    if (this.chunk % 5 === 0) this.report();
  }

  onMessage(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch (_) {
      return;
    }
    switch (message.event) {
      case "media":
        if (message.media && message.media.payload) this.speaker.play(fromBase64(message.media.payload));
        break;
      case "mark":
        if (message.mark && typeof message.mark.name === "string") this.speaker.mark(message.mark.name);
        break;
      case "clear":
        this.speaker.clear();
        this.stats.clears += 1;
        break;
      default:
        break; // Twilio ignores what it does not know; so do we
    }
  }

  echoMark(name) {
    if (this.ended) return;
    this.send({ event: "mark", sequenceNumber: this.nextSequence(), streamSid: this.streamSid, mark: { name } });
    this.stats.marksEchoed += 1;
  }

  sendDigit(digit) {
    if (!this.started || this.ended) return;
    this.send({
      event: "dtmf",
      streamSid: this.streamSid,
      sequenceNumber: this.nextSequence(),
      dtmf: { track: "inbound_track", digit: String(digit) },
    });
  }

  report() {
    const speaker = this.speaker;
    this.stats.playedMs = speaker ? Math.round((speaker.playedSamples * 1000) / TELEPHONE_RATE) : 0;
    this.stats.receivedMs = speaker ? Math.round((speaker.receivedSamples * 1000) / TELEPHONE_RATE) : 0;
    this.emit("stats", { stats: { ...this.stats }, level: this.level, speaking: speaker ? speaker.playing : false });
  }

  hangUp() {
    if (this.ended) return;
    if (this.started) {
      this.send({
        event: "stop",
        sequenceNumber: this.nextSequence(),
        streamSid: this.streamSid,
        stop: { accountSid: this.accountSid, callSid: this.callSid },
      });
    }
    this.finish("hung up");
  }

  finish(reason) {
    if (this.ended) return;
    this.ended = true;
    this.report();
    if (this.speaker) this.speaker.clear();
    if (this.capture && this.capture.port) this.capture.port.postMessage("stop");
    if (this.source) this.source.disconnect();
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "hang up");
    if (this.context) this.context.close().catch(() => {});
    this.emit("ended", { reason, stats: { ...this.stats } });
  }
}
