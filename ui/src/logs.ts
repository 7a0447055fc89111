// Log viewer: newest first, server-side search (`q`, every word must match),
// matches highlighted with <mark>, paging with next_cursor.

import { api, type LogLine } from "./api";
import { fmtTimeNs } from "./format";

const PAGE = 100;

export class LogViewer {
  private readonly list = el<HTMLDivElement>("log-list");
  private readonly status = el<HTMLParagraphElement>("log-status");
  private readonly more = el<HTMLButtonElement>("log-more");
  private readonly search = el<HTMLInputElement>("log-search");
  private query: { app: string; from: number; to: number; q: string } | null = null;
  private cursor: string | null = null;
  private inflight: AbortController | null = null;
  private debounce: number | undefined;
  private count = 0;

  constructor(
    private readonly range: () => { app: string; from: number; to: number } | null,
    private readonly onError: (e: unknown) => void,
  ) {
    this.search.addEventListener("input", () => {
      window.clearTimeout(this.debounce);
      this.debounce = window.setTimeout(() => void this.reload(), 300);
    });
    this.search.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") {
        window.clearTimeout(this.debounce);
        void this.reload();
      }
    });
    this.more.addEventListener("click", () => void this.page());
    el<HTMLButtonElement>("log-refresh").addEventListener("click", () => void this.reload());
  }

  /** Starts over from the newest line for the current app, range and search. */
  async reload(): Promise<void> {
    const r = this.range();
    this.list.replaceChildren();
    this.count = 0;
    this.cursor = null;
    this.more.hidden = true;
    if (!r) {
      this.query = null;
      this.status.textContent = "";
      return;
    }
    this.query = { ...r, q: this.search.value.trim() };
    await this.page();
  }

  clear(): void {
    this.inflight?.abort();
    this.query = null;
    this.list.replaceChildren();
    this.status.textContent = "";
    this.more.hidden = true;
  }

  private async page(): Promise<void> {
    const query = this.query;
    if (!query) return;
    this.inflight?.abort();
    const ctl = new AbortController();
    this.inflight = ctl;
    // Stable hooks for tests: which search the shown rows answer, and whether they are complete.
    this.list.dataset.state = "loading";
    this.list.dataset.query = query.q;
    this.more.disabled = true;
    try {
      const res = await api.logs(
        query.app,
        { from: query.from, to: query.to, q: query.q, limit: PAGE, cursor: this.cursor },
        ctl.signal,
      );
      if (ctl.signal.aborted || query !== this.query) return;
      const terms = query.q.split(/\s+/).filter(Boolean);
      const frag = document.createDocumentFragment();
      for (const line of res.logs) frag.append(row(line, terms));
      this.list.append(frag);
      this.count += res.logs.length;
      this.cursor = res.next_cursor;
      this.more.hidden = res.next_cursor === null;
      this.status.textContent =
        this.count === 0
          ? query.q
            ? `No log lines match “${query.q}” in this range.`
            : "No log lines in this range."
          : `${this.count} line${this.count === 1 ? "" : "s"}${res.next_cursor ? ", more available" : ""}`;
      this.list.dataset.state = "ready";
    } catch (e) {
      if (ctl.signal.aborted) return;
      this.list.dataset.state = "error";
      this.status.textContent = "Could not load logs.";
      this.onError(e);
    } finally {
      this.more.disabled = false;
    }
  }
}

function row(line: LogLine, terms: string[]): HTMLElement {
  const div = document.createElement("div");
  div.className = line.message_type === "ERR" ? "log-row err" : "log-row";
  div.dataset.testid = "log-row";
  const time = document.createElement("time");
  time.textContent = fmtTimeNs(line.time_ns);
  time.dateTime = new Date(Math.floor(line.time_ns / 1e6)).toISOString();
  const src = document.createElement("span");
  src.className = "src";
  src.textContent = `${line.source_type}/${line.source_instance}`;
  const msg = document.createElement("span");
  msg.className = "msg";
  msg.append(...highlight(line.message, terms));
  div.append(time, src, msg);
  return div;
}

/** Splits text into plain text nodes and <mark> elements for every case-insensitive match. */
export function highlight(text: string, terms: string[]): Node[] {
  if (terms.length === 0) return [document.createTextNode(text)];
  const re = new RegExp(
    terms
      .map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      .sort((a, b) => b.length - a.length)
      .join("|"),
    "gi",
  );
  const out: Node[] = [];
  let last = 0;
  for (const m of text.matchAll(re)) {
    const i = m.index ?? 0;
    if (m[0].length === 0) continue;
    if (i > last) out.push(document.createTextNode(text.slice(last, i)));
    const mark = document.createElement("mark");
    mark.textContent = m[0];
    out.push(mark);
    last = i + m[0].length;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

export function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`missing element #${id}`);
  return e as T;
}
