#!/usr/bin/env python3
# Where SQLite insert time goes as the file grows (README "Retention"): inserts 1.5 M
# log_message-shaped rows (random 128-bit text ids, 5 000 apps, 200-byte messages) in
# transactions of 3 000 under the sink's pragmas, and prints rows/s per tenth.
# Variants: none (no key, no index), pk_only (id PRIMARY KEY), no_pk ((app_id, ts) and
# (ts) indexes), full (all three). Usage: scripts/sqlite_layout_experiment.py full 1500000
import sqlite3, os, random, time, sys
variant = sys.argv[1]; N = int(sys.argv[2]); B = 3000
path = f"/tmp/sluice-layout-{variant}.db"
for p in (path, path+"-wal", path+"-shm"):
    if os.path.exists(p): os.remove(p)
c = sqlite3.connect(path, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL"); c.execute("PRAGMA cache_size=-65536")
pk = "id TEXT NOT NULL PRIMARY KEY," if variant in ("full", "pk_only") else "id TEXT NOT NULL,"
c.execute(f"CREATE TABLE log_message ({pk} ts INTEGER NOT NULL, app_id TEXT NOT NULL, message TEXT NOT NULL)")
if variant in ("full", "no_pk"):
    c.execute("CREATE INDEX log_message_app_ts ON log_message (app_id, ts)")
    c.execute("CREATE INDEX log_message_ts ON log_message (ts)")
apps = ["%08x-58cc-4372-a567-0e02b2c3d479" % random.getrandbits(32) for _ in range(5000)]
msg = "x" * 200
ts = 1_700_000_000_000_000_000
t0 = time.time(); last = t0; out = []
for b in range(N // B):
    rows = []
    for i in range(B):
        ts += 1000
        rows.append(("%032x" % random.getrandbits(128), ts, random.choice(apps), msg))
    c.execute("BEGIN")
    c.executemany("INSERT OR IGNORE INTO log_message VALUES (?,?,?,?)", rows)
    c.execute("COMMIT")
    if (b + 1) % (N // B // 10) == 0:
        now = time.time(); out.append(int(N / 10 / (now - last))); last = now
print(variant, "rows/s per tenth:", out, "size MiB", os.path.getsize(path) >> 20)
