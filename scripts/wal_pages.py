#!/usr/bin/env python3
"""Which b-trees a SQLite commit writes: reads a copy of a WAL file, groups its frames by
transaction (a frame with a database size closes one) and names each frame's page through
the database's `dbstat` table (the table or index the page belongs to now).

    cp sluice.db-wal /tmp/wal-copy          # while the sink writes, e.g. late in a bench run
    python3 scripts/wal_pages.py /tmp/wal-copy sluice.db

Pages freed and reused since the copy (retention) are named by their current owner, so read a
run without deletes (`sluice bench --sink sqlite` at the default hour of event time). Only
frames of the WAL's current generation count (salts as in the header); a transaction still
open when the copy was taken is left out.
"""

import collections
import sqlite3
import struct
import sys


def frames(wal_path):
    """(transaction number, page number) of every frame of the current generation, and how
    many transactions those frames complete."""
    out, tx = [], 0
    with open(wal_path, "rb") as wal:
        _magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = struct.unpack(
            ">8I", wal.read(32)
        )
        while True:
            header = wal.read(24)
            if len(header) < 24:
                break
            page, db_size, s1, s2, _k1, _k2 = struct.unpack(">6I", header)
            if (s1, s2) != (salt1, salt2):
                break
            wal.seek(page_size, 1)
            out.append((tx, page))
            if db_size:
                tx += 1
    return out, tx


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    wal_path, db_path = sys.argv[1:]
    found, committed = frames(wal_path)
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    owner = dict((page, name) for name, page in db.execute("SELECT name, pageno FROM dbstat"))
    by_tx = collections.defaultdict(collections.Counter)
    for tx, page in found:
        if tx < committed:
            by_tx[tx][owner.get(page, "(not in the file now)")] += 1
    print(f"{len(found)} frames, {committed} committed transactions")
    for tx in sorted(by_tx):
        counts = by_tx[tx]
        total = sum(counts.values())
        parts = ", ".join(f"{name} {n} ({100 * n / total:.0f} %)" for name, n in counts.most_common())
        print(f"transaction {tx}: {total} pages: {parts}")


if __name__ == "__main__":
    main()
