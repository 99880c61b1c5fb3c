#!/usr/bin/env bash
# A virtual CAN interface for a bench without hardware (Linux with the vcan module).
#   sudo deploy/vcan-setup.sh [NAME]      (default vcan0)
# Then: pack-agent simulate --bus-interface socketcan --channel vcan0
#       and the agent with interface = "socketcan", channel = "vcan0".
# Check with can-utils: candump vcan0
set -euo pipefail
name=${1:-vcan0}
if ! modprobe vcan 2>/dev/null && ! grep -qw vcan /proc/modules; then
  echo "vcan-setup: the vcan kernel module is not available on this kernel" >&2
  echo "  (containers often lack it: use interface = \"localbus\" instead, see docs/operations.md)" >&2
  exit 1
fi
if ! ip link show "$name" >/dev/null 2>&1; then
  ip link add dev "$name" type vcan
fi
ip link set up "$name"
ip -details link show "$name"
