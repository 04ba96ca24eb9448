// Reference gate controller for the inspector's reject gate (docs/gate-protocol.md).
//
// Board: any AVR Arduino with a hardware UART (Uno / Nano: ATmega328P). Wiring:
//   DIVERTER_PIN  output, HIGH = diverter out (part goes to the reject bin)   -> relay / valve driver
//   LINE_RUN_PIN  output, HIGH = belt may run (fail-safe "stop" drops it)      -> line interlock relay
//   ENCODER_PIN   input, one pulse per encoder count (interrupt 0, pin 2)      -> optional belt encoder
//   LED_BUILTIN   lit while in fail-safe
//
// Behaviour: boots in fail-safe; the host configures it (CFG) and releases it (RUN). REJT schedules a
// diversion at a time on this board's millis() clock (the host learns it from our heartbeats), REJ N ms
// after receipt, REJE at an absolute encoder count. When no valid line arrives for
// link_timeout_ms it enters fail-safe (hold the diverter out, or stop the line) until the host sends RUN
// again; HOLD (the host cannot vouch for what reaches the gate: camera stalled, a reject not acknowledged)
// enters it too, until RUN. A full fire queue is refused (NAK FULL) and also enters fail-safe. The AVR watchdog resets a hung
// sketch, which boots in fail-safe again and reports ERR,RESET,WATCHDOG.
//
// Everything is non-blocking: loop() reads at most one line the UART has, fires what is due, sends heartbeats
// (a NAK the transmit buffer has no room for is dropped, see send_body).

#include <Arduino.h>
#include <avr/wdt.h>
#include <stdlib.h>
#include <string.h>

// ---- pins and defaults ---------------------------------------------------------------------------
const uint8_t DIVERTER_PIN = 7;
const uint8_t LINE_RUN_PIN = 8;
const uint8_t ENCODER_PIN = 2;
const uint32_t BAUD = 115200;

const uint8_t MAX_LINE = 80;   // bytes incl. '$' and '*CC'
const uint8_t QUEUE_SIZE = 48; // scheduled fires: >= the defect rate x belt travel time
const uint8_t RECENT_SIZE = 16; // part ids seen lately: a retried REJ is acknowledged, scheduled once

enum Mode : uint8_t { MODE_RUN, MODE_DIVERT, MODE_STOP };
const char *const MODE_NAMES[] = {"RUN", "DIVERT", "STOP"};

struct Fire {
  bool used;
  bool by_encoder;
  int32_t part;
  uint32_t at;       // millis() or encoder count
};

// ---- state ---------------------------------------------------------------------------------------
Mode fail_safe = MODE_DIVERT;   // what fail-safe means here: set by CFG
Mode mode = MODE_DIVERT;        // boot: fail-safe
uint32_t link_timeout_ms = 1000;
uint32_t heartbeat_ms = 200;
uint32_t pulse_ms = 50;

Fire queue_[QUEUE_SIZE];
int32_t recent[RECENT_SIZE];
uint8_t recent_next = 0;
uint8_t recent_count = 0;

char line[MAX_LINE + 1];
uint8_t line_len = 0;
bool in_line = false;

uint16_t tx_seq = 0;
uint32_t last_rx_ms = 0;
uint32_t next_hb_ms = 0;
uint32_t pulse_until_ms = 0;
bool pulse_active = false;

uint32_t fired = 0, late = 0, rx_errors = 0, failsafe_entries = 0, tx_dropped = 0;
volatile uint32_t encoder_count = 0;

// ---- CRC-8/SMBUS (poly 0x07, init 0) ------------------------------------------------------------
uint8_t crc8(const char *data, uint8_t len) {
  uint8_t crc = 0;
  for (uint8_t i = 0; i < len; i++) {
    crc ^= (uint8_t)data[i];
    for (uint8_t b = 0; b < 8; b++) crc = (crc & 0x80) ? (uint8_t)((crc << 1) ^ 0x07) : (uint8_t)(crc << 1);
  }
  return crc;
}

// ---- output --------------------------------------------------------------------------------------
// send("ACK,%u", ...) is avoided: no printf on AVR by default. Build the body in a buffer instead.
// Serial.write() waits while the 64-byte transmit buffer is full, holding up loop() (fires, the link watchdog,
// wdt_reset). A NAK answers input we could not use, and junk can arrive faster than NAKs (longer than the
// junk) drain: a NAK is sent only while it leaves TX_RESERVE bytes free, else dropped (the host tolerates a
// lost NAK: its ack timeout resends). Every other line is sent; with that room kept it rarely waits.
const uint8_t TX_RESERVE = 32;

