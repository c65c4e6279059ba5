/* ddb.c - DynamoDB JSON: plain JSON values <-> AttributeValue maps, and the body of the
 * conditional UpdateItem that every status write sends (contract section 6). Pure: no I/O.
 *
 * Every attribute name goes through ExpressionAttributeNames because many of ours are DynamoDB
 * reserved words (status, name, environment, ...), and every value through
 * ExpressionAttributeValues: nothing from an item is ever spliced into an expression. */
#include "proto/ddb.h"
#include "proto/util.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The condition below names the terminal statuses as :t0 .. :t3. */
_Static_assert(PROTO_TERMINAL_N == 4, "add_condition lists four terminal statuses");

/* Shortest text that reads back as the same double; integers below 2^53 without exponent. */
static void format_number(double v, char *buf, size_t n)
{
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(buf, n, "%.0f", v);
        if (!strcmp(buf, "-0"))
            snprintf(buf, n, "0");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static cJSON *typed(const char *type, cJSON *val)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !val || !cJSON_AddItemToObject(o, type, val)) {
        cJSON_Delete(o);
        cJSON_Delete(val);
        return NULL;
    }
    return o;
}

/* One plain value as an AttributeValue. Non-finite numbers have no DynamoDB form: NULL. */
static cJSON *marshal_value(const cJSON *v)
{
    if (cJSON_IsString(v))
        return typed("S", cJSON_CreateString(v->valuestring));
    if (cJSON_IsNumber(v) && isfinite(v->valuedouble)) {
        char num[64];
        format_number(v->valuedouble, num, sizeof num);
        return typed("N", cJSON_CreateString(num));
    }
    if (cJSON_IsBool(v))
        return typed("BOOL", cJSON_CreateBool(cJSON_IsTrue(v)));
    if (cJSON_IsArray(v)) {
        cJSON *l = cJSON_CreateArray();
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            cJSON *m = marshal_value(e);
            if (!l || !m || !cJSON_AddItemToArray(l, m)) {
                cJSON_Delete(m);
                cJSON_Delete(l);
                return NULL;
            }
        }
        return typed("L", l);
    }
    if (cJSON_IsObject(v))
        return typed("M", proto_ddb_marshal(v));
    return typed("NULL", cJSON_CreateTrue());
}

cJSON *proto_ddb_marshal(const cJSON *plain)
{
    cJSON *out = cJSON_CreateObject();
    const cJSON *m;
    cJSON_ArrayForEach(m, plain)
    {
        cJSON *v = marshal_value(m);
        if (!out || !v || !cJSON_AddItemToObject(out, m->string, v)) {
            cJSON_Delete(v);
            cJSON_Delete(out);
            return NULL;
        }
    }
    return out;
}

/* An array of S or N strings (SS, NS) as a plain array; NULL if not an array of strings. */
static cJSON *unmarshal_set(const cJSON *arr, bool numbers)
{
    if (!cJSON_IsArray(arr))
        return NULL;
    cJSON *out = cJSON_CreateArray();
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        if (!cJSON_IsString(e))
            continue;
        cJSON *v = numbers ? cJSON_CreateNumber(strtod(e->valuestring, NULL))
                           : cJSON_CreateString(e->valuestring);
        if (!out || !v || !cJSON_AddItemToArray(out, v)) {
            cJSON_Delete(v);
            cJSON_Delete(out);
            return NULL;
        }
    }
    return out;
}

/* One AttributeValue ({"S": ...} etc.) as a plain value; NULL for unknown or malformed types. */
static cJSON *unmarshal_value(const cJSON *av)
{
    const cJSON *t = cJSON_IsObject(av) ? av->child : NULL;
    if (!t || !t->string)
        return NULL;
    const char *ty = t->string;
    if (!strcmp(ty, "S") && cJSON_IsString(t))
        return cJSON_CreateString(t->valuestring);
    if (!strcmp(ty, "N") && cJSON_IsString(t))
        return cJSON_CreateNumber(strtod(t->valuestring, NULL));
    if (!strcmp(ty, "BOOL") && cJSON_IsBool(t))
        return cJSON_CreateBool(cJSON_IsTrue(t));
    if (!strcmp(ty, "NULL"))
        return cJSON_CreateNull();
    if (!strcmp(ty, "M") && cJSON_IsObject(t))
        return proto_ddb_unmarshal(t);
    if (!strcmp(ty, "SS") || !strcmp(ty, "NS"))
        return unmarshal_set(t, ty[0] == 'N');
    if (!strcmp(ty, "L") && cJSON_IsArray(t)) {
        cJSON *out = cJSON_CreateArray();
        const cJSON *e;
        cJSON_ArrayForEach(e, t)
        {
            cJSON *v = unmarshal_value(e);
            if (v && (!out || !cJSON_AddItemToArray(out, v)))
                cJSON_Delete(v);
        }
        return out;
    }
    return NULL;
}

cJSON *proto_ddb_unmarshal(const cJSON *item)
{
    cJSON *out = cJSON_CreateObject();
    if (!out)
        return NULL;
    const cJSON *m;
    cJSON_ArrayForEach(m, item)
    {
        cJSON *v = unmarshal_value(m);
        if (v && !cJSON_AddItemToObject(out, m->string, v)) {
            cJSON_Delete(v);
            cJSON_Delete(out);
            return NULL;
        }
    }
    return out;
}

static bool is_key(const char *const *key_names, const char *name)
{
    for (size_t i = 0; key_names[i]; i++)
        if (!strcmp(key_names[i], name))
            return true;
    return false;
}

