// Arduino.h stand-in: builds the gate controller sketch as a PC program, so the tests can run the real
// firmware logic against the inspector over a pty. Serial is the file descriptor in $GATE_FD (a pty master),
// millis() is CLOCK_MONOTONIC, and every pin change is printed to stderr as "PIN <pin> <value> <ns>" with the
// same monotonic clock the inspector stamps its parts with.
#pragma once
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HIGH 1
#define LOW 0
#define INPUT 0
#define OUTPUT 1
#define INPUT_PULLUP 2
#define RISING 3
#define LED_BUILTIN 13
#define digitalPinToInterrupt(p) (p)

static inline uint64_t host_now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static inline uint32_t millis() { return (uint32_t)(host_now_ns() / 1000000ull); }
static inline void pinMode(uint8_t, uint8_t) {}
static int host_pins[64];
static inline void digitalWrite(uint8_t pin, int v) {
  if (host_pins[pin] != v + 1) {  // +1: the first write of each pin is always reported
    host_pins[pin] = v + 1;
    fprintf(stderr, "PIN %u %d %llu\n", pin, v, (unsigned long long)host_now_ns());
  }
}
static inline void attachInterrupt(int, void (*)(void), int) {}
static inline void noInterrupts() {}
static inline void interrupts() {}

static inline char *host_utoa(unsigned long v, char *s, int base) {
  (void)base;
  snprintf(s, 12, "%u", (unsigned)(uint32_t)v);  // AVR longs are 32 bits: the sketch sizes buffers so
  return s;
}
static inline char *ltoa(long v, char *s, int base) {
  (void)base;
  snprintf(s, 12, "%d", (int)(int32_t)v);
  return s;
}
static inline char *utoa(unsigned v, char *s, int base) { return host_utoa(v, s, base); }
static inline char *ultoa(unsigned long v, char *s, int base) { return host_utoa(v, s, base); }

class HostSerial {
 public:
  void begin(uint32_t) {
    const char *fd = getenv("GATE_FD");
    fd_ = fd ? atoi(fd) : 0;
  }
  int available() {
    if (head_ == tail_) {
      ssize_t n = ::read(fd_, buf_, sizeof(buf_));  // non-blocking fd
      if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) gone_ = true;
        return 0;
      }
      head_ = 0;
      tail_ = (int)n;
    }
    return tail_ - head_;
  }
  int read() { return available() ? (unsigned char)buf_[head_++] : -1; }
  int availableForWrite() { return 4096; }  // a pty: the kernel buffers what the host has not read yet
  size_t write(uint8_t c) { return write(&c, 1); }
  size_t write(const uint8_t *p, size_t n) { return ::write(fd_, p, n) < 0 ? 0 : n; }
  bool gone_ = false;

 private:
  int fd_ = 0;
  char buf_[256];
  int head_ = 0, tail_ = 0;
};
extern HostSerial Serial;
