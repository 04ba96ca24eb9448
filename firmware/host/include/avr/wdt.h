// avr/wdt.h stand-in for the host build: the hardware watchdog does nothing on a PC.
#pragma once
#define WDTO_250MS 0
static inline void wdt_enable(int) {}
static inline void wdt_disable() {}
static inline void wdt_reset() {}
