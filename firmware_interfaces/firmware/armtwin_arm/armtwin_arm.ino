// armtwin_arm.ino -- reference firmware: sample the joint encoders every 1 ms and stream protocol-v1 frames.
//
// Target: a board with native USB CDC (Teensy 4.x, SAMD21/SAMD51, ESP32-S2/S3, RP2040). Frame format:
// ../../FRAME_SPEC.md. The bytes come from armtwin_frame.h, which tests/test_c_encoder.py checks bit for bit
// against the Python codec.
//
// Build: Arduino builds copy the sketch folder elsewhere, so "../armtwin_frame.h" does not resolve. Copy (or
// symlink) firmware_interfaces/firmware/armtwin_frame.h into this folder, or install it as a library.
//
// Not compiled in CI (no Arduino toolchain there). To bring up a real arm: set N_JOINTS, set ARMTWIN_ENCODER_STUB
// to 0, and adapt read_encoder_rad() to your encoders (an AS5047P-over-SPI example is included).

#include <Arduino.h>

#include "armtwin_frame.h"

// ------------------------------------------------------------------------------------------------ configuration
static const uint8_t N_JOINTS = 6;          // 1..ARMTWIN_MAX_JOINTS; 6 joints = 39 bytes/frame = 39 kB/s
static const uint32_t PERIOD_US = 1000;     // 1 kHz sample rate
static const uint8_t ESTOP_PIN = 2;         // e-stop loop input, see estop_active()
static const uint32_t USB_WAIT_MS = 2000;   // at boot, wait this long at most for the host to open the port

// 1: no hardware needed; synthetic motion, and every frame carries ARMTWIN_FLAG_SIM so nobody mistakes it for
//    real data. 0: read real encoders via the SPI example below.
#define ARMTWIN_ENCODER_STUB 1

static_assert(N_JOINTS >= 1 && N_JOINTS <= ARMTWIN_MAX_JOINTS, "N_JOINTS must be 1..32 (protocol v1)");

// -------------------------------------------------------------------------------------------------- state
static uint32_t g_seq = 0;            // +1 per 1 ms slot; skipped slots are skipped here too (see loop())
static uint32_t g_next_deadline = 0;  // absolute micros() of the next sample; advanced by PERIOD_US, no drift
static uint32_t g_missed_slots = 0;   // diagnostics: slots lost to overruns (e.g. a blocked USB write)

// ============================================================================================================
// ENCODER STUB -- REPLACE FOR THE REAL ARM. read_encoder_rad(i) must return joint i's angle in radians
// (double; armtwin_rad_to_urad() scales, rounds and saturates it to int32 µrad). It runs N_JOINTS times per
// millisecond, so keep it to a few tens of µs per joint.
// ============================================================================================================
#if ARMTWIN_ENCODER_STUB

static void encoders_begin() {}

static double read_encoder_rad(uint8_t i) {
  // Slow sinusoid per joint (0.2 Hz, 0.5 rad), phase-shifted by joint index. float math: cheap on any MCU.
  const float t_s = (float)(micros() % 5000000UL) * 1e-6f;  // period of the 0.2 Hz sine, keeps float precise
  return 0.5 * (double)sinf(6.2831853f * 0.2f * t_s + (float)i);
}

#else  // Example: one AS5047P 14-bit absolute magnetic encoder per joint, shared SPI bus, one chip select each.

#include <SPI.h>

static const uint8_t ENCODER_CS_PINS[N_JOINTS] = {10, 9, 8, 7, 6, 5};
// Raw reading (0..16383) at the joint's zero pose, and +1/-1 for the mounting direction: calibrate per arm.
static const uint16_t ENCODER_ZERO_RAW[N_JOINTS] = {0, 0, 0, 0, 0, 0};
static const int8_t ENCODER_SIGN[N_JOINTS] = {1, 1, 1, 1, 1, 1};
static const SPISettings ENCODER_SPI(10000000, MSBFIRST, SPI_MODE1);  // AS5047P: <= 10 MHz, CPOL=0, CPHA=1
static const uint16_t AS5047_READ_ANGLECOM = 0xFFFF;  // read 0x3FFF (ANGLECOM) with R/W=1 and even parity
static const uint16_t AS5047_NOP = 0xC000;            // read 0x0000 (NOP) with parity: clocks out the answer
static double g_last_good_rad[N_JOINTS];              // held on a bad read (parity or error flag)
static uint32_t g_encoder_errors = 0;                 // diagnostics

static void encoders_begin() {
  for (uint8_t i = 0; i < N_JOINTS; ++i) {
    pinMode(ENCODER_CS_PINS[i], OUTPUT);
    digitalWrite(ENCODER_CS_PINS[i], HIGH);
    g_last_good_rad[i] = 0.0;
  }
  SPI.begin();
}

