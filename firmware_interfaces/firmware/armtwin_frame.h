/*
 * armtwin_frame.h -- header-only C99 encoder for serial frame protocol v1 (see ../FRAME_SPEC.md).
 *
 * Produces exactly the bytes of firmware_interfaces/codec.py:encode_frame (checked bit for bit by
 * tests/test_c_encoder.py):
 *
 *     wire    = COBS(payload || crc16_le) || 0x00
 *     payload = version(1) | flags(1) | seq(u32) | t_us(u32) | n(1) | angle_urad[n](i32)   (little-endian)
 *     crc     = CRC-16/CCITT-FALSE over payload (poly 0x1021, init 0xFFFF, no reflection, no final xor)
 *
 * No malloc, no globals, no libc beyond <stdint.h>, <stddef.h>, <string.h> and lround() from <math.h>.
 * Multi-byte fields are written byte by byte with shifts, so the output is independent of the MCU's endianness
 * and alignment rules. Everything is static inline: include it from any number of translation units.
 * The CRC uses the table-free byte-wise update (a few shifts per byte, no 512-byte table in flash), and the
 * CRC and COBS are computed in a single streaming pass straight into the caller's buffer (no scratch buffer).
 */
#ifndef ARMTWIN_FRAME_H
#define ARMTWIN_FRAME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ARMTWIN_PROTOCOL_VERSION 1u
#define ARMTWIN_MAX_JOINTS 32u
#define ARMTWIN_FLAG_ESTOP 0x01u /* bit 0: arm is in emergency stop */
#define ARMTWIN_FLAG_SIM 0x02u   /* bit 1: data is simulated/replayed; bits 2..7 reserved, send 0 */
#define ARMTWIN_HEADER_SIZE 11u  /* version, flags, seq, t_us, n */
#define ARMTWIN_CRC_SIZE 2u

/* Payload bytes (without CRC) for n joints. */
#define ARMTWIN_PAYLOAD_SIZE(n) (ARMTWIN_HEADER_SIZE + 4u * (size_t)(n))
/* Bytes on the wire for n joints (1 <= n <= 32): payload + CRC + 1 COBS overhead (body <= 141 < 254) + 0x00. */
#define ARMTWIN_WIRE_FRAME_SIZE(n) (ARMTWIN_PAYLOAD_SIZE(n) + ARMTWIN_CRC_SIZE + 1u + 1u)
/* Largest legal frame on the wire (32 joints): 143 bytes. Size transmit buffers with this. */
#define ARMTWIN_MAX_WIRE_FRAME ARMTWIN_WIRE_FRAME_SIZE(ARMTWIN_MAX_JOINTS)