void send_body(const char *body, bool droppable = false) {
  char out[MAX_LINE + 8];
  char seq[7];
  utoa(tx_seq, seq, 10);
  uint8_t n = 0;
  for (const char *p = seq; *p && n < MAX_LINE; p++) out[n++] = *p;
  out[n++] = ',';
  for (const char *p = body; *p && n < MAX_LINE - 4; p++) out[n++] = *p;
  if (droppable && Serial.availableForWrite() < n + 5 + TX_RESERVE) {  // '$' + body + '*CC' + '\n'
    tx_dropped++;
    return;
  }
  tx_seq++;
  uint8_t crc = crc8(out, n);
  static const char HEX_DIGITS[] = "0123456789ABCDEF";
  Serial.write('$');
  Serial.write((const uint8_t *)out, n);
  Serial.write('*');
  Serial.write(HEX_DIGITS[crc >> 4]);
  Serial.write(HEX_DIGITS[crc & 0x0F]);
  Serial.write('\n');
}

// Append helpers for building bodies
void add_str(char *buf, const char *s) { strncat(buf, s, MAX_LINE - strlen(buf) - 1); }
void add_long(char *buf, long v) {
  char tmp[12];
  ltoa(v, tmp, 10);
  add_str(buf, tmp);
}
void add_ulong(char *buf, unsigned long v) {
  char tmp[12];
  ultoa(v, tmp, 10);
  add_str(buf, tmp);
}

void send_ack(const char *seq) {
  char b[MAX_LINE] = "ACK,";
  add_str(b, seq);
  send_body(b);
}

void send_nak(const char *seq, const char *reason) {
  char b[MAX_LINE] = "NAK,";
  add_str(b, seq);
  add_str(b, ",");
  add_str(b, reason);
  send_body(b, true);
}

uint8_t queue_depth() {
  uint8_t n = 0;
  for (uint8_t i = 0; i < QUEUE_SIZE; i++) n += queue_[i].used;
  return n;
}

uint32_t encoder_now() {
  noInterrupts();
  uint32_t c = encoder_count;
  interrupts();
  return c;
}

// ---- modes and outputs ---------------------------------------------------------------------------
void apply_outputs(uint32_t now) {
  bool hold = (mode == MODE_DIVERT);
  bool pulse = pulse_active && (int32_t)(now - pulse_until_ms) < 0;
  if (!pulse) pulse_active = false;
  digitalWrite(DIVERTER_PIN, (hold || pulse) ? HIGH : LOW);
  digitalWrite(LINE_RUN_PIN, mode == MODE_STOP ? LOW : HIGH);
  digitalWrite(LED_BUILTIN, mode == MODE_RUN ? LOW : HIGH);
}

void set_mode(Mode m, const char *reason) {
  if (m == mode) return;
  if (m != MODE_RUN) failsafe_entries++;
  mode = m;
  apply_outputs(millis());
  char b[MAX_LINE] = "MODE,";
  add_str(b, MODE_NAMES[m]);
  add_str(b, ",");
  add_str(b, reason);
  send_body(b);
}

void fire(int32_t part, long late_ms) {
  uint32_t now = millis();
  pulse_active = true;
  pulse_until_ms = now + pulse_ms;  // a second part inside the pulse extends it
  apply_outputs(now);
  fired++;
  if (late_ms > 0) late++;
  char b[MAX_LINE] = "FIRED,";
  add_long(b, part);
  add_str(b, ",");
  add_long(b, late_ms > 0 ? late_ms : 0);
  send_body(b);
}

// ---- commands ------------------------------------------------------------------------------------
bool parse_long(const char *s, long *out) {
  if (!s || !*s) return false;
  char *end;
  *out = strtol(s, &end, 10);
  return *end == '\0';
}

bool parse_ulong(const char *s, uint32_t *out) {
  if (!s || !*s || *s == '-') return false;
  char *end;
  *out = strtoul(s, &end, 10);
  return *end == '\0';
}

bool seen_recently(int32_t part) {
  for (uint8_t i = 0; i < recent_count; i++)
    if (recent[i] == part) return true;
  return false;
}

