#!/usr/bin/env bash
# Checks the systemd unit: `systemd-analyze verify` must print nothing (it
# exits 0 on unknown keys, so any output fails), the hardening an operator
# expects must be there, and `systemd-analyze security` must rate the
# instance's exposure at most 2.0 ("OK"). Usage: deploy/verify.sh BINARY
# (the georelay binary the unit's ExecStart is pointed at for the check).
set -euo pipefail
binary="$(realpath "${1:?usage: deploy/verify.sh path/to/georelay}")"
cd "$(dirname "$0")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unit="$work/georelay@eu-fra-1.service"
sed "s|/usr/local/bin/georelay|$binary|g" georelay@.service > "$unit"

output="$(systemd-analyze verify "$unit" 2>&1)" || { echo "$output"; exit 1; }
if [ -n "$output" ]; then
    echo "systemd-analyze verify is not silent:" >&2
    echo "$output" >&2
    exit 1
fi

for directive in LimitCORE=0 NoNewPrivileges=yes ProtectSystem=strict 'CapabilityBoundingSet=' \
    'AmbientCapabilities=' PrivateTmp=yes ProtectHome=yes 'StateDirectory=georelay' \
    RestrictSUIDSGID=yes MemoryDenyWriteExecute=yes 'SystemCallFilter=@system-service'; do
    if ! grep -qx -- "$directive.*" "$unit"; then
        echo "georelay@.service lacks $directive" >&2
        exit 1
    fi
done
if grep -Eq '^(ReadWritePaths|CapabilityBoundingSet=.+|AmbientCapabilities=.+)' "$unit"; then
    echo "georelay@.service grants more than the state directory or a capability" >&2
    exit 1
fi

systemd-analyze security --offline=true --threshold=20 "$unit" | tail -n 1
echo "deploy/georelay@.service: ok"
