/*
 * names.c - the rules for names on the wire and in snapshot files: which
 * model and tensor names are valid, and the names of the tensor kinds.
 */
#include <stdint.h>
#include <string.h>

#include "common/names.h"

const char *
names_kind_name(int kind)
{
    switch (kind) {
    case EMAD_PARAM:
        return "param";
    case EMAD_BUFFER:
        return "buffer";
    default:
        return NULL;
    }
}

int
names_kind_from_name(const char *name, size_t len)
{
    if (len == 5 && memcmp(name, "param", 5) == 0)
        return EMAD_PARAM;
    if (len == 6 && memcmp(name, "buffer", 6) == 0)
        return EMAD_BUFFER;
    return -1;
}

int
names_check_model(const char *name, size_t len)
{
    if (len == 0 || len > EMAD_MAX_MODEL_NAME_BYTES || name[0] == '.' || name[0] == '-')
        return EMAD_ENAME;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return EMAD_ENAME;
    }
    return 0;
}

int
names_check_tensor(const char *name, size_t len)
{
    const unsigned char *p = (const unsigned char *)name;
    size_t i = 0;

    if (len == 0 || len > EMAD_MAX_NAME_BYTES)
        return EMAD_ENAME;
    /* Eight bytes at a time while they are all printable ASCII (0x20..0x7e), the usual case. */
    while (i + 8 <= len) {
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        uint64_t x;
        memcpy(&x, p + i, sizeof(x));
        if ((((x - 0x20 * ones) & ~x) | ((x + ones) | x)) & highs)
            break; /* a byte below 0x20 or above 0x7e: the loop below looks at it */
        i += 8;
    }
    while (i < len) {
        unsigned char c = p[i];
        size_t n;
        uint32_t cp;

        if (c < 0x20 || c == 0x7f)
            return EMAD_ENAME;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return EMAD_ENAME;
        }
        if (i + n >= len)
            return EMAD_ENAME;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return EMAD_ENAME;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        /* Overlong forms, surrogates, beyond U+10FFFF. */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return EMAD_ENAME;
        /* C1 controls (U+0085 NEL, U+009B CSI, ...) and the line and paragraph separators. */
        if (cp <= 0x9f || cp == 0x2028 || cp == 0x2029)
            return EMAD_ENAME;
        i += n + 1;
    }
    return 0;
}

const char *
names_printable(char *buf, size_t size, const char *s, size_t len)
{
    size_t n = len < size - 1 ? len : size - 1;

    for (size_t i = 0; i < n; i++)
        buf[i] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? s[i] : '?';
    buf[n] = '\0';
    return buf;
}
