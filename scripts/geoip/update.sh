#!/usr/bin/env bash
# Fetches current GeoIP databases from a source that keeps publishing them and installs them
# with `veil geoip install` (docs/GEOIP.md, "Keeping the data current"):
#
#   dbip     DB-IP Lite City + ASN: free, no account, CC BY 4.0, a release on the 1st of each
#            month. Downloads $DBIP_BASE_URL/dbip-{city,asn}-lite-YYYY-MM.mmdb.gz for this
#            month, else last month's (early in a month the new one may not be out yet).
#   maxmind  MaxMind GeoLite2 (or GeoIP2) City + ASN with your own MaxMind account: runs
#            geoipupdate with your GeoIP.conf (AccountID, LicenseKey, EditionIDs
#            GeoLite2-City GeoLite2-ASN) into a temporary directory.
#
# Installing is checked and atomic (write aside, rename); a running collector picks the new
# files up within 30 s. A failed download leaves the installed files as they are.
#
# Usage: scripts/geoip/update.sh dbip|maxmind [GEOIP_DIR]
#   GEOIP_DIR        default: $VEIL_GEOIP_DIR, else ${VEIL_DATA_DIR:-./var}/geoip
#   VEIL             the veil binary (default: `veil` on PATH, else ./target/release/veil)
#   DBIP_BASE_URL    default https://download.db-ip.com/free (a mirror, or file:///DIR for tests)
#   DBIP_MONTH       YYYY-MM to fetch instead of this month / last month
#   GEOIPUPDATE_CONF default /etc/GeoIP.conf
set -euo pipefail
shopt -s inherit_errexit

usage() { echo "usage: $0 dbip|maxmind [GEOIP_DIR]" >&2; exit 2; }
source="${1:-}"
[ -n "$source" ] || usage
dir="${2:-${VEIL_GEOIP_DIR:-${VEIL_DATA_DIR:-./var}/geoip}}"

veil="${VEIL:-}"
if [ -z "$veil" ]; then
  if command -v veil >/dev/null 2>&1; then veil=veil
  elif [ -x ./target/release/veil ]; then veil=./target/release/veil
  else echo "geoip: no veil binary (set VEIL=/path/to/veil, or cargo build --release -p veil)" >&2; exit 1
  fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/veil-geoip.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

case "$source" in
  dbip)
    command -v curl >/dev/null 2>&1 || { echo "geoip: curl not found (apt-get install curl)" >&2; exit 1; }
    base="${DBIP_BASE_URL:-https://download.db-ip.com/free}"
    if [ -n "${DBIP_MONTH:-}" ]; then
      months="$DBIP_MONTH"
    else
      months="$(date -u +%Y-%m) $(date -u -d "$(date -u +%Y-%m-15) -1 month" +%Y-%m)"
    fi
    for db in city asn; do
      got=""
      for month in $months; do
        url="$base/dbip-$db-lite-$month.mmdb.gz"
        echo "geoip: downloading $url" >&2
        if curl -fsSL --retry 2 -o "$work/$db.mmdb.gz" "$url"; then got="$month"; break; fi
        echo "geoip: $url not available" >&2
      done
      [ -n "$got" ] || { echo "geoip: no DB-IP Lite $db database for $months; nothing changed" >&2; exit 1; }
      gzip -dc "$work/$db.mmdb.gz" > "$work/dbip-$db-lite-$got.mmdb"
      rm -f "$work/$db.mmdb.gz"
    done
    attribution='IP Geolocation by DB-IP (https://db-ip.com): DB-IP Lite databases, licensed under
CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).'
    ;;
  maxmind)
    command -v geoipupdate >/dev/null 2>&1 || {
      echo "geoip: geoipupdate not found (Debian: apt-get install geoipupdate; or https://github.com/maxmind/geoipupdate/releases)" >&2
      exit 1
    }
    conf="${GEOIPUPDATE_CONF:-/etc/GeoIP.conf}"
    [ -r "$conf" ] || { echo "geoip: cannot read $conf (AccountID, LicenseKey, EditionIDs GeoLite2-City GeoLite2-ASN)" >&2; exit 1; }
    geoipupdate -f "$conf" -d "$work"
    attribution='This product includes GeoLite2 Data created by MaxMind, available from
https://www.maxmind.com/.'
    ;;
  *) usage ;;
esac

shopt -s nullglob
files=("$work"/*.mmdb)
[ "${#files[@]}" -gt 0 ] || { echo "geoip: nothing was downloaded" >&2; exit 1; }
"$veil" --geoip-dir "$dir" geoip install "${files[@]}"
# One database from this source, the other kept: keep its attribution lines too.
kept=""
if [ "${#files[@]}" -lt 2 ] && [ -f "$dir/ATTRIBUTION.txt" ]; then kept="$(grep -v '^Details: ' "$dir/ATTRIBUTION.txt" || true)"; fi
{ printf '%s\n' "$attribution"; [ -z "$kept" ] || printf '%s\n' "$kept"; echo 'Details: docs/GEOIP.md.'; } > "$dir/.ATTRIBUTION.txt.new"
mv -f "$dir/.ATTRIBUTION.txt.new" "$dir/ATTRIBUTION.txt"
echo "geoip: $dir updated from $source in $(( $(date +%s) - started )) s"
