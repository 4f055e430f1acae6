/*
 * fuzz_ndjson.c - libFuzzer target: the NDJSON line parser of
 * `sse-pub stream --format ndjson`.
 *
 * bus/sse_pub.c is included whole with SSE_PUB_NO_MAIN (its parser is
 * static; sse-pub itself is built without the macro, so its behaviour is
 * unchanged). Each input is one line, copied into a buffer of exactly its
 * size, since the parser decodes strings in place (ASan sees any byte read
 * or written outside the line). Properties:
 *   - every value returned lies inside the line;
 *   - round trip: the decoded values, encoded again as JSON (every byte
 *     < 0x20, '"' and '\\' escaped), parse to the same values;
 *   - a line the parser accepts gives an event that sse_bus_event_check
 *     accepts or refuses without crashing, as cmd_stream uses it.
 */
#define SSE_PUB_NO_MAIN
#include "../../bus/sse_pub.c"

#include "fuzz_common.h"

static size_t json_encode(char *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    o[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            o[k++] = '\\';
            o[k++] = (char)ch;
        } else if (ch < 0x20) {
            memcpy(o + k, "\\u00", 4);
            k += 4;
            o[k++] = hex[ch >> 4];
            o[k++] = hex[ch & 15];
        } else {
            o[k++] = (char)ch;
        }
    }
    o[k++] = '"';
    return k;
}

static sse_bus_t *ro;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ndjson_fields_t f, g;
    char *line = malloc(size ? size : 1);
    const char *why;
    fuzz_assert(line);
    if (!ro)
        ro = fuzz_bus("nd.bus", 64u * 1024u, 0, SSE_BUS_RDONLY);
    memcpy(line, data, size);
    why = ndjson_parse(line, size, &f);
    if (why) {
        fuzz_assert(why[0] != '\0');
        free(line);
        return 0;
    }
    for (int i = 0; i < 4; i++) {
        if (!f.v[i])
            continue;
        fuzz_assert(f.v[i] >= line && f.v[i] + f.len[i] <= line + size);
    }

    /* round trip */
    size_t cap = 16;
    for (int i = 0; i < 4; i++)
        cap += 16 + f.len[i] * 6;
    char *enc = malloc(cap), *p = enc;
    fuzz_assert(enc);
    *p++ = '{';
    for (int i = 0, first = 1; i < 4; i++) {
        if (!f.v[i])
            continue;
        if (!first)
            *p++ = ',';
        first = 0;
        p += json_encode(p, ndjson_keys[i], strlen(ndjson_keys[i]));
        *p++ = ':';
        p += json_encode(p, f.v[i], f.len[i]);
    }
    *p++ = '}';
    fuzz_assert((size_t)(p - enc) <= cap);
    why = ndjson_parse(enc, (size_t)(p - enc), &g);
    fuzz_assert(why == NULL);
    for (int i = 0; i < 4; i++) {
        fuzz_assert(!f.v[i] == !g.v[i]);
        if (f.v[i])
            fuzz_assert(f.len[i] == g.len[i]
                        && memcmp(f.v[i], g.v[i], f.len[i]) == 0);
    }

    /* as cmd_stream uses it */
    sse_bus_event_t ev;
    sse_bus_error_t err;
    memset(&ev, 0, sizeof ev);
    ev.channel = f.v[0] ? f.v[0] : "default";
    ev.channel_len = f.v[0] ? f.len[0] : 7;
    if (f.v[1]) { ev.event = f.v[1]; ev.event_len = f.len[1]; }
    if (f.v[2]) { ev.id = f.v[2]; ev.id_len = f.len[2]; }
    ev.data = f.v[3] ? f.v[3] : "";
    ev.data_len = f.v[3] ? f.len[3] : 0;
    int rc = sse_bus_event_check(ro, &ev, &err);
    fuzz_assert(rc == SSE_BUS_OK || err.msg[0] != '\0');
    free(enc);
    free(line);
    return 0;
}
