// libFuzzer target over spki_core.c (host only; never built into the natmod).
// Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
//          fuzz_spki.c spki_core.c -o fuzz_spki        (tools/fuzz.sh does this)
// Invariants checked on every input:
//   - kp_spki_find returns KP_OK or one of the KP_ERR_* codes;
//   - on KP_OK: start < end <= len, buf[start] == 0x30 (a SEQUENCE), and the SPKI's own
//     header, re-read independently, spans exactly [start, end);
//   - kp_spki_sha256 returns the same code as kp_spki_find, and on KP_OK its digest equals
//     an independent SHA-256 (a second, bit-by-bit-different implementation below) of
//     buf[start:end], and equals the streaming API fed in uneven pieces;
//   - the parser reads only buf[0:len]: the input is copied into an exact-size heap block,
//     so ASan reports any read past the end.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spki_core.h"

#define FAIL(...) do { fprintf(stderr, "fuzz_spki: invariant: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

// ---- independent reference SHA-256 (one-shot, message schedule computed in place) ----
static uint32_t ref_rotr(uint32_t x, unsigned n) {
    return (x >> n) | (x << (32u - n));
}

static void ref_sha256(const uint8_t *msg, size_t len, uint8_t out[32]) {
    static const uint32_t k[64] = {
        0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
        0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
        0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
        0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
        0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
        0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
        0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
        0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
    };
    uint32_t h[8] = {
        0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
    };
    // padded length: len + 1 (0x80) + zeros + 8 (bit length), a multiple of 64
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint64_t bits = (uint64_t)len * 8u;
    for (size_t blk = 0; blk < total; blk += 64) {
        uint32_t w[16], v[8];
        for (int i = 0; i < 16; i++) {
            uint32_t x = 0;
            for (int j = 0; j < 4; j++) {
                size_t at = blk + (size_t)(4 * i + j);
                uint8_t byte;
                if (at < len) {
                    byte = msg[at];
                } else if (at == len) {
                    byte = 0x80;
                } else if (at >= total - 8) {
                    byte = (uint8_t)(bits >> (8 * (total - 1 - at)));
                } else {
                    byte = 0;
                }
                x = (x << 8) | byte;
            }
            w[i] = x;
        }
        memcpy(v, h, sizeof v);
        for (int i = 0; i < 64; i++) {
            if (i >= 16) {
                uint32_t a = w[(i - 15) & 15], b = w[(i - 2) & 15];
                w[i & 15] += (ref_rotr(a, 7) ^ ref_rotr(a, 18) ^ (a >> 3)) + w[(i - 7) & 15]
                    + (ref_rotr(b, 17) ^ ref_rotr(b, 19) ^ (b >> 10));
            }
            uint32_t t1 = v[7] + (ref_rotr(v[4], 6) ^ ref_rotr(v[4], 11) ^ ref_rotr(v[4], 25))
                + ((v[4] & v[5]) ^ (~v[4] & v[6])) + k[i] + w[i & 15];
            uint32_t t2 = (ref_rotr(v[0], 2) ^ ref_rotr(v[0], 13) ^ ref_rotr(v[0], 22))
                + ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
            memmove(v + 1, v, 7 * sizeof v[0]);
            v[4] += t1;
            v[0] = t1 + t2;
        }
        for (int i = 0; i < 8; i++) {
            h[i] += v[i];
        }
    }
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h[i] >> 8);
        out[4 * i + 3] = (uint8_t)h[i];
    }
}

static int known_code(int r) {
    return r == KP_ERR_EMPTY || r == KP_ERR_TRUNC || r == KP_ERR_TAG || r == KP_ERR_INDEF
        || r == KP_ERR_LENLEN || r == KP_ERR_NONMIN || r == KP_ERR_TRAILING;
}

// Independent decode of one definite-length DER header at b[0:n]; returns the total
// element length (header + value) or 0 if it does not fit.
static size_t element_len(const uint8_t *b, size_t n) {
    if (n < 2) {
        return 0;
    }
    size_t hdr = 2, v = b[1];
    if (b[1] & 0x80) {
        size_t k = b[1] & 0x7fu;
        if (k == 0 || k > 4 || n < 2 + k) {
            return 0;
        }
        v = 0;
        for (size_t i = 0; i < k; i++) {
            v = (v << 8) | b[2 + i];
        }
        hdr += k;
    }
    if (v > n - hdr) {
        return 0;
    }
    return hdr + v;
}

static void check(const uint8_t *buf, size_t len) {
    size_t s = (size_t)-1, e = (size_t)-1;
    uint8_t d1[32], d2[32];
    int r = kp_spki_find(buf, len, &s, &e);
    int r2 = kp_spki_sha256(buf, len, d1);
    if (r != r2) {
        FAIL("kp_spki_find=%d but kp_spki_sha256=%d (len %zu)", r, r2, len);
    }
    if (r != KP_OK) {
        if (!known_code(r)) {
            FAIL("unknown error code %d (len %zu)", r, len);
        }
        if (len == 0 && r != KP_ERR_EMPTY) {
            FAIL("empty input gave %d", r);
        }
        return;
    }
    if (!(s < e && e <= len)) {
        FAIL("bad range start=%zu end=%zu len=%zu", s, e, len);
    }
    if (buf[s] != 0x30) {
        FAIL("SPKI at %zu starts with 0x%02x, not 0x30", s, buf[s]);
    }
    if (element_len(buf + s, len - s) != e - s) {
        FAIL("SPKI header at %zu does not span [%zu, %zu)", s, s, e);
    }
    if (buf[0] != 0x30 || element_len(buf, len) != len) {
        FAIL("accepted input is not one SEQUENCE spanning the buffer (len %zu)", len);
    }
    ref_sha256(buf + s, e - s, d2);
    if (memcmp(d1, d2, 32) != 0) {
        FAIL("kp_spki_sha256 differs from reference SHA-256 (span %zu..%zu)", s, e);
    }
    // streaming API in uneven pieces must give the same digest
    kp_sha256_ctx c;
    kp_sha256_init(&c);
    size_t p = s, step = 1;
    while (p < e) {
        size_t n = e - p < step ? e - p : step;
        kp_sha256_update(&c, buf + p, n);
        p += n;
        step = step * 3 + 1;
    }
    kp_sha256_final(&c, d2);
    if (memcmp(d1, d2, 32) != 0) {
        FAIL("chunked kp_sha256_update differs (span %zu..%zu)", s, e);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // exact-size copy so any read past len is a heap-buffer-overflow for ASan
    uint8_t *buf = (uint8_t *)malloc(size ? size : 1);
    if (buf == NULL) {
        return 0;
    }
    if (size) {
        memcpy(buf, data, size);
    }
    check(size ? buf : NULL, size);
    // the SHA-256 itself on raw fuzz bytes (all lengths, not only SPKI spans)
    {
        uint8_t a[32], b[32];
        kp_sha256_ctx c;
        kp_sha256_init(&c);
        kp_sha256_update(&c, buf, size);
        kp_sha256_final(&c, a);
        ref_sha256(buf, size, b);
        if (memcmp(a, b, 32) != 0) {
            FAIL("kp_sha256 differs from reference on %zu raw bytes", size);
        }
    }
    free(buf);
    return 0;
}
