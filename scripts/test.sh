#!/usr/bin/env bash
# Runs every test of the workspace, after making sure what the tests need is there.
#
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh -p sluice-operators   # extra arguments go to `cargo test`
#
# The tests need Rust, the golden data in ../shared/testdata (SPEC §1.3), osmem-server
# (installed from PyPI when missing), for the browser test Node.js, Debian's Chromium and
# playwright-core (installed from Debian's packages and the npm registry when missing), and a
# MariaDB server: the one on 127.0.0.1:3306 if it runs, else the machine's mariadbd started here,
# else mariadb-server installed from Debian's packages and started. Tests reach it through
# SLUICE_TEST_MYSQL_URL (set it yourself to use another server). Tests that stop and restart
# a server start private mariadbd processes of their own. Other servers the tests talk to
# (the Firehose simulator, an SSE gateway) are started by the tests on loopback. The Prometheus
# sink's tests run private `prometheus` processes (Debian's package, installed when missing;
# the tests find it through SLUICE_TEST_PROMETHEUS_BIN), each on a free loopback port with its
# own temporary TSDB; the service the package installs is never used.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared/testdata ]; then
  echo "error: ../shared/testdata is missing: the golden envelopes live beside this repository (see README)." >&2
  exit 2
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

mysql_url_works() {
  local url=$1 rest user pass hostport
  rest=${url#mysql://}
  user=${rest%%@*}
  hostport=${rest#*@}
  pass=""
  if [[ $user == *:* ]]; then pass=${user#*:}; user=${user%%:*}; fi
  mariadb --protocol=tcp -h "${hostport%%:*}" -P "${hostport##*:}" -u "$user" ${pass:+-p"$pass"} \
    -e 'SELECT 1' >/dev/null 2>&1
}

ensure_mariadb() {
  if [ -n "${SLUICE_TEST_MYSQL_URL:-}" ]; then
    return
  fi
  local url="mysql://root@127.0.0.1:3306"
  if command -v mariadb >/dev/null && mysql_url_works "$url"; then
    export SLUICE_TEST_MYSQL_URL=$url
    return
  fi
  if [ ! -x /usr/sbin/mariadbd ] || ! command -v mariadb-install-db >/dev/null; then
    echo "==> installing mariadb-server from Debian's packages" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server mariadb-client
  fi
  echo "==> starting mariadbd" >&2
  as_root mkdir -p /run/mysqld
  as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 120); do
    if as_root mariadb -e 'SELECT 1' >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
  if mysql_url_works "$url"; then
    export SLUICE_TEST_MYSQL_URL=$url
    return
  fi
  # Debian's root authenticates by unix socket only: give the tests a user of their own.
  as_root mariadb -e "CREATE USER IF NOT EXISTS 'sluice_test'@'127.0.0.1' IDENTIFIED BY 'sluice_test';
    CREATE USER IF NOT EXISTS 'sluice_test'@'localhost' IDENTIFIED BY 'sluice_test';
    GRANT ALL PRIVILEGES ON *.* TO 'sluice_test'@'127.0.0.1';
    GRANT ALL PRIVILEGES ON *.* TO 'sluice_test'@'localhost';"
  url="mysql://sluice_test:sluice_test@127.0.0.1:3306"
  if ! mysql_url_works "$url"; then
    echo "error: MariaDB is running but $url cannot connect; set SLUICE_TEST_MYSQL_URL" >&2
    exit 2
  fi
  export SLUICE_TEST_MYSQL_URL=$url
}

# The Elasticsearch sink's tests run against osmem-server (PyPI), an in-memory
# OpenSearch-compatible server, behind a fault-injecting proxy of the tests' own.
ensure_osmem() {
  if [ -n "${OSMEM_SERVER_BIN:-}" ]; then
    return
  fi
  if ! python3 -c 'import osmem_server' 2>/dev/null; then
    echo "==> installing osmem-server from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check 'osmem-server>=0.1.6,<0.2'
  fi
  OSMEM_SERVER_BIN=$(python3 -c 'import osmem_server; print(osmem_server.resolve_binary())')
  export OSMEM_SERVER_BIN
}

# The web UI's browser test drives Debian's Chromium with playwright-core (never a browser
# download: the machine's network is closed to those).
ensure_browser() {
  local packages=()
  command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
  [ -x /usr/bin/chromium ] || packages+=(chromium)
  if [ ${#packages[@]} -gt 0 ]; then
    echo "==> installing ${packages[*]} from Debian's packages" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
  fi
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "==> installing playwright-core (tests/browser) from the npm registry" >&2
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
  fi
}

# The Prometheus sink's tests: Debian's Prometheus (2.42 on Debian 12), run by the tests
# themselves with the remote-write receiver on.
ensure_prometheus() {
  if [ -n "${SLUICE_TEST_PROMETHEUS_BIN:-}" ]; then
    return
  fi
  if ! command -v prometheus >/dev/null; then
    echo "==> installing prometheus from Debian's packages" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
  fi
  SLUICE_TEST_PROMETHEUS_BIN=$(command -v prometheus)
  export SLUICE_TEST_PROMETHEUS_BIN
}

ensure_mariadb
ensure_osmem
ensure_browser
ensure_prometheus
echo "==> osmem-server: $("$OSMEM_SERVER_BIN" -version 2>&1 | head -1)" >&2
echo "==> MariaDB for tests at ${SLUICE_TEST_MYSQL_URL#*@}" >&2
echo "==> browser: $(/usr/bin/chromium --version 2>/dev/null | head -1), node $(node --version)" >&2
echo "==> $("$SLUICE_TEST_PROMETHEUS_BIN" --version 2>&1 | head -1)" >&2

cargo test --workspace --all-targets --locked --no-fail-fast "$@"
