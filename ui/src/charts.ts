// uPlot charts for one app's rollup series, with app events drawn as
// vertical markers (label on top, details in a tooltip on hover); the same
// charts, with their own specs, for a space's or an org's series.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { AppEvent } from "./api";
import { fmtBytes, fmtMs, fmtNum, fmtPct, fmtTimeNs } from "./format";

/** A point of any series: its time and numeric columns by name. */
export type Row = { time: number };

interface SeriesSpec {
  label: string;
  key: string;
  color: string;
  dash?: number[];
}

interface ChartSpec {
  id: string;
  fmt: (v: number | null) => string;
  series: SeriesSpec[];
}

export const APP_SPECS: ChartSpec[] = [
  {
    id: "chart-cpu",
    fmt: fmtPct,
    series: [
      { label: "avg", key: "cpu_avg", color: "#4cc3ff" },
      { label: "max", key: "cpu_max", color: "#4cc3ff", dash: [4, 4] },
    ],
  },
  {
    id: "chart-memory",
    fmt: fmtBytes,
    series: [
      { label: "avg", key: "memory_avg", color: "#b48cff" },
      { label: "max", key: "memory_max", color: "#b48cff", dash: [4, 4] },
    ],
  },
  {
    id: "chart-disk",
    fmt: fmtBytes,
    series: [
      { label: "avg", key: "disk_avg", color: "#5fd3a5" },
      { label: "max", key: "disk_max", color: "#5fd3a5", dash: [4, 4] },
    ],
  },
  {
    id: "chart-requests",
    fmt: (v) => fmtNum(v, 1),
    series: [
      { label: "requests", key: "requests", color: "#8fa8ff" },
      { label: "4xx", key: "status_4xx", color: "#ffb44c" },
      { label: "5xx", key: "status_5xx", color: "#ff5c6c" },
    ],
  },
  {
    id: "chart-latency",
    fmt: fmtMs,
    series: [
      { label: "avg", key: "latency_avg_ms", color: "#5fd3a5" },
      { label: "p95", key: "latency_p95_ms", color: "#ffb44c" },
      { label: "p99", key: "latency_p99_ms", color: "#ff5c6c" },
    ],
  },
];

/** A space's or an org's charts: totals over its apps (SPEC §11). */
export const GROUP_SPECS: ChartSpec[] = [
  { id: "chart-group-cpu", fmt: fmtPct, series: [{ label: "total", key: "cpu_total", color: "#4cc3ff" }] },
  { id: "chart-group-memory", fmt: fmtBytes, series: [{ label: "total", key: "memory_bytes_total", color: "#b48cff" }] },
  { id: "chart-group-disk", fmt: fmtBytes, series: [{ label: "total", key: "disk_bytes_total", color: "#5fd3a5" }] },
  {
    id: "chart-group-requests",
    fmt: (v) => fmtNum(v, 1),
    series: [
      { label: "requests", key: "requests", color: "#8fa8ff" },
      { label: "4xx", key: "status_4xx", color: "#ffb44c" },
      { label: "5xx", key: "status_5xx", color: "#ff5c6c" },
    ],
  },
  {
    id: "chart-group-apps",
    fmt: (v) => fmtNum(v, 0),
    series: [
      { label: "apps", key: "apps", color: "#ffd84c" },
      { label: "instances", key: "instances", color: "#4cc3ff" },
    ],
  },
];

const EVENT_COLORS: Record<string, string> = {
  crash: "#ff5c6c",
  start: "#5fd3a5",
  stop: "#9aa4b2",
  scale: "#4cc3ff",
  staged: "#b48cff",
};
const eventColor = (e: string) => EVENT_COLORS[e] ?? "#ffd84c";

const AXIS = "#9aa4b2";
const GRID = "rgba(154,164,178,0.12)";
const HEIGHT = 190;

/** What every chart draws: the time range, the step, the rollup points and the events. */
export interface ChartData {
  from: number;
  to: number;
  step: number;
  points: Row[]; // ascending by time
  events: AppEvent[];
}

export class Charts {
  private readonly charts: { spec: ChartSpec; el: HTMLElement; u: uPlot }[] = [];
  private data: ChartData = { from: 0, to: 1, step: 60, points: [], events: [] };

  constructor(specs: ChartSpec[]) {
    for (const spec of specs) {
      const el = document.getElementById(spec.id);
      if (!el) throw new Error(`missing chart container #${spec.id}`);
      const u = new uPlot(this.options(spec, el), [[]], el);
      this.charts.push({ spec, el, u });
      new ResizeObserver(() => {
        if (el.clientWidth > 0 && el.clientWidth !== u.width) u.setSize({ width: el.clientWidth, height: HEIGHT });
      }).observe(el);
    }
  }

  set(data: ChartData): void {
    this.data = data;
    for (const c of this.charts) {
      const { aligned, drawn } = align(data, c.spec.series);
      c.u.setData(aligned);
      c.el.dataset.points = String(drawn);
    }
  }

