/* jsonnul.h - finding "\u0000" escapes in JSON text. cJSON decodes them into a NUL byte and its
 * strings end there, so "a\u0000; rm -rf /" silently becomes "a": every reader of JSON that
 * people or tasks write (flow_spec.json, parameters, batch files) refuses them instead, naming
 * where they were. No I/O. */
#ifndef DAGY_JSONNUL_H
#define DAGY_JSONNUL_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>

/* True if a string (a value or a member name) of the JSON text json[0..len) holds a \u0000
 * escape. Exact: "\\u0000" (an escaped backslash, then "u0000") is not one. Text that is not
 * JSON may give either answer; the parser refuses it anyway. */
bool proto_json_has_nul(const char *json, size_t len);

/* Parses a copy of the text in which every \u0000 escape is replaced by the escape of a
 * noncharacter (U+FDD0..U+FDEF) that appears nowhere in the text, so the strings that held a
 * NUL can be found in the tree: `marker` gets that character as NUL-terminated UTF-8 (at least
 * 4 bytes). NULL if the text does not parse, if every candidate appears in it, or on ENOMEM.
 * Caller frees the tree with cJSON_Delete. */
cJSON *proto_json_parse_nul_marked(const char *json, size_t len, char *marker);

/* True if `node`, a member name of it, or any string or member name below it contains
 * `marker`. */
bool proto_json_holds(const cJSON *node, const char *marker);

/* Where the first NUL is, for messages about JSON without a known structure: a path such as
 * `[2].parameters.day` (member names quoted when they are not plain words; `<member name>` when
 * a member name holds the NUL), or "line L, column
 * C" if no path can be found. Writes at most n bytes. */
void proto_json_nul_where(const char *json, size_t len, char *where, size_t n);

#endif
