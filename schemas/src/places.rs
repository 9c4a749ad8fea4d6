//! Places as Veil stores them: a GeoIP region with its ISO 3166-2 code and a city with its
//! GeoNames id, in the `region` and `city` String columns of `events`, `events_tail`,
//! `visits`, `open_visits` and the daily rollup's `value`.
//!
//! # Wire format of the stored value
//!
//! | stored | meaning | `visit:region` / `visit:city` | `visit:region_name` / `visit:city_name` |
//! | --- | --- | --- | --- |
//! | `DE-BY\|Bavaria` | code and English name | `DE-BY` | `Bavaria` |
//! | `2867714\|Munich` | GeoNames id and English name | `2867714` | `Munich` |
//! | `Bavaria` | name only: no code known (rows stored before codes, unmapped names) | `Bavaria` | `Bavaria` |
//! | `DE-BY` | code only (rows a MaxMind file gave before names were kept) | `DE-BY` | `DE-BY` |
//! | empty | unknown | empty | empty |
//!
//! The part before the first `|` is the code (or id), the rest the name; a value without `|`
//! is both. GeoIP names never contain `|` ([`encode`] drops one if a file had it). Keeping
//! both in one column needs no new column in the tables above nor in the spool's row codec,
//! no rewrite of the `events_tail` materialized view, and the daily rollup's one `value`
//! carries both, so a breakdown by code and one by name group the same rows; the aggregator
//! splits the value in SQL (`aggregator/src/query/labels.rs`).
//!
//! # Where codes and ids come from
//!
//! - A MaxMind GeoIP2/GeoLite2-City record carries them: `subdivisions[0].iso_code` and
//!   `city.geoname_id` (with `names.en`).
//! - ip-location-db's files (the default, `make geoip`) carry English names only; the table
//!   `schemas/data/places.tsv` (made by `scripts/geoip/places.py`, sources and licences in
//!   `schemas/data/PLACES-NOTICE.md`) maps their exact `state1` and `city` strings to codes and
//!   ids ([`region_code`], [`city_id`]). A name the table does not know is stored alone.
//!
//! # The table's format
//!
//! Lines starting with `#` are comments; the others are tab-separated:
//! - `R  CC  STATE1  CODE` — a region name of country CC and its ISO 3166-2 code (`DE-BY`);
//! - `C  CC  STATE1  CITY  GEONAMEID` — a city (STATE1 may be empty) and its GeoNames id;
//! - `N  CODE  NAME` — an English name for a code.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The table, compiled in (about 2–3 MB).
const TABLE: &str = include_str!("../data/places.tsv");

/// The separator between a code (or id) and a name in a stored value.
pub const SEP: char = '|';

struct Table {
    regions: HashMap<(&'static str, &'static str), &'static str>,
    cities: HashMap<(&'static str, &'static str, &'static str), u32>,
    names: HashMap<&'static str, &'static str>,
    city_names: HashMap<u32, &'static str>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| parse(TABLE))
}

fn parse(text: &'static str) -> Table {
    let mut t = Table {
        regions: HashMap::new(),
        cities: HashMap::new(),
        names: HashMap::new(),
        city_names: HashMap::new(),
    };
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let f: Vec<&'static str> = line.split('\t').collect();
        match *f.as_slice() {
            ["R", cc, state1, code] => {
                t.regions.insert((cc, state1), code);
            }
            ["C", cc, state1, city, id] => {
                if let Ok(id) = id.parse() {
                    t.cities.insert((cc, state1, city), id);
                    t.city_names.entry(id).or_insert(city);
                }
            }
            ["N", code, name] => {
                t.names.insert(code, name);
            }
            // A line of another kind (a newer table read by an older build) is skipped.
            _ => {}
        }
    }
    t
}

/// Parses the table now (it is otherwise parsed on first use; the collector calls this at start
/// so no request waits for it). Returns the number of region and city entries.
pub fn load() -> (usize, usize) {
    let t = table();
    (t.regions.len(), t.cities.len())
}

/// The ISO 3166-2 code of region `state1` of country `cc`, as ip-location-db names it.
pub fn region_code(cc: &str, state1: &str) -> Option<&'static str> {
    table().regions.get(&(cc, state1)).copied()
}