static uint16_t as5047_transfer(uint8_t cs_pin, uint16_t word) {
  SPI.beginTransaction(ENCODER_SPI);
  digitalWrite(cs_pin, LOW);
  const uint16_t reply = SPI.transfer16(word);
  digitalWrite(cs_pin, HIGH);  // AS5047P needs >= 350 ns CS high between frames; two calls apart is plenty
  SPI.endTransaction();
  return reply;
}

static bool even_parity_ok(uint16_t v) {
  v ^= v >> 8;
  v ^= v >> 4;
  v ^= v >> 2;
  v ^= v >> 1;
  return (v & 1u) == 0;  // the 16-bit word, parity bit included, must have an even number of ones
}

static double read_encoder_rad(uint8_t i) {
  // The AS5047P answers a command in the *next* SPI frame: send READ ANGLECOM, then NOP to fetch the angle.
  // (About 5 µs per joint at 10 MHz; the joints are read one after another, so the skew across 6 joints is
  // ~30 µs. For tighter simultaneity send all READs first, then all NOPs.)
  as5047_transfer(ENCODER_CS_PINS[i], AS5047_READ_ANGLECOM);
  const uint16_t reply = as5047_transfer(ENCODER_CS_PINS[i], AS5047_NOP);
  if (!even_parity_ok(reply) || (reply & 0x4000u) != 0) {  // bit 14: error flag (framing/command/parity)
    ++g_encoder_errors;
    return g_last_good_rad[i];
  }
  // Relative to the zero pose, wrapped to [-8192, 8191] counts = [-pi, pi). Multi-turn joints or motor-side
  // encoders behind a gearbox need turn counting here (unwrap against g_last_good_rad, divide by the ratio).
  int32_t counts = (int32_t)(reply & 0x3FFFu) - (int32_t)ENCODER_ZERO_RAW[i];
  if (counts >= 8192) counts -= 16384;
  if (counts < -8192) counts += 16384;
  const double rad = (double)(ENCODER_SIGN[i] * counts) * (6.283185307179586 / 16384.0);
  g_last_good_rad[i] = rad;
  return rad;
}

#endif  // ARMTWIN_ENCODER_STUB

// E-stop input: wire the e-stop's normally-closed contact between ESTOP_PIN and GND. Closed (normal) reads LOW;
// pressed *or a broken wire* reads HIGH through the pull-up, so the failure mode is "ESTOP set" (fail-safe).
static bool estop_active() { return digitalRead(ESTOP_PIN) == HIGH; }

void setup() {
  pinMode(ESTOP_PIN, INPUT_PULLUP);
  // 921600 matters only for a USB-UART bridge (>= 430 kbit/s needed for 7 joints, see FRAME_SPEC.md);
  // native USB CDC ignores the baud rate and runs at USB speed.
  Serial.begin(921600);
  const uint32_t t0 = millis();
  while (!Serial && (millis() - t0) < USB_WAIT_MS) {
    // On native USB, Serial is false until the host opens the port; do not wait forever (headless boot).
  }
  encoders_begin();
  g_next_deadline = micros() + PERIOD_US;
}

void loop() {
  const uint32_t now = micros();
  // Signed difference: correct across the 2^32 µs (71.6 min) wrap of micros().
  if ((int32_t)(now - g_next_deadline) < 0) {
    return;  // not yet; loop() is called again immediately (busy wait keeps the jitter to a few µs)
  }
  // Overrun (a blocked Serial.write, an interrupt storm): drop the whole slots we missed instead of sending a
  // burst, stay on the original 1 ms grid, and advance seq so the receiver counts them in frames_lost.
  const uint32_t late = now - g_next_deadline;
  if (late >= PERIOD_US) {
    const uint32_t missed = late / PERIOD_US;
    g_seq += missed;
    g_missed_slots += missed;
    g_next_deadline += missed * PERIOD_US;
  }
  g_next_deadline += PERIOD_US;  // absolute schedule: no accumulated drift, unlike delay(1)

  // Latch: the timestamp is taken right before the encoders are read.
  const uint32_t t_latch = micros();
  int32_t angles_urad[N_JOINTS];
  for (uint8_t i = 0; i < N_JOINTS; ++i) {
    angles_urad[i] = armtwin_rad_to_urad(read_encoder_rad(i));
  }

  uint8_t flags = 0;
  if (estop_active()) {
    flags |= ARMTWIN_FLAG_ESTOP;
  }
#if ARMTWIN_ENCODER_STUB
  flags |= ARMTWIN_FLAG_SIM;
#endif

  uint8_t frame[ARMTWIN_MAX_WIRE_FRAME];
  const size_t len = armtwin_encode_frame(frame, sizeof frame, g_seq, t_latch, flags, angles_urad, N_JOINTS);
  ++g_seq;
  if (len > 0) {
    Serial.write(frame, len);  // 39 bytes for 6 joints; the CDC driver packs consecutive frames into packets
  }
}
