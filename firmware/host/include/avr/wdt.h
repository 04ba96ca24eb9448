// avr/wdt.h stand-in for the host build: the hardware watchdog does nothing on a PC.
#pragma once
#include <stdint.h>
#define WDTO_250MS 0
static inline void wdt_enable(int) {}
static inline void wdt_disable() {}
static inline void wdt_reset() {}
// the reset-cause register: a PC program always starts from power-on
static uint8_t MCUSR = 0;
#define WDRF 3
#ifndef _BV
#define _BV(bit) (1 << (bit))
#endif