/// The GeoNames id of `city` in region `state1` (possibly empty) of country `cc`, as
/// ip-location-db names them.
pub fn city_id(cc: &str, state1: &str, city: &str) -> Option<u32> {
    table().cities.get(&(cc, state1, city)).copied()
}

/// An English name for ISO 3166-2 code `code`.
pub fn region_name(code: &str) -> Option<&'static str> {
    table().names.get(code).copied()
}

/// The English name of the city with GeoNames id `id`, as ip-location-db names it.
pub fn city_name(id: u32) -> Option<&'static str> {
    table().city_names.get(&id).copied()
}

/// The stored value for a code (or id) and a name (see the module docs): `code|name`, the name
/// alone without a code, the code alone without a name.
pub fn encode(code: &str, name: &str) -> String {
    let name = name.replace(SEP, " ");
    match (code.is_empty(), name.is_empty()) {
        (false, false) => format!("{code}{SEP}{name}"),
        (true, _) => name,
        (false, true) => code.to_string(),
    }
}

/// The stored region for a record of ip-location-db's files: its code from the table when
/// known.
pub fn region_value(cc: &str, state1: &str) -> String {
    encode(region_code(cc, state1).unwrap_or_default(), state1)
}

/// The stored city for a record of ip-location-db's files: its GeoNames id from the table
/// when known.
pub fn city_value(cc: &str, state1: &str, city: &str) -> String {
    match city_id(cc, state1, city) {
        Some(id) => encode(&id.to_string(), city),
        None => encode("", city),
    }
}

/// A stored value's code (or id) and name (see the module docs).
pub fn decode(stored: &str) -> (&str, &str) {
    match stored.split_once(SEP) {
        Some((code, name)) => (code, name),
        None => (stored, stored),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_places_have_codes_and_ids() {
        assert_eq!(region_code("DE", "Bavaria"), Some("DE-BY"));
        assert_eq!(region_code("US", "California"), Some("US-CA"));
        assert_eq!(region_code("GB", "England"), Some("GB-ENG"));
        assert_eq!(city_id("DE", "Bavaria", "Munich"), Some(2867714));
        assert_eq!(city_id("GB", "England", "London"), Some(2643743));
        assert_eq!(city_id("US", "California", "San Francisco"), Some(5391959));
        assert_eq!(region_name("DE-BY"), Some("Bavaria"));
        assert_eq!(city_name(2867714), Some("Munich"));
        // Same name, another country: no code of the first.
        assert_eq!(region_code("US", "Bavaria"), None);
    }

    #[test]
    fn stored_values_round_trip() {
        assert_eq!(region_value("DE", "Bavaria"), "DE-BY|Bavaria");
        assert_eq!(city_value("DE", "Bavaria", "Munich"), "2867714|Munich");
        assert_eq!(region_value("ZZ", "Nowhere"), "Nowhere");
        assert_eq!(city_value("DE", "Bavaria", ""), "");
        assert_eq!(encode("DE-BY", ""), "DE-BY");
        assert_eq!(encode("", ""), "");
        assert_eq!(encode("1", "A|B"), "1|A B");
        assert_eq!(decode("DE-BY|Bavaria"), ("DE-BY", "Bavaria"));
        assert_eq!(decode("Bavaria"), ("Bavaria", "Bavaria"));
        assert_eq!(decode(""), ("", ""));
    }

    #[test]
    fn every_table_line_is_well_formed() {
        let mut rows = 0;
        for line in TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["R", cc, _, code] => {
                    assert_eq!(cc.len(), 2, "{line}");
                    assert!(code.starts_with(&format!("{cc}-")), "{line}");
                }
                ["C", cc, _, city, id] => {
                    assert_eq!(cc.len(), 2, "{line}");
                    assert!(!city.is_empty(), "{line}");
                    assert!(id.parse::<u32>().is_ok_and(|i| i > 0), "{line}");
                }
                ["N", code, name] => assert!(code.contains('-') && !name.is_empty(), "{line}"),
                _ => panic!("malformed line: {line:?}"),
            }
            assert!(!line.contains(SEP), "{line}");
            rows += 1;
        }
        assert!(rows > 50_000, "{rows} rows");
        let (regions, cities) = load();
        assert!(
            regions > 3_000 && cities > 50_000,
            "{regions} regions, {cities} cities"
        );
    }
}
