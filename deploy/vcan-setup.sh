#!/bin/sh
# A virtual CAN interface for a bench without hardware (run as root).
#   deploy/vcan-setup.sh [vcan0]
# Then: pack-agent simulate --bus-interface socketcan --channel vcan0 --scenario ageing
#       and in the agent's configuration: interface = "socketcan", channel = "vcan0".
set -eu
IFACE="${1:-vcan0}"
modprobe vcan
if ! ip link show "$IFACE" >/dev/null 2>&1; then
    ip link add dev "$IFACE" type vcan
fi
ip link set up "$IFACE"
ip -details link show "$IFACE"