  private options(spec: ChartSpec, el: HTMLElement): uPlot.Options {
    const tip = document.createElement("div");
    tip.className = "marker-tip";
    tip.hidden = true;
    return {
      width: Math.max(el.clientWidth, 300),
      height: HEIGHT,
      cursor: { sync: { key: "sluice" }, points: { size: 6 } },
      legend: { live: true },
      scales: {
        x: { time: true, range: () => [this.data.from, this.data.to] },
        y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        // Room for "10:05am"-style labels so they never run into each other.
        { stroke: AXIS, grid: { stroke: GRID }, ticks: { stroke: GRID }, space: 90 },
        {
          stroke: AXIS,
          grid: { stroke: GRID },
          ticks: { stroke: GRID },
          size: 84,
          values: (_u, vals) => vals.map((v) => spec.fmt(v)),
        },
      ],
      series: [
        {},
        ...spec.series.map(
          (s): uPlot.Series => ({
            label: s.label,
            stroke: s.color,
            width: 1.5,
            dash: s.dash,
            fill: s.dash ? undefined : `${s.color}14`,
            // Lines alone hide a lone bucket (a new app, a run a minute old): mark the
            // points while a series is sparse enough for markers to read.
            points: { show: sparse, size: 5 },
            value: (_u, v) => spec.fmt(v),
          }),
        ),
      ],
      hooks: {
        ready: [(u) => u.over.appendChild(tip)],
        draw: [(u) => this.drawMarkers(u)],
        setCursor: [(u) => this.markerTip(u, tip)],
      },
    };
  }

  private visibleEvents(): { x: number; e: AppEvent }[] {
    const { from, to, events } = this.data;
    return events.map((e) => ({ x: e.time_ns / 1e9, e })).filter(({ x }) => x >= from && x < to);
  }

  private drawMarkers(u: uPlot): void {
    const ctx = u.ctx;
    const { top, height } = u.bbox;
    const dpr = window.devicePixelRatio || 1;
    ctx.save();
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    // Labels that would overlap the previous one are left out; the line and the tooltip remain.
    let labelEnd = -Infinity;
    const markers = this.visibleEvents().sort((a, b) => a.x - b.x);
    for (const { x, e } of markers) {
      const px = Math.round(u.valToPos(x, "x", true));
      const color = eventColor(e.event);
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5 * dpr;
      ctx.setLineDash([3 * dpr, 3 * dpr]);
      ctx.beginPath();
      ctx.moveTo(px, top);
      ctx.lineTo(px, top + height);
      ctx.stroke();
      const textX = px + 3 * dpr;
      if (textX > labelEnd) {
        ctx.fillStyle = color;
        ctx.fillText(e.event, textX, top + 2 * dpr);
        labelEnd = textX + ctx.measureText(e.event).width + 4 * dpr;
      }
    }
    ctx.restore();
  }

  /** Shows the details of the events under the cursor (within a few pixels). */
  private markerTip(u: uPlot, tip: HTMLElement): void {
    const left = u.cursor.left ?? -1;
    const near = left < 0 ? [] : this.visibleEvents().filter(({ x }) => Math.abs(u.valToPos(x, "x") - left) <= 5);
    if (near.length === 0) {
      tip.hidden = true;
      return;
    }
    tip.replaceChildren(
      ...near.map(({ e }) => {
        const row = document.createElement("div");
        const name = document.createElement("strong");
        name.textContent = e.event;
        name.style.color = eventColor(e.event);
        row.append(name, ` ${fmtTimeNs(e.time_ns)} · ${e.source_type}/${e.source_instance}`);
        const msg = document.createElement("div");
        msg.className = "marker-msg";
        msg.textContent = e.message;
        row.append(msg);
        return row;
      }),
    );
    tip.hidden = false;
    const flip = left > u.over.clientWidth / 2;
    tip.style.left = flip ? "" : `${left + 10}px`;
    tip.style.right = flip ? `${u.over.clientWidth - left + 10}px` : "";
  }
}

/** At most this many values in view: points are marked as well as joined. */
const SPARSE_POINTS = 40;

function sparse(u: uPlot, seriesIdx: number, idx0: number, idx1: number): boolean {
  const values = u.data[seriesIdx];
  let shown = 0;
  for (let i = idx0; i <= idx1; i++) {
    if (values[i] != null && ++shown > SPARSE_POINTS) return false;
  }
  return true;
}

/**
 * uPlot wants column arrays. A null row is inserted after each gap longer
 * than a step so lines break where the store has no bucket instead of
 * bridging it. `drawn` counts rows with at least one value in this chart.
 */
function align(data: ChartData, series: SeriesSpec[]): { aligned: uPlot.AlignedData; drawn: number } {
  const xs: number[] = [];
  const ys: (number | null)[][] = series.map(() => []);
  let drawn = 0;
  let prev: number | null = null;
  for (const p of data.points) {
    if (prev !== null && p.time - prev > data.step) {
      xs.push(prev + data.step);
      for (const col of ys) col.push(null);
    }
    xs.push(p.time);
    let any = false;
    series.forEach((s, i) => {
      const v = (p as Record<string, unknown>)[s.key];
      const n = typeof v === "number" ? v : null;
      ys[i].push(n);
      if (n !== null) any = true;
    });
    if (any) drawn++;
    prev = p.time;
  }
  return { aligned: [xs, ...ys] as uPlot.AlignedData, drawn };
}
