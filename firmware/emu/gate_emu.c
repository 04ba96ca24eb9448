// gate_emu: run the compiled gate controller firmware (gate_controller.elf, ATmega328P @ 16 MHz) in simavr,
// paced to wall-clock time, with its USART bridged to a pty the host's serial code opens unchanged.
//
// Why our own harness and not simavr's run_avr + uart_pty part: the tests need, on one emulated clock,
//   - every edge of the diverter (Arduino pin 7 = PD7), line-run (8 = PB0) and LED (13 = PB5) outputs,
//   - every line the firmware read from / wrote to its USART (the cycle its RX interrupt read the '\n'),
//   - a watchdog reset, an injected hang, encoder pulses on INT0 (pin 2 = PD2),
//   - the emulator held to real time, so the host's wall-clock protocol timing (heartbeats, link timeouts,
//     fire times) means the same thing it means against the board.
// The USART bridge is done in the emulator's own thread (no second thread, no locks): bytes from the pty go
// into the emulated USART as its receiver has room (XON/XOFF irqs); the USART's RX pump then delivers one
// byte per frame time at the configured baud rate (simavr models that), bytes it transmits go to the pty.
//
// Trace (--trace FILE, one event per line, fields separated by one space; cycle = emulated CPU cycles since
// start, 16 per microsecond; wall_ns = CLOCK_MONOTONIC, the clock Python's time.monotonic_ns() reads):
//   START <hz> <wall_ns>                       emulation begins (cycle 0 is at wall_ns when paced)
//   PIN <arduino_pin> <0|1> <cycle> <wall_ns> <millis> <millis_cycle> <millis_before>
//                                              an output pin changed (first value of each pin always logged);
//                                              millis: the firmware's millis() clock (its timer0_millis) then,
//                                              millis_cycle: the cycle it took that value, millis_before: the
//                                              value before (Arduino's millis() skips one every 42-43 ms)
//   RX <cycle> <wall_ns> <line>                the firmware's RX interrupt read the '\n' ending <line>
//   TX <cycle> <wall_ns> <line>                the firmware wrote the '\n' ending <line> to its USART
//   LOOP <start_cycle> <cycles>                (--loop-log) a loop() pass longer than 1.5x the shortest one;
//                                              a pass = from one `wdr` (wdt_reset() at the top of loop())
//                                              to the next
//   HANG <cycle> <wall_ns> <byte_addr>         control "hang": the loop's wdr replaced by `rjmp .` (a hung
//                                              loop; interrupts still run); restored by the next reset
//   RESET <cycle> <wall_ns> <cause> <mcusr>    the MCU reset (cause WATCHDOG), MCUSR after the reset
//   ENCODER <hz> <first_edge_cycle> <period_cycles>  control "encoder HZ": rising edges on PD2 from then on
//   ENC <count> <cycle>                        a rising edge on PD2: the count-th since the last reset
//   END <cycles> <wall_ns> <emu_s> <wall_s> <cpu_s> <max_lag_us> <loop_min> <loop_median> <slices> <behind_1ms>
//        max_lag_us: how far emulated time fell behind wall time at worst (after the first 0.2 s);
//        slices: 250 us slices run, behind_1ms: how many ended more than 1 ms behind wall time
// Control (stdin, one command a line): "hang", "encoder <hz>" (0 = stop), "quit". EOF on stdin is ignored.
//
// Usage: gate_emu --elf gate_controller.elf (--fd N | --pty PATH) [--trace FILE] [--free-run]
//                 [--seconds S] [--loop-log]
//   --fd N      an open pty master (the caller holds the slave path, e.g. tests' PtyLink)
//   --pty PATH  make a pty; PATH becomes a symlink to its slave (what the host opens)
//   --free-run  no pacing: as fast as the CPU allows (to measure the emulator's speed)
//   --seconds S stop after S emulated seconds (0 = until SIGTERM / "quit")
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_ioport.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_irq.h"

#define F_CPU 16000000u
#define SLICE_CYCLES 4000u    // 250 us of emulated time between pacing / I/O checks
#define WDR_OPCODE 0x95A8u
#define RJMP_SELF 0xCFFFu     // rjmp .-2: jump to itself
#define UDR0_ADDR 0xC6
#define MCUSR_ADDR 0x54

static avr_t *avr;
static FILE *trace;
static int pty_fd = -1;
static volatile sig_atomic_t stop_requested;
static uint64_t wall0_ns;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_term(int sig) {
  (void)sig;
  stop_requested = 1;
}

