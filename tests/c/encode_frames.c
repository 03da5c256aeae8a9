/*
 * Test driver for firmware_interfaces/firmware/armtwin_frame.h, used by tests/test_c_encoder.py.
 *
 *   encode_frames [--cap N] < samples.txt > frames.bin
 *       Each input line is "seq t_us flags n a0 a1 ... a(n-1)" (decimal integers, angles in µrad).
 *       Writes the encoded wire frames, back to back, to stdout (binary). --cap limits the output buffer
 *       capacity handed to armtwin_encode_frame (default ARMTWIN_MAX_WIRE_FRAME).
 *       Exit 0 on success, 2 on malformed input, 3 if armtwin_encode_frame returned 0.
 *   encode_frames --crc-check
 *       Prints the CRC-16/CCITT-FALSE of "123456789" as 4 lowercase hex digits (expected: 29b1).
 *   encode_frames --rad-to-urad < radians.txt
 *       Prints armtwin_rad_to_urad(x) for every whitespace-separated number (parsed with strtod), one per line.
 */
#include "../../firmware_interfaces/firmware/armtwin_frame.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARSE_JOINTS 64 /* accept n up to 64 on input so invalid counts reach the encoder */

static int parse_ll(char **cursor, long long lo, long long hi, long long *value)
{
    char *end;
    errno = 0;
    *value = strtoll(*cursor, &end, 10);
    if (end == *cursor || errno != 0 || *value < lo || *value > hi) {
        return 0;
    }
    *cursor = end;
    return 1;
}

static int encode_stream(size_t cap)
{
    char line[4096];
    uint8_t out[ARMTWIN_MAX_WIRE_FRAME];
    int32_t angles[MAX_PARSE_JOINTS];
    unsigned long lineno = 0;

    if (cap > sizeof out) {
        cap = sizeof out;
    }
    while (fgets(line, sizeof line, stdin) != NULL) {
        char *p = line;
        long long seq, t_us, flags, n, a;
        long long i;
        size_t written;

        ++lineno;
        if (strspn(line, " \t\r\n") == strlen(line)) {
            continue; /* blank line */
        }
        if (!parse_ll(&p, 0, 0xFFFFFFFFLL, &seq) || !parse_ll(&p, 0, 0xFFFFFFFFLL, &t_us) ||
            !parse_ll(&p, 0, 0xFF, &flags) || !parse_ll(&p, 0, MAX_PARSE_JOINTS, &n)) {
            fprintf(stderr, "line %lu: malformed header\n", lineno);
            return 2;
        }
        for (i = 0; i < n; ++i) {
            if (!parse_ll(&p, INT32_MIN, INT32_MAX, &a)) {
                fprintf(stderr, "line %lu: malformed angle %lld\n", lineno, i);
                return 2;
            }
            angles[i] = (int32_t)a;
        }
        written = armtwin_encode_frame(out, cap, (uint32_t)seq, (uint32_t)t_us, (uint8_t)flags, angles, (uint8_t)n);
        if (written == 0) {
            fprintf(stderr, "line %lu: armtwin_encode_frame returned 0 (n=%lld, cap=%lu)\n", lineno, n,
                    (unsigned long)cap);
            return 3;
        }
        if (fwrite(out, 1, written, stdout) != written) {
            return 4;
        }
    }
    return ferror(stdin) ? 4 : 0;
}

static int rad_to_urad_stream(void)
{
    char token[128];
    while (scanf("%127s", token) == 1) {
        char *end;
        double x = strtod(token, &end);
        if (end == token || *end != '\0') {
            fprintf(stderr, "malformed number '%s'\n", token);
            return 2;
        }
        printf("%ld\n", (long)armtwin_rad_to_urad(x));
    }
    return 0;
}

int main(int argc, char **argv)
{
    size_t cap = ARMTWIN_MAX_WIRE_FRAME;

    if (argc == 2 && strcmp(argv[1], "--crc-check") == 0) {
        static const char check[] = "123456789";
        printf("%04x\n", (unsigned)armtwin_crc16_ccitt((const uint8_t *)check, strlen(check)));
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--rad-to-urad") == 0) {
        return rad_to_urad_stream();
    }
    if (argc == 3 && strcmp(argv[1], "--cap") == 0) {
        char *end;
        unsigned long v = strtoul(argv[2], &end, 10);
        if (*argv[2] == '\0' || *end != '\0') {
            fprintf(stderr, "bad --cap value\n");
            return 2;
        }
        cap = (size_t)v;
    } else if (argc != 1) {
        fprintf(stderr, "usage: %s [--crc-check | --rad-to-urad | --cap N] < input\n", argv[0]);
        return 2;
    }
    return encode_stream(cap);
}
