/* Sub-byte packing (ONNX layout): 4-bit values two per byte, 2-bit values four per byte,
 * the first value in the lowest bits. Plain loops; -O3 vectorizes them. */
#include "convert/convert.h"

void qc_pack_bits_u8(const uint8_t *x, uint8_t *y, size_t n, int bits) {
    const unsigned mask = (1u << bits) - 1u;
    const size_t per = (size_t)(8 / bits);
    const size_t full = n / per;
    if (bits == 4) {
        for (size_t i = 0; i < full; i++) {
            y[i] = (uint8_t)((x[2 * i] & 0xFu) | ((x[2 * i + 1] & 0xFu) << 4));
        }
    } else {
        for (size_t i = 0; i < full; i++) {
            const uint8_t *s = x + 4 * i;
            y[i] = (uint8_t)((s[0] & 3u) | ((s[1] & 3u) << 2) | ((s[2] & 3u) << 4) |
                             ((s[3] & 3u) << 6));
        }
    }
    if (full * per < n) { /* the short last byte, padded with zero bits */
        unsigned b = 0;
        for (size_t k = 0; full * per + k < n; k++) {
            b |= (x[full * per + k] & mask) << (bits * (int)k);
        }
        y[full] = (uint8_t)b;
    }
}
