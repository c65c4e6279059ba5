/* jsonnul.c - finding "\u0000" escapes in JSON text, and where they are (jsonnul.h). */
#include "proto/jsonnul.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NOT_FOUND SIZE_MAX

/* Offset of the first \u0000 escape inside a string at or after `from`, or NOT_FOUND. The
 * scan starts outside any string, so `from` must be 0 or just past a previous hit. */
static size_t next_nul(const char *json, size_t len, size_t from, bool *in_string)
{
    for (size_t i = from; i < len; i++) {
        char c = json[i];
        if (!*in_string) {
            *in_string = c == '"';
            continue;
        }
        if (c == '"') {
            *in_string = false;
        } else if (c == '\\' && i + 1 < len) {
            if (json[i + 1] == 'u' && i + 6 <= len && !memcmp(json + i + 2, "0000", 4))
                return i;
            i++; /* the escaped character, whatever it is ("\\" and "\"" included) */
        }
    }
    return NOT_FOUND;
}

bool proto_json_has_nul(const char *json, size_t len)
{
    bool in_string = false;
    return json && next_nul(json, len, 0, &in_string) != NOT_FOUND;
}

/* True if the text holds character U+FDD0 + k, raw (EF B7 90+k) or escaped (\uFDDx, any
 * case). */
static bool text_holds(const char *json, size_t len, unsigned k)
{
    unsigned cp = 0xFDD0 + k;
    unsigned char raw[3] = {0xEF, 0xB7, (unsigned char)(0x80 | (cp & 0x3F))};
    char esc[5];
    snprintf(esc, sizeof esc, "%04x", cp);
    for (size_t i = 0; i + 3 <= len; i++) {
        if (!memcmp(json + i, raw, 3))
            return true;
        if (i + 6 <= len && json[i] == '\\' && json[i + 1] == 'u' &&
            !strncasecmp(json + i + 2, esc, 4))
            return true;
    }
    return false;
}

cJSON *proto_json_parse_nul_marked(const char *json, size_t len, char *marker)
{
    unsigned k = 0;
    while (k < 32 && text_holds(json, len, k))
        k++;
    if (k == 32)
        return NULL;
    char *copy = malloc(len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, json, len);
    copy[len] = '\0';
    char esc[7];
    snprintf(esc, sizeof esc, "\\u%04X", 0xFDD0 + k);
    bool in_string = false;
    for (size_t i = next_nul(copy, len, 0, &in_string); i != NOT_FOUND;
         i = next_nul(copy, len, i + 6, &in_string))
        memcpy(copy + i, esc, 6); /* same length: offsets and line numbers do not move */
    cJSON *tree = cJSON_ParseWithLength(copy, len);
    free(copy);
    unsigned cp = 0xFDD0 + k;
    marker[0] = (char)0xEF, marker[1] = (char)0xB7, marker[2] = (char)(0x80 | (cp & 0x3F));
    marker[3] = '\0';
    return tree;
}

bool proto_json_holds(const cJSON *node, const char *marker)
{
    if (!node)
        return false;
    if (node->string && strstr(node->string, marker))
        return true;
    if (cJSON_IsString(node) && node->valuestring && strstr(node->valuestring, marker))
        return true;
    for (const cJSON *c = node->child; c; c = c->next)
        if (proto_json_holds(c, marker))
            return true;
    return false;
}

/* True if s is a plain word that needs no quotes in a path. */
static bool plain_word(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-'))
            return false;
    return true;
}

/* Appends one step of the path to `where` (kept NUL-terminated; truncation is fine). */
static void add_step(char *where, size_t n, const cJSON *parent, const cJSON *child, size_t index,
                     const char *marker)
{
    size_t k = strlen(where);
    if (k + 1 >= n)
        return;
    if (cJSON_IsArray(parent))
        snprintf(where + k, n - k, "[%zu]", index);
    else if (child->string && strstr(child->string, marker))
        snprintf(where + k, n - k, "%s<member name>", k ? "." : "");
    else if (child->string && plain_word(child->string))
        snprintf(where + k, n - k, "%s%s", k ? "." : "", child->string);
    else
        snprintf(where + k, n - k, "%s\"%.60s\"", k ? "." : "", child->string ? child->string : "");
}

void proto_json_nul_where(const char *json, size_t len, char *where, size_t n)
{
    char marker[4];
    if (!n)
        return;
    where[0] = '\0';
    cJSON *tree = proto_json_parse_nul_marked(json, len, marker);
    const cJSON *node = tree;
    while (node && !(node->string && strstr(node->string, marker)) && !cJSON_IsString(node)) {
        const cJSON *next = NULL;
        size_t i = 0;
        for (const cJSON *c = node->child; c && !next; c = c->next, i++)
            if (proto_json_holds(c, marker))
                next = c;
        if (!next)
            break;
        add_step(where, n, node, next, i - 1, marker);
        node = next;
    }
    bool found = node && proto_json_holds(node, marker);
    cJSON_Delete(tree);
    if (found && where[0])
        return;
    /* No path (a bare string, or the tree could not be marked): say line and column. */
    bool in_string = false;
    size_t at = next_nul(json, len, 0, &in_string), line = 1, col = 1;
    for (size_t i = 0; i < at && i < len; i++) {
        if (json[i] == '\n')
            line++, col = 1;
        else
            col++;
    }
    snprintf(where, n, "line %zu, column %zu", line, col);
}