// ---- host -> firmware: bytes read from the pty, fed to the USART while it has room --------------------------
static uint8_t host_q[8192];
static size_t host_head, host_tail;  // [head, tail)
static int uart_xon = 1;
static avr_irq_t *uart_in_irq;

static void feed_uart(void) {
  while (uart_xon && host_head < host_tail) avr_raise_irq(uart_in_irq, host_q[host_head++]);
  if (host_head == host_tail) host_head = host_tail = 0;
}

static void on_xon(avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq, (void)param;
  if (value) {
    uart_xon = 1;
    feed_uart();
  }
}

static void on_xoff(avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq, (void)param;
  if (value) uart_xon = 0;
}

static void read_pty(void) {
  if (host_head > 0 && host_head == host_tail) host_head = host_tail = 0;
  if (host_tail == sizeof(host_q)) {  // compact
    memmove(host_q, host_q + host_head, host_tail - host_head);
    host_tail -= host_head;
    host_head = 0;
  }
  if (host_tail == sizeof(host_q)) return;
  ssize_t n = read(pty_fd, host_q + host_tail, sizeof(host_q) - host_tail);
  if (n > 0) host_tail += (size_t)n;
  feed_uart();
}

// ---- firmware -> host: bytes the USART transmits, written to the pty ------------------------------------------
static uint8_t out_q[8192];
static size_t out_len;
static char tx_line[128], rx_line[128];
static size_t tx_len, rx_len;

static void flush_out(void) {
  if (!out_len) return;
  ssize_t n = write(pty_fd, out_q, out_len);
  if (n > 0) {
    memmove(out_q, out_q + n, out_len - (size_t)n);
    out_len -= (size_t)n;
  }
}

static void line_byte(char *buf, size_t *len, uint8_t c, const char *kind) {
  if (c == '\n') {
    buf[*len] = '\0';
    fprintf(trace, "%s %llu %llu %s\n", kind, (unsigned long long)avr->cycle, (unsigned long long)now_ns(), buf);
    *len = 0;
  } else if (*len < 120) {
    buf[(*len)++] = (c > ' ' && c < 127) ? (char)c : (c == '\r' ? '\0' : '?');
    if (c == '\r') (*len)--;
  }
}

static void on_uart_out(avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq, (void)param;
  if (out_len < sizeof(out_q)) out_q[out_len++] = (uint8_t)value;  // the host not reading: bytes are dropped
  line_byte(tx_line, &tx_len, (uint8_t)value, "TX");
  flush_out();
}

// UDR0 read: chained in front of the USART's own read handler, to see the bytes the firmware receives
static avr_io_read_t udr_read_orig;
static void *udr_read_param;

static uint8_t on_udr_read(avr_t *a, avr_io_addr_t addr, void *param) {
  (void)param;
  uint8_t v = udr_read_orig(a, addr, udr_read_param);
  line_byte(rx_line, &rx_len, v, "RX");
  return v;
}

// ---- output pins ------------------------------------------------------------------------------------------------
struct pin_watch {
  char port;
  int bit, arduino, last;
};
static struct pin_watch pins[] = {{'D', 7, 7, -1}, {'B', 0, 8, -1}, {'B', 5, 13, -1}};

// the firmware's millis() clock: timer0_millis in its RAM, watched after every instruction
static int millis_addr = -1;
static uint32_t millis_val, millis_before;
static uint64_t millis_cycle;

static inline void watch_millis(void) {
  uint32_t v;
  memcpy(&v, &avr->data[millis_addr], 4);  // little-endian on AVR and x86
  if (v != millis_val) {
    millis_before = millis_val;
    millis_val = v;
    millis_cycle = avr->cycle;
  }
}

static void on_pin(avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq;
  struct pin_watch *p = param;
  int v = value ? 1 : 0;
  if (v == p->last) return;
  p->last = v;
  fprintf(trace, "PIN %d %d %llu %llu %u %llu %u\n", p->arduino, v, (unsigned long long)avr->cycle,
          (unsigned long long)now_ns(), millis_val, (unsigned long long)millis_cycle, millis_before);
}

// ---- encoder pulses on PD2 (INT0) ----------------------------------------------------------------------------------
static avr_irq_t *enc_irq;
static uint64_t enc_period, enc_next;  // cycles; enc_next: the next rising edge (absolute cycle)
static int enc_level;
static uint64_t enc_count;  // rising edges since the last reset

static avr_cycle_count_t enc_tick(avr_t *a, avr_cycle_count_t when, void *param) {
  (void)a, (void)param;
  if (!enc_period) return 0;
  enc_level = !enc_level;
  avr_raise_irq(enc_irq, enc_level);
  if (enc_level) {
    enc_next = when + enc_period;
    fprintf(trace, "ENC %llu %llu\n", (unsigned long long)++enc_count, (unsigned long long)when);
    return when + enc_period / 2;  // falling edge half a period later
  }
  return enc_next;
}

