#!/usr/bin/env python3
"""Writes a small, deterministic Plausible CSV export (the zip of Plausible's "Export data",
the input of its CSV import) for Veil's import tests.

File names and columns are Plausible's (lib/plausible/imported/csv_importer.ex: one
`imported_<table>_<YYYYMMDD>_<YYYYMMDD>.csv` per table, CSVWithNames, one row per day and
dimension value). Three days, 2026-11-18 to 2026-11-20, numbers chosen so that every table
of one day adds up to the day's `imported_visitors` row, as a real export's do.

    python3 testing/plausible/make_export.py [OUT.zip]   (default: testing/plausible/export.zip)

Standard library only; the same bytes on every run (fixed zip timestamps, fixed order).
"""

import io
import sys
import zipfile

START, END = "20261118", "20261120"
DAYS = ["2026-11-18", "2026-11-19", "2026-11-20"]

# The day's totals: visitors, pageviews, bounces, visits, visit_duration (seconds, summed).
TOTALS = {
    "2026-11-18": (100, 250, 40, 120, 6000),
    "2026-11-19": (80, 200, 30, 90, 4500),
    "2026-11-20": (50, 100, 20, 60, 3000),
}


def split(day, shares):
    """The day's totals split over labels by shares (tenths): exact integers summing up."""
    v, pv, b, vs, d = TOTALS[day]
    out = []
    for i, (label, tenths) in enumerate(shares):
        last = i == len(shares) - 1
        done = [sum(r[1][k] for r in out) for k in range(5)]
        part = tuple(
            (tot - done[k]) if last else tot * tenths // 10
            for k, tot in enumerate((v, pv, b, vs, d))
        )
        out.append((label, part))
    return out


def csv_text(header, rows):
    def cell(x):
        s = str(x)
        if any(c in s for c in ',"\n\r'):
            s = '"' + s.replace('"', '""') + '"'
        return s

    lines = [",".join(header)] + [",".join(cell(x) for x in r) for r in rows]
    return "\n".join(lines) + "\n"


def tables():
    t = {}
    t["imported_visitors"] = (
        ["date", "visitors", "pageviews", "bounces", "visits", "visit_duration"],
        [(day, *TOTALS[day]) for day in DAYS],
    )
    # source, referrer, utm_source, utm_medium, utm_campaign, utm_content, utm_term
    sources = [
        (("Google", "", "", "", "", "", ""), 6),
        (("Hacker News", "news.ycombinator.com/item", "", "", "", "", ""), 1),
        (("Newsletter", "", "newsletter", "email", "november", "", ""), 1),
        (("", "", "", "", "", "", ""), 2),
    ]
    rows = []
    for day in DAYS:
        for dims, (v, pv, b, vs, d) in split(day, sources):
            rows.append((day, *dims, pv, v, vs, d, b))
    t["imported_sources"] = (
        ["date", "source", "referrer", "utm_source", "utm_medium", "utm_campaign",
         "utm_content", "utm_term", "pageviews", "visitors", "visits", "visit_duration",
         "bounces"],
        rows,
    )
    pages = [(("example.com", "/"), 5), (("example.com", "/pricing"), 3),
             (("example.com", "/blog/hello, world"), 2)]
    rows = []
    for day in DAYS:
        for (host, page), (v, pv, _b, vs, _d) in split(day, pages):
            rows.append((day, host, page, vs, v, pv, "", v // 2))
    t["imported_pages"] = (
        ["date", "hostname", "page", "visits", "visitors", "pageviews", "scroll_depth",
         "pageleave_visitors"],
        rows,
    )
    entries = [("/", 7), ("/pricing", 3)]
    rows = []
    for day in DAYS:
        for page, (v, pv, b, vs, d) in split(day, entries):
            rows.append((day, page, v, vs, d, b, pv))
    t["imported_entry_pages"] = (
        ["date", "entry_page", "visitors", "entrances", "visit_duration", "bounces",
         "pageviews"],
        rows,
    )
    exits = [("/pricing", 6), ("/", 4)]
    rows = []
    for day in DAYS:
        for page, (v, pv, b, vs, d) in split(day, exits):
            rows.append((day, page, v, d, vs, b, pv))
    t["imported_exit_pages"] = (
        ["date", "exit_page", "visitors", "visit_duration", "exits", "bounces", "pageviews"],
        rows,
    )
    # city: GeoNames id (0: unknown)
    locations = [(("DE", "DE-BE", 2950159), 5), (("US", "US-CA", 5368361), 3),
                 (("EE", "EE-37", 588409), 2)]
    rows = []
    for day in DAYS:
        for (c, r, city), (v, pv, b, vs, d) in split(day, locations):
            rows.append((day, c, r, city, v, vs, d, b, pv))
    t["imported_locations"] = (
        ["date", "country", "region", "city", "visitors", "visits", "visit_duration",
         "bounces", "pageviews"],
        rows,
    )
    devices = [("Desktop", 6), ("Mobile", 3), ("Tablet", 1)]
    rows = []
    for day in DAYS:
        for dev, (v, pv, b, vs, d) in split(day, devices):
            rows.append((day, dev, v, vs, d, b, pv))
    t["imported_devices"] = (
        ["date", "device", "visitors", "visits", "visit_duration", "bounces", "pageviews"],
        rows,
    )
    browsers = [(("Chrome", "131"), 6), (("Safari", "18.1"), 3), (("Firefox", "133"), 1)]
    rows = []
    for day in DAYS:
        for (br, ver), (v, pv, b, vs, d) in split(day, browsers):
            rows.append((day, br, ver, v, vs, d, b, pv))
    t["imported_browsers"] = (
        ["date", "browser", "browser_version", "visitors", "visits", "visit_duration",
         "bounces", "pageviews"],
        rows,
    )
    oses = [(("Mac", "15.1"), 4), (("Windows", "11"), 3), (("iOS", "18.1"), 3)]
    rows = []
    for day in DAYS:
        for (os_, ver), (v, pv, b, vs, d) in split(day, oses):
            rows.append((day, os_, ver, v, vs, d, b, pv))
    t["imported_operating_systems"] = (
        ["date", "operating_system", "operating_system_version", "visitors", "visits",
         "visit_duration", "bounces", "pageviews"],
        rows,
    )
    rows = []
    for i, day in enumerate(DAYS):
        rows.append((day, "Signup", "", "/pricing", 4 + i, 5 + i))
        rows.append((day, "Outbound Link: Click", "https://github.com/", "/", 2, 2))
    t["imported_custom_events"] = (
        ["date", "name", "link_url", "path", "visitors", "events"],
        rows,
    )
    return t


def export_zip():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, (header, rows) in tables().items():
            info = zipfile.ZipInfo(f"{name}_{START}_{END}.csv", date_time=(2026, 11, 21, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, csv_text(header, rows))
    return buf.getvalue()


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "testing/plausible/export.zip"
    with open(out, "wb") as f:
        f.write(export_zip())
    print(out)
