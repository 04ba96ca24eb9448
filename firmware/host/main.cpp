// Host build of the gate controller sketch: setup() once, loop() until SIGTERM. See include/Arduino.h.
#include <signal.h>

#include "Arduino.h"

HostSerial Serial;
void setup();
void loop();

static volatile sig_atomic_t stop_requested = 0;
static void on_term(int) { stop_requested = 1; }

int main() {
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  setvbuf(stderr, NULL, _IOLBF, 0);
  setup();
  while (!stop_requested) {
    loop();
    usleep(200);  // a 5 kHz loop: fire times within a fraction of a millisecond
  }
  return 0;
}