static void enc_schedule(void) {
  avr_cycle_timer_cancel(avr, enc_tick, NULL);
  if (!enc_period) return;
  if (enc_level) {  // high: the falling edge first
    avr_cycle_timer_register(avr, enc_next - enc_period / 2 > avr->cycle ? enc_next - enc_period / 2 - avr->cycle : 1,
                             enc_tick, NULL);
  } else {
    avr_cycle_timer_register(avr, enc_next > avr->cycle ? enc_next - avr->cycle : 1, enc_tick, NULL);
  }
}

// ---- loop passes (wdr to wdr), hang, reset --------------------------------------------------------------------------
static uint32_t loop_wdr_pc;  // byte address of the last wdr executed
static uint64_t last_wdr_cycle;
static uint64_t loop_min = UINT64_MAX;
static uint32_t loop_hist[4096];  // pass lengths in 16-cycle bins (for the median), capped
static int loop_log;
static int hang_active;
static uint32_t hang_pc;
static uint8_t hang_saved[2];

static void note_wdr(uint32_t pc) {
  uint64_t c = avr->cycle;
  if (last_wdr_cycle && pc == loop_wdr_pc) {
    uint64_t len = c - last_wdr_cycle;
    if (len < loop_min) loop_min = len;
    loop_hist[len / 16 < 4095 ? len / 16 : 4095]++;
    if (loop_log && len * 2 > loop_min * 3)
      fprintf(trace, "LOOP %llu %llu\n", (unsigned long long)last_wdr_cycle, (unsigned long long)len);
  }
  loop_wdr_pc = pc;
  last_wdr_cycle = c;
}

static uint64_t loop_median(void) {
  uint64_t total = 0, seen = 0;
  for (int i = 0; i < 4096; i++) total += loop_hist[i];
  for (int i = 0; i < 4096; i++) {
    seen += loop_hist[i];
    if (total && seen * 2 >= total) return (uint64_t)i * 16 + 8;
  }
  return 0;
}

static void do_hang(void) {
  if (hang_active || !loop_wdr_pc) return;
  hang_pc = loop_wdr_pc;
  memcpy(hang_saved, &avr->flash[hang_pc], 2);
  avr->flash[hang_pc] = RJMP_SELF & 0xFF;
  avr->flash[hang_pc + 1] = RJMP_SELF >> 8;
  hang_active = 1;
  fprintf(trace, "HANG %llu %llu %u\n", (unsigned long long)avr->cycle, (unsigned long long)now_ns(), hang_pc);
}

static void after_reset(const char *cause) {
  if (hang_active) {  // a transient hang: the reset clears it
    memcpy(&avr->flash[hang_pc], hang_saved, 2);
    hang_active = 0;
  }
  last_wdr_cycle = 0;
  rx_len = tx_len = 0;
  enc_count = 0;
  fprintf(trace, "RESET %llu %llu %s %u\n", (unsigned long long)avr->cycle, (unsigned long long)now_ns(), cause,
          avr->data[MCUSR_ADDR]);
  enc_schedule();  // a reset cancels every cycle timer; the belt keeps moving
}

// ---- control on stdin -------------------------------------------------------------------------------------------
static char ctl_buf[256];
static size_t ctl_len;
static int ctl_open = 1;

static void control_line(char *s) {
  if (strcmp(s, "hang") == 0) {
    do_hang();
  } else if (strncmp(s, "encoder ", 8) == 0) {
    double hz = atof(s + 8);
    enc_period = hz > 0 ? (uint64_t)(F_CPU / hz + 0.5) : 0;
    if (enc_period) {
      enc_next = avr->cycle + 1;
      enc_level = 0;
      fprintf(trace, "ENCODER %g %llu %llu\n", hz, (unsigned long long)enc_next, (unsigned long long)enc_period);
    }
    enc_schedule();
  } else if (strcmp(s, "quit") == 0) {
    stop_requested = 1;
  } else if (*s) {
    fprintf(stderr, "gate_emu: unknown control command '%s' (hang | encoder HZ | quit)\n", s);
  }
}

static void read_control(void) {
  ssize_t n = read(STDIN_FILENO, ctl_buf + ctl_len, sizeof(ctl_buf) - 1 - ctl_len);
  if (n == 0) {
    ctl_open = 0;
    return;
  }
  if (n < 0) return;
  ctl_len += (size_t)n;
  char *nl;
  while ((nl = memchr(ctl_buf, '\n', ctl_len)) != NULL) {
    *nl = '\0';
    control_line(ctl_buf);
    size_t used = (size_t)(nl - ctl_buf) + 1;
    memmove(ctl_buf, ctl_buf + used, ctl_len - used);
    ctl_len -= used;
  }
  if (ctl_len == sizeof(ctl_buf) - 1) ctl_len = 0;  // overlong: dropped
}

