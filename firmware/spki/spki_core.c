// keypin SPKI core. See spki_core.h. The grammar is deliberately narrow:
// single-byte tags, definite lengths of at most 4 bytes, minimal length
// encoding, every element inside its parent, nothing after the last child.
#include "spki_core.h"

// Read one TLV header at pos, bounded by end. want < 0 accepts any tag.
// On success *vs is the first value byte and *ve one past the last.
static int kp_tlv(const uint8_t *b, size_t pos, size_t end, int want, size_t *vs, size_t *ve) {
    if (pos >= end) {
        return KP_ERR_TRUNC;
    }
    uint8_t tag = b[pos++];
    if ((tag & 0x1f) == 0x1f || (want >= 0 && tag != (uint8_t)want)) {
        return KP_ERR_TAG;
    }
    if (pos >= end) {
        return KP_ERR_TRUNC;
    }
    uint8_t l = b[pos++];
    size_t n;
    if (l < 0x80) {
        n = l;
    } else if (l == 0x80) {
        return KP_ERR_INDEF;
    } else {
        size_t k = l & 0x7f;
        if (k > 4) {
            return KP_ERR_LENLEN;
        }
        if (k > end - pos) {
            return KP_ERR_TRUNC;
        }
        if (b[pos] == 0) {
            return KP_ERR_NONMIN;
        }
        n = 0;
        while (k--) {
            n = (n << 8) | b[pos++];
        }
        if (n < 0x80) {
            return KP_ERR_NONMIN;
        }
    }
    if (n > end - pos) {
        return KP_ERR_TRUNC;
    }
    *vs = pos;
    *ve = pos + n;
    return KP_OK;
}

#define KP_TRY(x) do { int r_ = (x); if (r_ != KP_OK) { return r_; } } while (0)

int kp_spki_find(const uint8_t *b, size_t len, size_t *start, size_t *end) {
    size_t cs, ce, ts, te, vs, ve, ks, ke, p;
    if (len == 0) {
        return KP_ERR_EMPTY;
    }
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    KP_TRY(kp_tlv(b, 0, len, 0x30, &cs, &ce));
    if (ce != len) {
        return KP_ERR_TRAILING;
    }
    KP_TRY(kp_tlv(b, cs, ce, 0x30, &ts, &te));
    // tbsCertificate: [0] version OPTIONAL, serial, signature, issuer, validity, subject, SPKI, ...
    p = ts;
    if (p < te && b[p] == 0xa0) {
        KP_TRY(kp_tlv(b, p, te, 0xa0, &vs, &p));
    }
    KP_TRY(kp_tlv(b, p, te, 0x02, &vs, &p));  // serialNumber
    KP_TRY(kp_tlv(b, p, te, 0x30, &vs, &p));  // signature AlgorithmIdentifier
    KP_TRY(kp_tlv(b, p, te, 0x30, &vs, &p));  // issuer
    KP_TRY(kp_tlv(b, p, te, 0x30, &vs, &p));  // validity
    KP_TRY(kp_tlv(b, p, te, 0x30, &vs, &p));  // subject
    *start = p;
    KP_TRY(kp_tlv(b, p, te, 0x30, &ks, &ke)); // subjectPublicKeyInfo
    // SPKI ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING }
    KP_TRY(kp_tlv(b, ks, ke, 0x30, &vs, &ve));
    KP_TRY(kp_tlv(b, ve, ke, 0x03, &vs, &ve));
    if (ve != ke) {
        return KP_ERR_TRAILING;
    }
    // issuerUniqueID, subjectUniqueID, extensions: well-formed and inside tbs
    p = ke;
    while (p < te) {
        KP_TRY(kp_tlv(b, p, te, -1, &vs, &p));
    }
    // signatureAlgorithm, signatureValue, then nothing
    KP_TRY(kp_tlv(b, te, ce, 0x30, &vs, &p));
    KP_TRY(kp_tlv(b, p, ce, 0x03, &vs, &p));
    if (p != ce) {
        return KP_ERR_TRAILING;
    }
    *end = ke;
    return KP_OK;
}

// ---- SHA-256 (FIPS 180-4) ----

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static const uint32_t kp_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static void kp_sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64], a, b, c, d, e, f, g, hh, t1, t2;
    int i;
    for (i = 0; i < 16; i++) {
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16)
            | ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
    }
    for (i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; hh = h[7];
    for (i = 0; i < 64; i++) {
        t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + kp_k[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

void kp_sha256_init(kp_sha256_ctx *c) {
    c->h[0] = 0x6a09e667; c->h[1] = 0xbb67ae85; c->h[2] = 0x3c6ef372; c->h[3] = 0xa54ff53a;
    c->h[4] = 0x510e527f; c->h[5] = 0x9b05688c; c->h[6] = 0x1f83d9ab; c->h[7] = 0x5be0cd19;
    c->bits = 0;
    c->n = 0;
}

void kp_sha256_update(kp_sha256_ctx *c, const uint8_t *p, size_t n) {
    c->bits += (uint64_t)n << 3;
    if (c->n) {
        while (n && c->n < 64) {
            c->blk[c->n++] = *p++;
            n--;
        }
        if (c->n < 64) {
            return;
        }
        kp_sha256_block(c->h, c->blk);
        c->n = 0;
    }
    while (n >= 64) {
        kp_sha256_block(c->h, p);
        p += 64;
        n -= 64;
    }
    while (n--) {
        c->blk[c->n++] = *p++;
    }
}

void kp_sha256_final(kp_sha256_ctx *c, uint8_t out[32]) {
    uint64_t bits = c->bits;
    int i;
    c->blk[c->n++] = 0x80;
    if (c->n > 56) {
        while (c->n < 64) {
            c->blk[c->n++] = 0;
        }
        kp_sha256_block(c->h, c->blk);
        c->n = 0;
    }
    while (c->n < 56) {
        c->blk[c->n++] = 0;
    }
    for (i = 0; i < 8; i++) {
        c->blk[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    kp_sha256_block(c->h, c->blk);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)c->h[i];
    }
}

int kp_spki_sha256(const uint8_t *buf, size_t len, uint8_t out[32]) {
    size_t s, e;
    kp_sha256_ctx c;
    int r = kp_spki_find(buf, len, &s, &e);
    if (r != KP_OK) {
        return r;
    }
    kp_sha256_init(&c);
    kp_sha256_update(&c, buf + s, e - s);
    kp_sha256_final(&c, out);
    return KP_OK;
}
