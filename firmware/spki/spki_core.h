// keypin SPKI core: strict DER walk to the SubjectPublicKeyInfo of an X.509
// certificate, and SHA-256. Plain C99, no MicroPython headers, so the same
// code builds into the native module, a host library and the fuzz harness.
#ifndef KEYPIN_SPKI_CORE_H
#define KEYPIN_SPKI_CORE_H

#include <stddef.h>
#include <stdint.h>

// Error codes; identical values in lib/keypin/spki.py (the Python reference).
#define KP_OK            0
#define KP_ERR_EMPTY    (-1)  // no input
#define KP_ERR_TRUNC    (-2)  // an element runs past its enclosing element or the buffer
#define KP_ERR_TAG      (-3)  // unexpected tag, or a multi-byte (high-number) tag
#define KP_ERR_INDEF    (-4)  // indefinite length (BER, not DER)
#define KP_ERR_LENLEN   (-5)  // length field longer than 4 bytes
#define KP_ERR_NONMIN   (-6)  // length not minimally encoded
#define KP_ERR_TRAILING (-7)  // bytes after the certificate or after an element's last child

// Find the SubjectPublicKeyInfo TLV inside certificate DER `buf[0:len]`.
// On success returns KP_OK and sets *start, *end (end exclusive).
int kp_spki_find(const uint8_t *buf, size_t len, size_t *start, size_t *end);

typedef struct {
    uint32_t h[8];
    uint64_t bits;
    uint8_t blk[64];
    uint32_t n;
} kp_sha256_ctx;

void kp_sha256_init(kp_sha256_ctx *c);
void kp_sha256_update(kp_sha256_ctx *c, const uint8_t *p, size_t n);
void kp_sha256_final(kp_sha256_ctx *c, uint8_t out[32]);

// SHA-256 of the certificate's SPKI into out; returns KP_OK or an error code.
int kp_spki_sha256(const uint8_t *buf, size_t len, uint8_t out[32]);

#endif
