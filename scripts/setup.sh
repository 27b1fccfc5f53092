#!/usr/bin/env bash
# Installs what tuxburst and its tests need on a fresh Debian/Ubuntu machine:
# Deno (pinned, from npm) and the tools the end-to-end tests drive.
# Run as root: sudo bash scripts/setup.sh
set -euo pipefail

DENO_VERSION=2.9.6
APT_PACKAGES=(iproute2 nftables iputils-ping tcpdump iperf3 util-linux mptcpize wireguard-go wireguard-tools openvpn openssl libsodium23)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (sudo bash scripts/setup.sh)" >&2
  exit 1
fi

if ! command -v deno >/dev/null 2>&1 || [ "$(deno --version | awk 'NR==1 {print $2}')" != "$DENO_VERSION" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup.sh: npm is needed to install Deno $DENO_VERSION (apt-get install npm)" >&2
    exit 1
  fi
  npm install -g "deno@$DENO_VERSION"
fi
echo "deno: $(deno --version | head -n 1)"

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "packages: ${APT_PACKAGES[*]} present"

# Fetch the npm dependencies now, so the tests start without waiting on the registry.
cd "$(dirname "$0")/.."
deno install --quiet