void remember(int32_t part) {
  recent[recent_next] = part;
  recent_next = (recent_next + 1) % RECENT_SIZE;
  if (recent_count < RECENT_SIZE) recent_count++;
}

// fields[0] = seq, fields[1] = type, fields[2..] = arguments
void handle(char **f, uint8_t nf, uint32_t rx_ms) {
  const char *seq = f[0];
  const char *type = f[1];
  if (strcmp(type, "HB") == 0) {
    if (nf != 3) send_nak(seq, "SYNTAX");
    return;  // heartbeats are not acknowledged; the controller's own HB answers
  }
  if (strcmp(type, "REJ") == 0 || strcmp(type, "REJT") == 0 || strcmp(type, "REJE") == 0) {
    long part, value = 0;
    uint32_t at = 0;
    bool by_enc = type[3] == 'E', by_clock = type[3] == 'T';
    bool ok = nf == 4 && parse_long(f[2], &part);
    if (ok && (by_enc || by_clock)) ok = parse_ulong(f[3], &at);
    else if (ok) ok = parse_long(f[3], &value);
    if (!ok) return send_nak(seq, "SYNTAX");
    if (!seen_recently(part)) {
      if (!by_enc) {
        if (!by_clock) at = rx_ms + (uint32_t)value;
        long ahead = (int32_t)(at - rx_ms);
        if (ahead <= 0) {  // late: fire now (the part may still be in the gate's window)
          remember(part);
          fire(part, -ahead);
          return send_ack(seq);
        }
      }
      int8_t slot = -1;
      for (uint8_t i = 0; i < QUEUE_SIZE; i++)
        if (!queue_[i].used) { slot = i; break; }
      if (slot < 0) {
        set_mode(fail_safe, "QUEUE_FULL");
        return send_nak(seq, "FULL");
      }
      remember(part);
      queue_[slot].used = true;
      queue_[slot].by_encoder = by_enc;
      queue_[slot].part = part;
      queue_[slot].at = at;
    }
    return send_ack(seq);
  }
  if (strcmp(type, "CFG") == 0) {
    long t, p, h;
    if (nf != 6 || !parse_long(f[3], &t) || !parse_long(f[4], &p) || !parse_long(f[5], &h))
      return send_nak(seq, "SYNTAX");
    if ((strcmp(f[2], "D") != 0 && strcmp(f[2], "S") != 0) || t <= 0 || p <= 0 || h <= 0)
      return send_nak(seq, "RANGE");
    fail_safe = f[2][0] == 'D' ? MODE_DIVERT : MODE_STOP;
    link_timeout_ms = t;
    pulse_ms = p;
    heartbeat_ms = h;
    if (mode != MODE_RUN) { mode = fail_safe; apply_outputs(millis()); }
    return send_ack(seq);
  }
  if (strcmp(type, "RUN") == 0) {
    if (nf != 2) return send_nak(seq, "SYNTAX");
    set_mode(MODE_RUN, "HOST");
    return send_ack(seq);
  }
  if (strcmp(type, "HOLD") == 0) {  // HOLD,<reason>: the host cannot vouch for parts; fail-safe until RUN
    if (nf != 3 || !*f[2]) return send_nak(seq, "SYNTAX");
    set_mode(fail_safe, "HOST_HOLD");  // never refused: it needs no queue slot
    return send_ack(seq);
  }
  if (strcmp(type, "ST?") == 0) {
    send_ack(seq);
    char b[MAX_LINE] = "ST,";
    add_str(b, MODE_NAMES[mode]); add_str(b, ",");
    add_ulong(b, queue_depth()); add_str(b, ",");
    add_ulong(b, fired); add_str(b, ",");
    add_ulong(b, late); add_str(b, ",");
    add_ulong(b, rx_errors); add_str(b, ",");
    add_ulong(b, failsafe_entries);
    return send_body(b);
  }
  send_nak(seq, "UNKNOWN");
}

