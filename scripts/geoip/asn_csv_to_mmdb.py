#!/usr/bin/env python3
"""Convert ip-location-db ASN CSV ranges into one MaxMind DB (asn.mmdb).

Input: one or more CSV files from the npm package `@ip-location-db/asn`
(`asn-ipv4.csv`, `asn-ipv6.csv`), rows of

    ip_range_start,ip_range_end,autonomous_system_number,autonomous_system_organization

with inclusive ranges, no header, quoted organisations where they hold commas.

Output: an IPv6 MaxMind DB (IPv4 ranges stored under ::/96, the usual place, so one
reader answers both families) whose records use the field names of MaxMind's
GeoLite2-ASN database:

    {"autonomous_system_number": uint32, "autonomous_system_organization": string}

The file is written next to OUT and renamed over it, so a running collector never sees a
half-written database. Needs the PyPI package `mmdb-writer` (which brings `netaddr`); when
`maxminddb` is importable too, a few rows are read back as a check.

Usage: asn_csv_to_mmdb.py OUT.mmdb IN.csv [IN.csv ...] [--description TEXT]
"""

import argparse
import csv
import os
import sys
import time

from mmdb_writer import MMDBWriter, MmdbU32
from netaddr import IPAddress, IPSet, iprange_to_cidrs


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if len(row) != 4:
                raise SystemExit(f"{path}:{line_no}: expected 4 fields, found {len(row)}")
            start, end, asn, org = row
            yield line_no, start, end, int(asn), org


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the asn.mmdb to write")
    ap.add_argument("inputs", nargs="+", help="asn-ipv4.csv, asn-ipv6.csv")
    ap.add_argument(
        "--description",
        default="ASN ranges from @ip-location-db/asn (RouteViews, NRO, DB-IP; CC BY 4.0)",
    )
    args = ap.parse_args()

    started = time.monotonic()
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="ip-location-db-ASN",
        languages=["en"],
        description={"en": args.description},
    )
    samples = []
    count = 0
    for path in args.inputs:
        for line_no, start, end, asn, org in rows(path):
            if not 0 <= asn <= 0xFFFFFFFF:
                raise SystemExit(f"{path}:{line_no}: AS number {asn} out of range")
            cidrs = iprange_to_cidrs(start, end)
            writer.insert_network(
                IPSet(cidrs),
                {
                    "autonomous_system_number": MmdbU32(asn),
                    "autonomous_system_organization": org,
                },
            )
            count += 1
            if count % 50_000 == 1:
                samples.append((start, asn, org))
    if count == 0:
        raise SystemExit("no rows read: refusing to write an empty database")

    tmp = f"{args.out}.tmp-{os.getpid()}"
    try:
        writer.to_db_file(tmp)
        check(tmp, samples)
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(
        f"asn_csv_to_mmdb: {count} ranges -> {args.out} "
        f"({os.path.getsize(args.out)} bytes) in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )


def check(path, samples):
    """Reads a few converted rows back, when the `maxminddb` package is there."""
    try:
        import maxminddb
    except ImportError:
        return
    with maxminddb.open_database(path) as db:
        for start, asn, org in samples:
            ip = str(IPAddress(start))
            got = db.get(ip) or {}
            want = {"autonomous_system_number": asn, "autonomous_system_organization": org}
            if got != want:
                raise SystemExit(f"check failed for {ip}: {got!r} != {want!r}")


if __name__ == "__main__":
    main()
