#!/usr/bin/env python3
"""Writes dashboards/web/vendor/countries-110m.json: the world map of the dashboard's Locations
panel ("Map" tab), from npm `world-atlas@2.0.2` (countries-110m.json: Natural Earth's 1:110m
countries, public domain, as TopoJSON; the package is ISC, Mike Bostock) with each country's
`id` turned from its ISO 3166-1 numeric code into the alpha-2 code the Stats API answers
(`visit:country`), by Debian's iso-codes (LGPL-2.1-or-later; /usr/share/iso-codes/json/
iso_3166-1.json). Kosovo (no numeric code in the atlas) is `XK`, as GeoIP databases write it;
features with neither (Northern Cyprus, Somaliland) keep no id and are drawn without data.

The drawing libraries beside it are npm's builds, copied unchanged: d3-array@3.2.4 and
d3-geo@3.1.1 (`dist/*.min.js`, ISC) and topojson-client@3.1.0 (`dist/topojson-client.min.js`,
ISC); their licences are in dashboards/web/vendor/d3.LICENSE.

Usage: python3 scripts/vocab/world_map.py WORLD_ATLAS_DIR [ISO_3166-1.json] > dashboards/web/vendor/countries-110m.json
       (WORLD_ATLAS_DIR: the unpacked package, e.g. from `npm pack world-atlas@2.0.2`)
"""
import json
import sys

atlas = json.load(open(sys.argv[1] + "/countries-110m.json", encoding="utf-8"))
iso = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/iso-codes/json/iso_3166-1.json"
numeric = {e["numeric"]: e["alpha_2"] for e in json.load(open(iso, encoding="utf-8"))["3166-1"]}
for g in atlas["objects"]["countries"]["geometries"]:
    name = g.get("properties", {}).get("name", "")
    code = numeric.get(g.get("id", ""), "XK" if name == "Kosovo" else "")
    g.pop("id", None)
    if code:
        g["id"] = code
    g["properties"] = {}
json.dump(atlas, sys.stdout, separators=(",", ":"))
