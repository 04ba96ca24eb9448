#!/usr/bin/env bash
# Build the gate controller firmware for the ATmega328P (firmware/build.sh) and the simavr harness that runs it
# (gate_emu.c), into OUT (default: a temporary folder). Needs arduino-core-avr, simavr's library and headers
# and a C compiler: apt-get install arduino-core-avr libsimavr-dev gcc
# Usage: firmware/emu/build.sh [OUT_DIR]  -> OUT_DIR/gate_controller.elf, OUT_DIR/gate_emu
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
command -v gcc >/dev/null || { echo "gcc not found: apt-get install gcc" >&2; exit 2; }
[ -f /usr/include/simavr/sim_avr.h ] || { echo "simavr headers missing: apt-get install libsimavr-dev" >&2; exit 2; }
"$here/../build.sh" "$out" >/dev/null
gcc -O2 -Wall -Wextra -std=gnu11 -I/usr/include/simavr "$here/gate_emu.c" -o "$out/gate_emu" -lsimavr -lutil
echo "built $out/gate_controller.elf $out/gate_emu"
