#!/usr/bin/env bash
# Compile firmware/gate_controller for an Arduino Uno (ATmega328P) with the Debian/Ubuntu Arduino AVR core
# (apt-get install arduino-core-avr: avr-gcc, avr-libc and the core sources). arduino-cli does the same with
#   arduino-cli compile --fqbn arduino:avr:uno firmware/gate_controller
# Usage: firmware/build.sh [OUT_DIR]   -> OUT_DIR/gate_controller.hex (default: a temporary folder)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
core=/usr/share/arduino/hardware/arduino/avr
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
command -v avr-g++ >/dev/null || { echo "avr-g++ not found: apt-get install arduino-core-avr" >&2; exit 2; }
[ -d "$core/cores/arduino" ] || { echo "$core missing: apt-get install arduino-core-avr" >&2; exit 2; }

mcu=atmega328p
defs="-DF_CPU=16000000L -DARDUINO=10807 -DARDUINO_AVR_UNO -DARDUINO_ARCH_AVR"
inc="-I$core/cores/arduino -I$core/variants/standard"
cflags="-Os -g -w -ffunction-sections -fdata-sections -mmcu=$mcu $defs $inc"
cxxflags="$cflags -std=gnu++11 -fpermissive -fno-exceptions -fno-threadsafe-statics -flto"

objs=()
for src in "$core"/cores/arduino/*.c; do
  o="$out/$(basename "$src").o"; avr-gcc $cflags -flto -c "$src" -o "$o"; objs+=("$o")
done
for src in "$core"/cores/arduino/*.cpp; do
  # Debian's core 1.8.7 expects avr-gcc 7 (DECIMAL_DIG in WString.cpp); its avr-gcc 5.4 lacks it. On AVR a
  # double is 32 bits: 9 significant digits.
  o="$out/$(basename "$src").o"; avr-g++ $cxxflags -DDECIMAL_DIG=9 -c "$src" -o "$o"; objs+=("$o")
done
avr-gcc -x assembler-with-cpp $cflags -c "$core/cores/arduino/wiring_pulse.S" -o "$out/wiring_pulse.S.o"
objs+=("$out/wiring_pulse.S.o")
# the sketch: Arduino.h is included by the sketch itself
cp "$here/gate_controller/gate_controller.ino" "$out/gate_controller.cpp"
avr-g++ $cxxflags -Wall -Wextra -c "$out/gate_controller.cpp" -o "$out/gate_controller.o" 2> "$out/warnings.txt" || {
  cat "$out/warnings.txt" >&2; exit 1; }
avr-gcc -Os -flto -fuse-linker-plugin -Wl,--gc-sections -mmcu=$mcu -o "$out/gate_controller.elf" \
  "$out/gate_controller.o" "${objs[@]}" -lm
avr-objcopy -O ihex -R .eeprom "$out/gate_controller.elf" "$out/gate_controller.hex"
avr-size -C --mcu=$mcu "$out/gate_controller.elf" 2>/dev/null || avr-size "$out/gate_controller.elf"
echo "built $out/gate_controller.hex"
