// Server-Sent Events over fetch(): EventSource cannot send an Authorization
// header, so the stream is read with a ReadableStream and parsed here
// following the WHATWG event-stream rules (fields event/data/id/retry,
// ':' comments, any of CRLF / LF / CR as line end, dispatch on a blank line),
// even across chunk boundaries that split a line or a CRLF.

import { authHeaders, unauthorized } from "./api";

export interface SseMessage {
  event: string;
  data: string;
  id: string;
}

/** Incremental parser: feed decoded text chunks, get complete messages. */
export class SseParser {
  private buf = "";
  private event = "";
  private data: string[] = [];
  private sawCr = false;
  /** The last `id:` seen; persists across messages as the spec says. */
  lastId = "";
  retryMs: number | null = null;

  push(chunk: string): SseMessage[] {
    const out: SseMessage[] = [];
    let text = chunk;
    // A CR at the end of the previous chunk may be the first half of a CRLF.
    if (this.sawCr && text.startsWith("\n")) text = text.slice(1);
    this.sawCr = false;
    this.buf += text;
    let start = 0;
    for (let i = 0; i < this.buf.length; i++) {
      const c = this.buf[i];
      if (c !== "\n" && c !== "\r") continue;
      const line = this.buf.slice(start, i);
      if (c === "\r") {
        if (i + 1 < this.buf.length) {
          if (this.buf[i + 1] === "\n") i++;
        } else {
          this.sawCr = true;
        }
      }
      start = i + 1;
      const msg = this.line(line);
      if (msg) out.push(msg);
    }
    this.buf = this.buf.slice(start);
    return out;
  }

  private line(line: string): SseMessage | null {
    if (line === "") {
      // Unlike EventSource, a named event without data lines (`event: reset`)
      // is still dispatched: its name is the whole message.
      if (this.data.length === 0 && this.event === "") return null;
      const msg = { event: this.event || "message", data: this.data.join("\n"), id: this.lastId };
      this.event = "";
      this.data = [];
      return msg;
    }
    if (line.startsWith(":")) return null; // comment, e.g. the heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.lastId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retryMs = Number(value);
        break;
    }
    return null;
  }
}

const SILENCE_MS = 45_000;

export type LiveState = "connecting" | "live" | "retrying" | "off";

export interface StreamHandlers {
  onMessage: (m: SseMessage) => void;
  onState: (s: LiveState, detail?: string) => void;
}

/**
 * Keeps one stream open until stop(): reconnects with exponential backoff
 * (1 s doubling to 30 s, reset once a connection delivers data), resuming
 * with Last-Event-ID so the server can replay what was missed.
 */
export class LiveStream {
  private abort = new AbortController();
  private stopped = false;
  private parser = new SseParser();
  private backoffMs = 1000;
  private timer: number | undefined;

  constructor(
    private readonly url: string,
    private readonly h: StreamHandlers,
  ) {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.timer);
    this.abort.abort();
    this.h.onState("off");
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      this.h.onState("connecting");
      let detail = "";
      try {
        await this.connect();
        detail = "stream ended";
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof Unauthorized) {
          unauthorized("session expired");
          this.stop();
          return;
        }
        detail = e instanceof Error ? e.message : String(e);
      }
      if (this.stopped) return;
      const wait = this.parser.retryMs ?? this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, 30_000);
      this.h.onState("retrying", `${detail}; retrying in ${Math.round(wait / 1000)} s`);
      await new Promise<void>((resolve) => {
        this.timer = window.setTimeout(resolve, wait);
      });
    }
  }

  private async connect(): Promise<void> {
    const headers: Record<string, string> = { Accept: "text/event-stream", ...authHeaders() };
    if (this.parser.lastId) headers["Last-Event-ID"] = this.parser.lastId;
    const res = await fetch(this.url, { headers, signal: this.abort.signal, cache: "no-store" });
    if (res.status === 401) throw new Unauthorized();
    if (!res.ok || !res.body) throw new Error(`stream answered ${res.status}`);
    // A fresh connection starts a fresh parse; only the last id carries over.
    const lastId = this.parser.lastId;
    this.parser = new SseParser();
    this.parser.lastId = lastId;
    this.h.onState("live");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    // The server sends a heartbeat every 15 s; silence for much longer means
    // a dead connection that TCP has not noticed yet, so drop it and reconnect.
    let watchdog = 0;
    const arm = () => {
      window.clearTimeout(watchdog);
      watchdog = window.setTimeout(() => void reader.cancel("no data or heartbeat for 45 s"), SILENCE_MS);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        arm();
        this.backoffMs = 1000;
        for (const m of this.parser.push(value)) this.h.onMessage(m);
      }
    } finally {
      window.clearTimeout(watchdog);
    }
  }
}

class Unauthorized extends Error {}
