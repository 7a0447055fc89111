// Number and time formatting shared by charts, markers and the log viewer.

export function fmtBytes(v: number | null): string {
  if (v === null || !Number.isFinite(v)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${v < 0 ? "-" : ""}${x >= 100 || i === 0 ? x.toFixed(0) : x.toFixed(1)} ${units[i]}`;
}

export function fmtNum(v: number | null, digits = 1): string {
  if (v === null || !Number.isFinite(v)) return "–";
  if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(digits)}M`;
  if (Math.abs(v) >= 1e4) return `${(v / 1e3).toFixed(digits)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(digits);
}

export const fmtPct = (v: number | null): string => (v === null || !Number.isFinite(v) ? "–" : `${v.toFixed(1)} %`);
export const fmtMs = (v: number | null): string => (v === null || !Number.isFinite(v) ? "–" : `${fmtNum(v)} ms`);

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** Local wall-clock time of an epoch-nanosecond timestamp, to the millisecond. */
export function fmtTimeNs(ns: number): string {
  const d = new Date(Math.floor(ns / 1e6));
  return (
    `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  );
}

/** Value for an <input type="datetime-local"> from epoch seconds (local time). */
export function toLocalInput(sec: number): string {
  const d = new Date(sec * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fmtDuration(sec: number): string {
  if (sec % 86400 === 0) return `${sec / 86400}d`;
  if (sec % 3600 === 0) return `${sec / 3600}h`;
  return `${Math.round(sec / 60)}m`;
}