#ifdef __cplusplus
extern "C" {
#endif

/* One CRC-16/CCITT-FALSE step (non-reflected poly 0x1021) without a table. */
static inline uint16_t armtwin_crc16_update(uint16_t crc, uint8_t byte)
{
    uint8_t x = (uint8_t)((crc >> 8) ^ byte);
    x = (uint8_t)(x ^ (x >> 4));
    return (uint16_t)((crc << 8) ^ ((uint16_t)x << 12) ^ ((uint16_t)x << 5) ^ (uint16_t)x);
}

/* CRC-16/CCITT-FALSE of a buffer; armtwin_crc16_ccitt("123456789", 9) == 0x29B1. */
static inline uint16_t armtwin_crc16_ccitt(const uint8_t *data, size_t len)
{
    uint16_t crc = 0xFFFFu;
    size_t i;
    for (i = 0; i < len; ++i) {
        crc = armtwin_crc16_update(crc, data[i]);
    }
    return crc;
}

/*
 * Streaming COBS encoder writing into a caller buffer whose capacity was checked beforehand.
 * `code_idx == SIZE_MAX` means no block is open (right after a full 0xFF block), so a body that ends exactly
 * after a 254-byte run gets no extra 0x01 block -- the same bytes as the Python `cobs` package. (Unreachable
 * for v1 bodies of <= 141 bytes, but it keeps the routine exact in general.)
 */
typedef struct {
    uint8_t *out;
    size_t pos;      /* next free output byte */
    size_t code_idx; /* where the current block's code byte goes */
    uint8_t code;    /* 1 + number of data bytes in the current block */
} armtwin_cobs_t;

static inline void armtwin_cobs_open_(armtwin_cobs_t *c)
{
    c->code_idx = c->pos++;
    c->code = 1u;
}

static inline void armtwin_cobs_put_(armtwin_cobs_t *c, uint8_t byte)
{
    if (c->code_idx == SIZE_MAX) {
        armtwin_cobs_open_(c);
    }
    if (byte == 0u) {
        c->out[c->code_idx] = c->code;
        armtwin_cobs_open_(c);
        return;
    }
    c->out[c->pos++] = byte;
    if (++c->code == 0xFFu) {
        c->out[c->code_idx] = c->code;
        c->code_idx = SIZE_MAX;
    }
}

/* Payload bytes go through the CRC and COBS in one pass. */
static inline void armtwin_put_(armtwin_cobs_t *c, uint16_t *crc, uint8_t byte)
{
    *crc = armtwin_crc16_update(*crc, byte);
    armtwin_cobs_put_(c, byte);
}

static inline void armtwin_put_u32_(armtwin_cobs_t *c, uint16_t *crc, uint32_t v)
{
    armtwin_put_(c, crc, (uint8_t)(v & 0xFFu));
    armtwin_put_(c, crc, (uint8_t)((v >> 8) & 0xFFu));
    armtwin_put_(c, crc, (uint8_t)((v >> 16) & 0xFFu));
    armtwin_put_(c, crc, (uint8_t)((v >> 24) & 0xFFu));
}

/*
 * Encode one sample into `out` (COBS-encoded, including the trailing 0x00 delimiter).
 *   seq          frame counter, +1 per frame, wraps at 2^32
 *   t_us         microsecond counter at the instant the encoders were latched (e.g. micros())
 *   flags        ARMTWIN_FLAG_* bits
 *   angles_urad  n joint angles in micro-radians (see armtwin_rad_to_urad)
 * Returns the number of bytes written (ARMTWIN_WIRE_FRAME_SIZE(n)), or 0 -- with `out` untouched -- if n is not
 * in 1..ARMTWIN_MAX_JOINTS, a pointer is NULL, or out_cap < ARMTWIN_WIRE_FRAME_SIZE(n).
 */
static inline size_t armtwin_encode_frame(uint8_t *out, size_t out_cap, uint32_t seq, uint32_t t_us, uint8_t flags,
                                          const int32_t *angles_urad, uint8_t n)
{
    armtwin_cobs_t c;
    uint16_t crc = 0xFFFFu;
    uint8_t i;

    if (out == NULL || angles_urad == NULL || n < 1u || n > ARMTWIN_MAX_JOINTS ||
        out_cap < ARMTWIN_WIRE_FRAME_SIZE(n)) {
        return 0;
    }
    c.out = out;
    c.pos = 0;
    armtwin_cobs_open_(&c);

    armtwin_put_(&c, &crc, (uint8_t)ARMTWIN_PROTOCOL_VERSION);
    armtwin_put_(&c, &crc, flags);
    armtwin_put_u32_(&c, &crc, seq);
    armtwin_put_u32_(&c, &crc, t_us);
    armtwin_put_(&c, &crc, n);
    for (i = 0; i < n; ++i) {
        /* int32 -> uint32 is defined (two's complement value mod 2^32) on every C99 implementation. */
        armtwin_put_u32_(&c, &crc, (uint32_t)angles_urad[i]);
    }
    /* CRC little-endian, not itself covered by the CRC. */
    armtwin_cobs_put_(&c, (uint8_t)(crc & 0xFFu));
    armtwin_cobs_put_(&c, (uint8_t)(crc >> 8));

    if (c.code_idx != SIZE_MAX) {
        out[c.code_idx] = c.code; /* close the last block */
    }
    out[c.pos++] = 0x00u; /* frame delimiter */
    return c.pos;
}

/*
 * Radians -> micro-radians: round half away from zero (lround), saturated to the int32 range
 * (+-2147.48 rad). NaN maps to 0; callers that can produce NaN should flag the sample themselves.
 * Pass float or double; a float argument is promoted, so no precision is lost before scaling.
 */
static inline int32_t armtwin_rad_to_urad(double rad)
{
    const double urad = rad * 1e6;
    if (urad != urad) {
        return 0;
    }
    if (urad >= 2147483647.0) {
        return INT32_MAX;
    }
    if (urad <= -2147483648.0) {
        return INT32_MIN;
    }
    return (int32_t)lround(urad); /* |urad| < 2^31 here, so it fits a 32-bit long */
}

#ifdef __cplusplus
}
#endif

#endif /* ARMTWIN_FRAME_H */