/* The request under construction: expression text and the two placeholder maps. */
typedef struct {
    char *set, *remove; /* "SET ..." and "REMOVE ..." clauses being built */
    size_t set_len, remove_len;
    cJSON *names, *values; /* ExpressionAttributeNames / Values */
    bool oom;
} update_req;

/* Appends ", text" (or "PREFIX text" for the first) to a clause. */
static void clause_add(update_req *u, char **clause, size_t *len, const char *prefix,
                       const char *text)
{
    size_t need = *len + strlen(prefix) + strlen(text) + 3;
    char *p = realloc(*clause, need);
    if (!p) {
        u->oom = true;
        return;
    }
    *clause = p;
    *len += (size_t)sprintf(p + *len, "%s%s", *len ? ", " : prefix, text);
}

/* Adds one attribute of the item: SET #aN = :vN, or REMOVE #aN for JSON null. */
static void add_attribute(update_req *u, int n, const cJSON *m)
{
    char name[24], value[24], text[64];
    snprintf(name, sizeof name, "#a%d", n);
    if (!cJSON_AddStringToObject(u->names, name, m->string))
        u->oom = true;
    cJSON *av = cJSON_IsNull(m) ? NULL : marshal_value(m);
    if (av && cJSON_GetObjectItemCaseSensitive(av, "NULL")) {
        cJSON_Delete(av); /* a non-finite number: nothing to store, so remove it */
        av = NULL;
    }
    if (!av) {
        clause_add(u, &u->remove, &u->remove_len, "REMOVE ", name);
        return;
    }
    snprintf(value, sizeof value, ":v%d", n);
    snprintf(text, sizeof text, "%s = %s", name, value);
    if (!cJSON_AddItemToObject(u->values, value, av)) {
        cJSON_Delete(av);
        u->oom = true;
    }
    clause_add(u, &u->set, &u->set_len, "SET ", text);
}

/* The condition of contract section 6: a newer seq, and no terminal status replaced by another. */
static char *add_condition(update_req *u, const cJSON *item)
{
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(item, "status_seq");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(item, "status");
    if (!cJSON_AddStringToObject(u->names, "#seq", "status_seq") ||
        !cJSON_AddStringToObject(u->names, "#st", "status") ||
        !cJSON_AddItemToObject(u->values, ":seq", marshal_value(seq)))
        u->oom = true;
    for (int i = 0; i < PROTO_TERMINAL_N; i++) {
        char v[8];
        snprintf(v, sizeof v, ":t%d", i);
        if (!cJSON_AddItemToObject(u->values, v,
                                   typed("S", cJSON_CreateString(proto_terminal_statuses[i]))))
            u->oom = true;
    }
    bool same = cJSON_IsString(st);
    if (same && !cJSON_AddItemToObject(u->values, ":st", marshal_value(st)))
        u->oom = true;
    const char *cond = "(attribute_not_exists(#seq) OR #seq < :seq) AND "
                       "(attribute_not_exists(#st) OR NOT (#st IN (:t0, :t1, :t2, :t3))%s)";
    char *out = malloc(strlen(cond) + 32);
    if (out)
        sprintf(out, cond, same ? " OR #st = :st" : "");
    return out;
}

/* The Key map: every key attribute must be a string member of the item. */
static cJSON *build_key(const char *const *key_names, const cJSON *item)
{
    cJSON *key = cJSON_CreateObject();
    for (size_t i = 0; key && key_names[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, key_names[i]);
        if (!cJSON_IsString(v) || !cJSON_AddItemToObject(key, key_names[i], marshal_value(v))) {
            cJSON_Delete(key);
            return NULL;
        }
    }
    return key;
}

/* Assembles the request object from the finished parts (takes ownership of them). */
static char *finish_request(const char *table, cJSON *key, update_req *u, char *cond)
{
    char *body = NULL;
    size_t n = u->set_len + u->remove_len + 2;
    char *expr = malloc(n);
    cJSON *req = cJSON_CreateObject();
    if (expr && req && !u->oom && cond) {
        snprintf(expr, n, "%s%s%s", u->set ? u->set : "", u->set && u->remove ? " " : "",
                 u->remove ? u->remove : "");
        cJSON_AddStringToObject(req, "TableName", table);
        cJSON_AddItemToObject(req, "Key", key);
        key = NULL;
        cJSON_AddStringToObject(req, "UpdateExpression", expr);
        cJSON_AddStringToObject(req, "ConditionExpression", cond);
        cJSON_AddItemToObject(req, "ExpressionAttributeNames", u->names);
        cJSON_AddItemToObject(req, "ExpressionAttributeValues", u->values);
        u->names = u->values = NULL;
        body = cJSON_PrintUnformatted(req);
    }
    cJSON_Delete(req);
    cJSON_Delete(key);
    cJSON_Delete(u->names);
    cJSON_Delete(u->values);
    free(u->set);
    free(u->remove);
    free(expr);
    free(cond);
    return body;
}

char *proto_ddb_status_update(const char *table, const char *const *key_names, const cJSON *item)
{
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(item, "status_seq");
    if (!table || !*table || !key_names || !cJSON_IsObject(item) || !cJSON_IsNumber(seq) ||
        !isfinite(seq->valuedouble))
        return NULL;
    cJSON *key = build_key(key_names, item);
    if (!key)
        return NULL;
    update_req u = {.names = cJSON_CreateObject(), .values = cJSON_CreateObject()};
    u.oom = !u.names || !u.values;
    int n = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, item)
    {
        if (!u.oom && m->string && *m->string && !is_key(key_names, m->string))
            add_attribute(&u, n++, m);
    }
    char *cond = u.oom ? NULL : add_condition(&u, item);
    return finish_request(table, key, &u, cond);
}