void process_line(uint32_t rx_ms) {
  // line = "$SEQ,TYPE,...*CC"
  if (line_len < 5 || line[line_len - 3] != '*') { rx_errors++; return send_nak("?", "SYNTAX"); }
  char *cc = &line[line_len - 2];
  char *end;
  line[line_len] = '\0';
  long want = strtol(cc, &end, 16);
  if (*end != '\0') { rx_errors++; return send_nak("?", "SYNTAX"); }
  uint8_t body_len = line_len - 4;  // between '$' and '*'
  if (crc8(&line[1], body_len) != (uint8_t)want) { rx_errors++; return send_nak("?", "CRC"); }
  last_rx_ms = rx_ms;  // any line with a good checksum proves the link
  line[line_len - 3] = '\0';
  char *fields[8];
  uint8_t nf = 0;
  char *p = &line[1];
  fields[nf++] = p;
  while (*p && nf < 8) {
    if (*p == ',') { *p = '\0'; fields[nf++] = p + 1; }
    p++;
  }
  long seq;
  if (nf < 2 || !parse_long(fields[0], &seq)) { rx_errors++; return send_nak("?", "SYNTAX"); }
  handle(fields, nf, rx_ms);
}

void read_serial() {
  while (Serial.available() > 0) {
    char c = (char)Serial.read();
    if (c == '$') {            // a new line starts here, whatever came before
      in_line = true;
      line_len = 0;
      line[line_len++] = c;
    } else if (!in_line) {
      continue;                // noise between lines
    } else if (c == '\n') {
      in_line = false;
      if (line_len > 0 && line[line_len - 1] == '\r') line_len--;
      process_line(millis());
      line_len = 0;
      return;  // one line per loop() pass: fires, the link watchdog and wdt_reset run between lines
    } else if (line_len >= MAX_LINE) {
      in_line = false;         // overlong: drop until the next '$'
      rx_errors++;
      line_len = 0;
    } else {
      line[line_len++] = c;
    }
  }
}

// ---- scheduling ----------------------------------------------------------------------------------
void fire_due(uint32_t now) {
  uint32_t enc = encoder_now();
  for (uint8_t i = 0; i < QUEUE_SIZE; i++) {
    if (!queue_[i].used) continue;
    bool due = queue_[i].by_encoder ? (int32_t)(enc - queue_[i].at) >= 0 : (int32_t)(now - queue_[i].at) >= 0;
    if (due) {
      queue_[i].used = false;
      long late_ms = queue_[i].by_encoder ? 0 : (long)(now - queue_[i].at);
      fire(queue_[i].part, late_ms);
    }
  }
}

void encoder_isr() { encoder_count++; }

void setup() {
  // MCUSR first: while its watchdog flag (WDRF) is set the watchdog cannot be turned off, and after a watchdog
  // reset it runs at its shortest timeout (16 ms). A bootloader that clears MCUSR (optiboot) hides the cause.
  uint8_t reset_cause = MCUSR;
  MCUSR = 0;
  wdt_disable();
  pinMode(DIVERTER_PIN, OUTPUT);
  pinMode(LINE_RUN_PIN, OUTPUT);
  pinMode(LED_BUILTIN, OUTPUT);
  pinMode(ENCODER_PIN, INPUT_PULLUP);
  attachInterrupt(digitalPinToInterrupt(ENCODER_PIN), encoder_isr, RISING);
  mode = fail_safe;            // boot in fail-safe until the host says RUN
  apply_outputs(millis());
  Serial.begin(BAUD);
  memset(queue_, 0, sizeof(queue_));
  send_body("MODE,DIVERT,BOOT");
  if (reset_cause & _BV(WDRF)) send_body("ERR,RESET,WATCHDOG");  // the last run hung: on the host's record
  wdt_enable(WDTO_250MS);      // a hung sketch resets, and boots in fail-safe
}

void loop() {
  wdt_reset();
  read_serial();
  uint32_t now = millis();  // after reading: last_rx_ms must not be newer than now
  fire_due(now);
  if (mode == MODE_RUN && (int32_t)(now - last_rx_ms) > (int32_t)link_timeout_ms) set_mode(fail_safe, "HB_TIMEOUT");
  if ((int32_t)(now - next_hb_ms) >= 0) {
    next_hb_ms = now + heartbeat_ms;
    char b[MAX_LINE] = "HB,";
    add_str(b, MODE_NAMES[mode]); add_str(b, ",");
    add_ulong(b, queue_depth()); add_str(b, ",");
    add_ulong(b, encoder_now()); add_str(b, ",");
    add_ulong(b, millis());  // our clock: the host schedules REJT on it
    send_body(b);
  }
  apply_outputs(now);
}
