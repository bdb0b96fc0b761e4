#!/usr/bin/env bash
# Installs what GovCA needs on a Debian/Ubuntu machine: SoftHSM 2 and tools (apt, when root),
# the .venv with the project, and (with --instance) the embedded instance with demo data.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0; want_instance=0
for a in "$@"; do
  case "$a" in
    --test) want_test=1 ;;
    --instance) want_instance=1 ;;
    *) echo "bootstrap: unknown option $a" >&2; exit 2 ;;
  esac
done

# 1. System packages. softhsm2: the embedded HSM; opensc: pkcs11-tool (operators' checks);
#    openssl: independent verification in tests. Browser tests need chromium.
pkgs=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || [ -n "${GOVCA_PKCS11_MODULE:-}" ] || pkgs+=(softhsm2)
command -v softhsm2-util >/dev/null || pkgs+=(softhsm2)
command -v pkcs11-tool >/dev/null || pkgs+=(opensc)
command -v openssl >/dev/null || pkgs+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
if [ "$want_test" = 1 ]; then
  command -v chromium >/dev/null || pkgs+=(chromium)
fi
if [ "${#pkgs[@]}" -gt 0 ]; then
  # shellcheck disable=SC2207
  pkgs=($(printf '%s\n' "${pkgs[@]}" | sort -u))
  if [ "$(id -u)" = 0 ]; then
    echo ">> installing system packages: ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${pkgs[@]}" >/dev/null
  else
    echo "GovCA needs these system packages. Run, then try again:" >&2
    echo "    sudo apt-get install -y ${pkgs[*]}" >&2
    exit 1
  fi
fi

# 2. The virtual environment with the project installed (editable), re-run when setup.cfg changes.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || { echo ">> creating .venv"; "$PY" -m venv .venv; }
stamp=.venv/.govca-installed
extra=""; [ "$want_test" = 1 ] && extra="[test]"
need_install=0
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then need_install=1
elif [ "$want_test" = 1 ] && ! grep -qx "extras=\[test\]" "$stamp"; then need_install=1; fi
if [ "$need_install" = 1 ]; then
  echo ">> installing GovCA into .venv"
  log=$(mktemp)
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e ".$extra"; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; echo "bootstrap: pip install failed" >&2; exit 1
  fi
  rm -f "$log"
  echo "extras=$extra" > "$stamp"
fi

# 3. The embedded instance: SoftHSM token, database, CA hierarchy and demo data (idempotent).
if [ "$want_instance" = 1 ]; then
  .venv/bin/govca instance init
  .venv/bin/govca db upgrade
  .venv/bin/govca demo init
fi
