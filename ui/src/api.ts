// Thin client for the read-path API (/api/v1). Every call carries the bearer
// token when there is one; a 401 anywhere means "sign in again".

export interface Info {
  auth: "none" | "uaa";
  version: string;
}

export interface App {
  id: string;
  name: string | null;
  last_activity: number;
  /** From the directory (SPEC §11); null while unknown. */
  space_id: string | null;
  space_name: string | null;
  org_id: string | null;
  org_name: string | null;
}

/** A space's or an org's point (SPEC §11's group rollups). */
export interface GroupPoint {
  time: number;
  apps: number | null;
  instances: number | null;
  requests: number | null;
  status_2xx: number | null;
  status_3xx: number | null;
  status_4xx: number | null;
  status_5xx: number | null;
  log_lines: number | null;
  log_err_lines: number | null;
  app_events: number | null;
  cpu_total: number | null;
  memory_bytes_total: number | null;
  disk_bytes_total: number | null;
  final: boolean;
}

export type GroupKind = "space" | "org";

export interface GroupMetrics {
  kind: GroupKind;
  id: string;
  name: string | null;
  from: number;
  to: number;
  step: number;
  points: GroupPoint[];
}

export interface Point {
  time: number;
  window?: number;
  instances: number | null;
  cpu_avg: number | null;
  cpu_max: number | null;
  memory_avg: number | null;
  memory_max: number | null;
  disk_avg: number | null;
  disk_max: number | null;
  requests: number | null;
  status_2xx: number | null;
  status_3xx: number | null;
  status_4xx: number | null;
  status_5xx: number | null;
  latency_avg_ms: number | null;
  latency_max_ms: number | null;
  latency_p50_ms: number | null;
  latency_p95_ms: number | null;
  latency_p99_ms: number | null;
  log_lines: number | null;
  log_err_lines: number | null;
  app_events: number | null;
  final: boolean;
}

export interface Metrics {
  app_id: string;
  from: number;
  to: number;
  step: number;
  points: Point[];
}

export interface AppEvent {
  time_ns: number;
  event: string;
  source_type: string;
  source_instance: string;
  message: string;
}

export interface LogLine {
  id: string;
  time_ns: number;
  source_type: string;
  source_instance: string;
  message_type: "OUT" | "ERR";
  message: string;
}

export interface LogPage {
  logs: LogLine[];
  next_cursor: string | null;
}

/** Thrown for any non-2xx answer; `status` lets callers tell 401/403 apart. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const TOKEN_KEY = "sluice.token";

export const token = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (t: string): void => sessionStorage.setItem(TOKEN_KEY, t),
  clear: (): void => sessionStorage.removeItem(TOKEN_KEY),
};

/** Called on any 401 so the page can drop the token and show the sign-in form. */
let onUnauthorized: (why: string) => void = () => {};
export function setUnauthorizedHandler(f: (why: string) => void): void {
  onUnauthorized = f;
}
export function unauthorized(why: string): void {
  onUnauthorized(why);
}

export function authHeaders(): Record<string, string> {
  const t = token.get();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function request<T>(path: string, init: RequestInit = {}, signal?: AbortSignal): Promise<T> {
  const res = await fetch(path, {
    ...init,
    signal,
    headers: { Accept: "application/json", ...authHeaders(), ...(init.headers as Record<string, string>) },
  });
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      const body = (await res.json()) as { error?: string };
      if (body.error) message = body.error;
    } catch {
      // Not JSON (e.g. a proxy error page): keep the status line.
    }
    if (res.status === 401 && !path.endsWith("/login")) unauthorized(message);
    throw new ApiError(res.status, message);
  }
  return (await res.json()) as T;
}

type Query = Record<string, string | number | null | undefined>;

function qs(q: Query): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== null && v !== undefined && v !== "") p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
}

/** A step in seconds as the API's duration: whole hours as "1h", else minutes ("5m"). */
export const stepParam = (sec: number): string => (sec % 3600 === 0 ? `${sec / 3600}h` : `${Math.round(sec / 60)}m`);

const appPath = (id: string) => `/api/v1/apps/${encodeURIComponent(id)}`;

export const api = {
  info: () => request<Info>("/api/v1/info"),
  login: (username: string, password: string) =>
    request<{ access_token: string; expires_in: number }>("/api/v1/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    }),
  apps: () => request<{ apps: App[] }>("/api/v1/apps"),
  metrics: (id: string, from: number, to: number, step: number, signal?: AbortSignal) =>
    request<Metrics>(`${appPath(id)}/metrics${qs({ from, to, step: stepParam(step) })}`, {}, signal),
  events: (id: string, from: number, to: number, signal?: AbortSignal) =>
    request<{ events: AppEvent[] }>(`${appPath(id)}/events${qs({ from, to })}`, {}, signal),
  logs: (id: string, q: Query, signal?: AbortSignal) =>
    request<LogPage>(`${appPath(id)}/logs${qs(q)}`, {}, signal),
  streamUrl: (id: string) => `${appPath(id)}/stream`,
  groupMetrics: (kind: GroupKind, id: string, from: number, to: number, step: number, signal?: AbortSignal) =>
    request<GroupMetrics>(
      `/api/v1/${kind === "space" ? "spaces" : "orgs"}/${encodeURIComponent(id)}/metrics${qs({ from, to, step: stepParam(step) })}`,
      {},
      signal,
    ),
};