// ---- set-up --------------------------------------------------------------------------------------------------------
static int open_pty(const char *link) {
  int master, slave;
  char name[128];
  if (openpty(&master, &slave, name, NULL, NULL) < 0) {
    fprintf(stderr, "gate_emu: openpty failed: %s\n", strerror(errno));
    return -1;
  }
  struct termios t;
  tcgetattr(slave, &t);
  cfmakeraw(&t);
  tcsetattr(slave, TCSANOW, &t);
  // the slave stays open here, so the master never reads EIO while the host has it closed
  char tmp[4200];
  snprintf(tmp, sizeof(tmp), "%s.new", link);
  unlink(tmp);
  if (symlink(name, tmp) < 0 || rename(tmp, link) < 0) {
    fprintf(stderr, "gate_emu: cannot make the link %s -> %s: %s\n", link, name, strerror(errno));
    return -1;
  }
  printf("gate_emu: pty %s -> %s\n", link, name);
  fflush(stdout);
  return master;
}

static void usage(void) {
  fprintf(stderr,
          "usage: gate_emu --elf FILE (--fd N | --pty PATH) [--trace FILE] [--free-run] [--seconds S] "
          "[--loop-log]\n");
}

int main(int argc, char **argv) {
  const char *elf = NULL, *pty_link = NULL, *trace_path = NULL;
  int free_run = 0;
  double seconds = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--elf") == 0 && v) elf = argv[++i];
    else if (strcmp(a, "--fd") == 0 && v) pty_fd = atoi(argv[++i]);
    else if (strcmp(a, "--pty") == 0 && v) pty_link = argv[++i];
    else if (strcmp(a, "--trace") == 0 && v) trace_path = argv[++i];
    else if (strcmp(a, "--seconds") == 0 && v) seconds = atof(argv[++i]);
    else if (strcmp(a, "--free-run") == 0) free_run = 1;
    else if (strcmp(a, "--loop-log") == 0) loop_log = 1;
    else {
      usage();
      return 2;
    }
  }
  if (!elf || (pty_fd < 0 && !pty_link)) {
    usage();
    return 2;
  }
  trace = trace_path ? fopen(trace_path, "w") : stderr;
  if (!trace) {
    fprintf(stderr, "gate_emu: cannot write the trace %s: %s\n", trace_path, strerror(errno));
    return 2;
  }
  setvbuf(trace, NULL, _IOFBF, 1 << 16);  // flushed after every slice: readers follow it while it runs
  if (pty_link && (pty_fd = open_pty(pty_link)) < 0) return 2;
  fcntl(pty_fd, F_SETFL, fcntl(pty_fd, F_GETFL) | O_NONBLOCK);
  // stdin stays blocking (it may be the user's terminal): it is read only when poll says it has data

  // an AVR ELF file (e_machine 83), checked here: the library's own complaints take several lines
  unsigned char hdr[20] = {0};
  FILE *ef = fopen(elf, "rb");
  size_t got = ef ? fread(hdr, 1, sizeof(hdr), ef) : 0;
  if (ef) fclose(ef);
  if (got < sizeof(hdr) || memcmp(hdr, "\x7f" "ELF", 4) != 0 || (hdr[18] | (hdr[19] << 8)) != 83) {
    fprintf(stderr, "gate_emu: %s is not an AVR .elf (%s); build it with firmware/build.sh\n", elf,
            ef ? "wrong format" : strerror(errno));
    return 2;
  }
  static union {
    elf_firmware_t fw;
    char pad[1 << 16];  // room should the library's struct be larger than its header says
  } u;
  if (elf_read_firmware(elf, &u.fw) != 0) {
    fprintf(stderr, "gate_emu: cannot load the firmware %s (an AVR .elf from firmware/build.sh?)\n", elf);
    return 2;
  }
  avr = avr_make_mcu_by_name("atmega328p");
  if (!avr) {
    fprintf(stderr, "gate_emu: simavr has no atmega328p core\n");
    return 2;
  }
  avr_init(avr);
  avr->log = LOG_ERROR;
  u.fw.frequency = F_CPU;
  strcpy(u.fw.mmcu, "atmega328p");
  avr_load_firmware(avr, &u.fw);
  for (uint32_t i = 0; i < u.fw.symbolcount; i++)
    if (strcmp(u.fw.symbol[i]->symbol, "timer0_millis") == 0) millis_addr = (int)(u.fw.symbol[i]->addr & 0xFFFF);
  if (millis_addr < 0 || millis_addr + 4 > (int)avr->ramend + 1) {
    fprintf(stderr, "gate_emu: no timer0_millis symbol in %s (an Arduino sketch built with -g?)\n", elf);
    return 2;
  }
  avr->frequency = F_CPU;

  uint32_t flags = 0;  // no usleep() in the USART's status read: pacing is ours
  avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
  uart_in_irq = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), on_uart_out, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), on_xon, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), on_xoff, NULL);
  int udr = AVR_DATA_TO_IO(UDR0_ADDR);
  udr_read_orig = avr->io[udr].r.c;
  udr_read_param = avr->io[udr].r.param;
  if (!udr_read_orig) {
    fprintf(stderr, "gate_emu: the USART has no UDR0 read handler (simavr version?)\n");
    return 2;
  }
  avr->io[udr].r.c = on_udr_read;
  for (size_t i = 0; i < sizeof(pins) / sizeof(pins[0]); i++)
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ(pins[i].port), pins[i].bit), on_pin,
                            &pins[i]);
  enc_irq = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 2);

  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  signal(SIGPIPE, SIG_IGN);
  void (*normal_run)(avr_t *) = avr->run;
  uint64_t end_cycle = seconds > 0 ? (uint64_t)(seconds * F_CPU) : UINT64_MAX;
  int64_t max_lag_ns = 0;
  uint64_t slices = 0, behind_1ms = 0;
  wall0_ns = now_ns();
  fprintf(trace, "START %u %llu\n", F_CPU, (unsigned long long)wall0_ns);

  while (!stop_requested && avr->cycle < end_cycle) {
    uint64_t slice_end = avr->cycle + SLICE_CYCLES;
    while (avr->cycle < slice_end) {
      if (avr->run != normal_run) {  // the watchdog armed a reset: this step performs it
        avr_run(avr);
        after_reset("WATCHDOG");
        continue;
      }
      uint32_t pc = avr->pc;
      if ((avr->flash[pc] | (avr->flash[pc + 1] << 8)) == WDR_OPCODE) note_wdr(pc);
      int state = avr_run(avr);
      watch_millis();
      if (state == cpu_Done || state == cpu_Crashed) {
        fprintf(stderr, "gate_emu: the MCU stopped (state %d) at pc 0x%x\n", state, avr->pc);
        stop_requested = 1;
        break;
      }
    }
    // I/O, then hold emulated time to wall time: wait (for host bytes or control, at most until wall time has
    // caught up) while ahead; run flat out while behind
    flush_out();
    fflush(trace);
    struct pollfd fds[2] = {{pty_fd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
    int nfds = ctl_open ? 2 : 1;
    int64_t ahead_ns = free_run ? 0 : (int64_t)(avr->cycle * 1000 / (F_CPU / 1000000)) - (int64_t)(now_ns() - wall0_ns);
    slices++;
    if (avr->cycle > F_CPU / 5 && -ahead_ns > max_lag_ns) max_lag_ns = -ahead_ns;
    if (!free_run && ahead_ns < -1000000) behind_1ms++;
    do {
      int64_t wait_ns = ahead_ns > 0 ? ahead_ns : 0;
      struct timespec ts = {wait_ns / 1000000000, wait_ns % 1000000000};
      int r = ppoll(fds, nfds, &ts, NULL);
      if (r > 0) {
        if (fds[0].revents & POLLIN) read_pty();
        if (nfds > 1 && (fds[1].revents & (POLLIN | POLLHUP))) read_control();
      }
      if (free_run) break;
      ahead_ns = (int64_t)(avr->cycle * 1000 / (F_CPU / 1000000)) - (int64_t)(now_ns() - wall0_ns);
      nfds = ctl_open ? 2 : 1;
    } while (ahead_ns > 0 && !stop_requested);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu_s = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  uint64_t wall = now_ns();
  fprintf(trace, "END %llu %llu %.6f %.6f %.6f %lld %llu %llu %llu %llu\n", (unsigned long long)avr->cycle,
          (unsigned long long)wall, (double)avr->cycle / F_CPU, (wall - wall0_ns) / 1e9, cpu_s,
          (long long)(max_lag_ns / 1000), (unsigned long long)(loop_min == UINT64_MAX ? 0 : loop_min),
          (unsigned long long)loop_median(), (unsigned long long)slices, (unsigned long long)behind_1ms);
  fflush(trace);
  return 0;
}
