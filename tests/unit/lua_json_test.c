/* lua_json_test.c: the one-pass JSON decoder. Valid documents must decode
 * to the same Lua values as cJSON's tree does; documents that are not
 * RFC 8259 JSON (including those cJSON lets through) are refused with the
 * stack unchanged; random mutations never crash it and never make it accept
 * what cJSON refuses; the envelope decoder records the right spans. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>

#include "harness.h"
#include "lua_priv.h"

static hub_vm_t vm;

static void vm_setup(void)
{
    vm.L = luaL_newstate();
    lua_newtable(vm.L);
    vm.null_ref = luaL_ref(vm.L, LUA_REGISTRYINDEX);
    lua_newtable(vm.L);
    vm.array_mt_ref = luaL_ref(vm.L, LUA_REGISTRYINDEX);
    lua_rawgeti(vm.L, LUA_REGISTRYINDEX, vm.null_ref);
    vm.null_ptr = lua_topointer(vm.L, -1);
    lua_rawgeti(vm.L, LUA_REGISTRYINDEX, vm.array_mt_ref);
    vm.array_mt_ptr = lua_topointer(vm.L, -1);
    lua_pop(vm.L, 2);
}

static void vm_teardown(void)
{
    lua_close(vm.L);
    free(vm.scratch);
}

/* Pushes cJSON's view of item the way the old dispatch did. */
static void push_cjson(lua_State *L, const cJSON *item)
{
    luaL_checkstack(L, 4, "deep");
    if (cJSON_IsObject(item)) {
        lua_newtable(L);
        for (const cJSON *e = item->child; e; e = e->next) {
            push_cjson(L, e);
            lua_setfield(L, -2, e->string);
        }
    } else if (cJSON_IsArray(item)) {
        lua_newtable(L);
        int i = 1;
        for (const cJSON *e = item->child; e; e = e->next) {
            push_cjson(L, e);
            lua_rawseti(L, -2, i++);
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm.array_mt_ref);
        lua_setmetatable(L, -2);
    } else if (cJSON_IsString(item)) {
        lua_pushstring(L, item->valuestring);
    } else if (cJSON_IsNumber(item)) {
        lua_pushnumber(L, item->valuedouble);
    } else if (cJSON_IsBool(item)) {
        lua_pushboolean(L, cJSON_IsTrue(item));
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm.null_ref);
    }
}

/* Deep equality of the values at a and b (absolute indices). */
static int same(lua_State *L, int a, int b)
{
    int t = lua_type(L, a);
    if (t != lua_type(L, b))
        return 0;
    if (t == LUA_TNUMBER) {
        double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
        return x == y || (isnan(x) && isnan(y));
    }
    if (t != LUA_TTABLE)
        return lua_rawequal(L, a, b);
    if (lua_rawequal(L, a, b))
        return 1;
    /* same metatable (array marker or none) */
    int ma = lua_getmetatable(L, a), mb = lua_getmetatable(L, b);
    int mt_ok = ma == mb && (!ma || lua_rawequal(L, -1, -2));
    lua_pop(L, ma + mb);
    if (!mt_ok)
        return 0;
    int na = 0, nb = 0;
    lua_pushnil(L);
    while (lua_next(L, a)) {
        na++;
        lua_pushvalue(L, -2);
        lua_rawget(L, b);
        int ok = same(L, lua_gettop(L) - 1, lua_gettop(L));
        lua_pop(L, 2);
        if (!ok) {
            lua_pop(L, 1);
            return 0;
        }
    }
    lua_pushnil(L);
    while (lua_next(L, b)) {
        nb++;
        lua_pop(L, 1);
    }
    return na == nb;
}

/* 1 when cJSON accepts text (whole, blanks around allowed). */
static int cjson_accepts(const char *s, size_t n, cJSON **out)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (j == NULL)
        return 0;
    for (const char *p = end; p < s + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(j);
            return 0;
        }
    }
    if (out)
        *out = j;
    else
        cJSON_Delete(j);
    return 1;
}

/* Decodes s with both and compares; 1 when they agree on a valid doc. */
static int agrees(const char *s, size_t n)
{
    lua_State *L = vm.L;
    int top = lua_gettop(L);
    const char *err = NULL;
    cJSON *j = NULL;
    if (hub_lua_decode(&vm, s, n, &err) != 0 || !cjson_accepts(s, n, &j)) {
        lua_settop(L, top);
        if (j)
            cJSON_Delete(j);
        return 0;
    }
    push_cjson(L, j);
    cJSON_Delete(j);
    int ok = same(L, top + 1, top + 2);
    lua_settop(L, top);
    return ok;
}

static const char *valid[] = {
    "{}", "[]", "0", "-0", "1", "-1", "123456789", "1.5", "-1.5e10", "1E+2", "1e-7",
    "9007199254740993", "18446744073709551615", "99999999999999999999999", "1e400",
    "-1e400", "0.1", "123.456e-78", "\"\"", "\"abc\"", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
    "\"\\u00e9\\u20ac\\ud83d\\ude00\"", "\"h\xc3\xa9llo\"", "true", "false", "null",
    " { \"a\" : [ 1 , 2 , { \"b\" : null } ] , \"c\" : \"d\" } ",
    "{\"message_type\":\"room_message\",\"data\":{\"room_id\":\"x\",\"content\":{\"ts\":"
    "1700000000000000000,\"seq\":1}}}",
    "[[[[[[[[[[]]]]]]]]]]", "[1,[2,[3,[4]]]]", "{\"a\":{\"a\":{\"a\":{}}}}",
    "{\"dup\":1,\"dup\":2}", "[\"\\u0041\\u0042\"]", "\t\n\r [true]\r\n",
};

TEST(valid_documents_match_cjson)
{
    for (size_t i = 0; i < HUB_ARRAY_LEN(valid); i++)
        if (!agrees(valid[i], strlen(valid[i])))
            FAILF("decoder and cJSON disagree on %s", valid[i]);
}

static const char *invalid[] = {
    "", " ", "{", "}", "[", "]", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "[1,]", "[,1]",
    "{,}", "{\"a\" 1}", "{a:1}", "{'a':1}", "nul", "tru", "falsey", "NaN", "Infinity",
    "-", "+1", "01", "-01", "1.", ".5", "1e", "1e+", "0x10", "1 2", "{} {}", "\"abc",
    "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"", "\"\\ud800\"", "\"\\udc00\"",
    "\"\\ud800\\u0041\"", "\"a\x01" "b\"", "\"tab\there\"", "[1}", "{\"a\":1]", "\"\\\"",
    "[\"a\",]", "{\"a\":1 \"b\":2}",
};

TEST(invalid_documents_are_refused_with_the_stack_unchanged)
{
    lua_State *L = vm.L;
    for (size_t i = 0; i < HUB_ARRAY_LEN(invalid); i++) {
        int top = lua_gettop(L);
        const char *err = NULL;
        if (hub_lua_decode(&vm, invalid[i], strlen(invalid[i]), &err) == 0)
            FAILF("accepted invalid JSON %s", invalid[i]);
        if (err == NULL || lua_gettop(L) != top)
            FAILF("no reason or stack moved for %s", invalid[i]);
    }
}

TEST(nesting_limit_and_a_megabyte_of_brackets)
{
    size_t n = 1 << 20;
    char *s = malloc(n + 2);
    ASSERT(s != NULL);
    memset(s, '[', 1000);
    memset(s + 1000, ']', 1000);
    const char *err;
    ASSERT_EQ(hub_lua_decode(&vm, s, 2000, &err), 0);
    lua_pop(vm.L, 1);
    memset(s, '[', 1001);
    memset(s + 1001, ']', 1001);
    ASSERT(hub_lua_decode(&vm, s, 2002, &err) != 0);
    memset(s, '[', n);
    ASSERT(hub_lua_decode(&vm, s, n, &err) != 0);
    free(s);
}

TEST(numbers_round_like_strtod)
{
    static const char *nums[] = { "9007199254740993", "9007199254740995", "1234567890123456789",
                                  "9999999999999999999", "-9223372036854775808",
                                  "18446744073709551615", "12345678901234567890123",
                                  "1.7976931348623157e308", "4.9e-324", "-0.0" };
    for (size_t i = 0; i < HUB_ARRAY_LEN(nums); i++) {
        const char *err;
        ASSERT_EQ(hub_lua_decode(&vm, nums[i], strlen(nums[i]), &err), 0);
        double got = lua_tonumber(vm.L, -1), want = strtod(nums[i], NULL);
        lua_pop(vm.L, 1);
        if (got != want)
            FAILF("%s: got %.17g, strtod %.17g", nums[i], got, want);
    }
}

TEST(nul_is_kept_in_strings)
{
    const char *err;
    ASSERT_EQ(hub_lua_decode(&vm, "\"a\\u0000b\"", 10, &err), 0);
    size_t n;
    const char *s = lua_tolstring(vm.L, -1, &n);
    ASSERT_EQ(n, 3);
    ASSERT(memcmp(s, "a\0b", 3) == 0);
    lua_pop(vm.L, 1);
}

/* Strings are scanned eight bytes at a time: an escape or a raw control at
 * every offset of the first words, both ways (decode, then encode back to
 * the same text), and a raw control refused wherever it is. */
TEST(string_specials_at_every_offset)
{
    static const char *esc[] = { "\\\"", "\\\\", "\\n", "\\u0001" };
    char doc[64];
    hub_lua_buf_t out = { NULL, 0, 0 };
    char err[128];
    for (int len = 1; len <= 20; len++) {
        for (int pos = 0; pos < len; pos++) {
            for (size_t k = 0; k < sizeof(esc) / sizeof(esc[0]); k++) {
                int n = snprintf(doc, sizeof(doc), "\"%.*s%s%.*s\"", pos, "aaaaaaaaaaaaaaaaaaaa",
                                 esc[k], len - pos - 1, "bbbbbbbbbbbbbbbbbbbb");
                ASSERT(agrees(doc, (size_t)n));
                const char *derr;
                ASSERT_EQ(hub_lua_decode(&vm, doc, (size_t)n, &derr), 0);
                ASSERT_EQ(hub_lua_encode(&vm, -1, &out, err, sizeof(err)), 0);
                ASSERT_EQ(out.len, (size_t)n);
                ASSERT(memcmp(out.p, doc, (size_t)n) == 0);
                lua_pop(vm.L, 1);
            }
            int n = snprintf(doc, sizeof(doc), "\"%.*s\x01%.*s\"", pos, "aaaaaaaaaaaaaaaaaaaa",
                             len - pos - 1, "bbbbbbbbbbbbbbbbbbbb");
            const char *derr;
            int top = lua_gettop(vm.L);
            ASSERT(hub_lua_decode(&vm, doc, (size_t)n, &derr) != 0);
            ASSERT_EQ(lua_gettop(vm.L), top);
        }
    }
    free(out.p);
}

/* Integer digits are scanned eight at a time: every length up to 30, at
 * every offset, ended by each byte that may or may not follow a number,
 * decodes as cJSON does or is refused by both. */
TEST(digit_runs_of_every_length)
{
    static const char after[] = { ',', ']', ' ', '.', 'e', '/', ':', 'x', '\x80', '0', '\0' };
    char doc[96];
    for (int pad = 0; pad < 8; pad++) {
        for (int len = 1; len <= 30; len++) {
            for (size_t k = 0; k < sizeof(after); k++) {
                int n = snprintf(doc, sizeof(doc), "[%.*s%.*s", pad, "        ", len,
                                 "123456789012345678901234567890");
                doc[n++] = after[k];
                n += snprintf(doc + n, sizeof(doc) - (size_t)n, "%s", after[k] == ']' ? "" : "1]");
                const char *err;
                int top = lua_gettop(vm.L);
                int ours = hub_lua_decode(&vm, doc, (size_t)n, &err) == 0;
                lua_settop(vm.L, top);
                if (ours != cjson_accepts(doc, (size_t)n, NULL) && after[k] != '\0')
                    FAILF("%.*s: ours %d", n, doc, ours);
                if (ours && !agrees(doc, (size_t)n))
                    FAILF("%.*s decodes differently", n, doc);
            }
        }
    }
}

/* Which tables encode as arrays and which as objects: a table is an array
 * when it carries the array marker or is a sequence 1..n (n > 0) with no
 * other keys; anything else, the empty table included, is an object. The
 * cases have at most one hash key, so the text does not depend on the
 * order of a table walk. */
TEST(encoder_table_shapes)
{
    static const struct {
        const char *lua, *json;
    } cases[] = {
        { "return {}", "{}" },
        { "return setmetatable({}, A)", "[]" },
        { "return setmetatable({1, 2}, A)", "[1,2]" },
        { "return {1, 'a', true}", "[1,\"a\",true]" },
        { "return {[2] = 'x'}", "{\"2\":\"x\"}" },
        { "return {[0] = 'x'}", "{\"0\":\"x\"}" },
        { "return {[1.5] = 'x'}", "{\"1.5\":\"x\"}" },
        { "return {a = 1}", "{\"a\":1}" },
        { "return {1, a = 2}", "{\"1\":1,\"a\":2}" },
        { "return {x = {}}", "{\"x\":{}}" },
        { "return {x = {{}, N}}", "{\"x\":[{},null]}" },
        { "return {t = 1700000000000, n = nil}", "{\"t\":1700000000000}" },
        { "return N", "null" },
        /* not UTF-8: each bad byte is U+FFFD, in keys and values, beside
         * escapes, in short strings and long ones */
        { "return {['k\\255'] = 'a\\255\\195\\169\\n\\237\\160\\128'}",
          "{\"k\xef\xbf\xbd\":\"a\xef\xbf\xbd\xc3\xa9\\n\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}" },
        { "return {'abcdefghijklmnop\\226\\130'}",
          "[\"abcdefghijklmnop\xef\xbf\xbd\xef\xbf\xbd\"]" },
    };
    hub_lua_buf_t out = { NULL, 0, 0 };
    char err[128];
    lua_State *L = vm.L;
    lua_pushcfunction(L, luaopen_base); /* setmetatable */
    lua_call(L, 0, 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int top = lua_gettop(L);
        ASSERT_EQ(luaL_loadstring(L, cases[i].lua), 0);
        lua_newtable(L); /* the chunk's environment: A, N and setmetatable */
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm.array_mt_ref);
        lua_setfield(L, -2, "A");
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm.null_ref);
        lua_setfield(L, -2, "N");
        lua_getglobal(L, "setmetatable");
        lua_setfield(L, -2, "setmetatable");
        lua_setfenv(L, -2);
        ASSERT_EQ(lua_pcall(L, 0, 1, 0), 0);
        ASSERT_EQ(hub_lua_encode(&vm, -1, &out, err, sizeof(err)), 0);
        if (strcmp(out.p, cases[i].json) != 0)
            fprintf(stderr, "  %s: got %s, want %s\n", cases[i].lua, out.p, cases[i].json);
        ASSERT(strcmp(out.p, cases[i].json) == 0);
        ASSERT_EQ(lua_gettop(L), top + 1);
        lua_settop(L, top);
    }
    free(out.p);
}

/* Random edits of valid documents: never a crash (ASan), never accepted
 * when cJSON refuses, and equal values when both accept (unless the edit
 * made a \u0000, which cJSON cuts). */
TEST(mutations_never_crash_and_never_exceed_cjson)
{
    static const char alphabet[] = "{}[]\",:\\ 0123456789.eE+-tfnul\"abu";
    unsigned seed = 12345;
    char buf[256];
    int accepted = 0;
    for (int it = 0; it < 60000; it++) {
        const char *src = valid[rand_r(&seed) % HUB_ARRAY_LEN(valid)];
        size_t n = strlen(src);
        memcpy(buf, src, n);
        int edits = 1 + rand_r(&seed) % 3;
        for (int e = 0; e < edits; e++) {
            size_t pos = n ? (size_t)rand_r(&seed) % n : 0;
            char ch = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
            int op = rand_r(&seed) % 3;
            if (op == 0 && n) {
                buf[pos] = ch;
            } else if (op == 1 && n + 1 < sizeof(buf)) {
                memmove(buf + pos + 1, buf + pos, n - pos);
                buf[pos] = ch;
                n++;
            } else if (n) {
                memmove(buf + pos, buf + pos + 1, n - pos - 1);
                n--;
            }
        }
        int top = lua_gettop(vm.L);
        const char *err;
        int mine = hub_lua_decode(&vm, buf, n, &err) == 0;
        lua_settop(vm.L, top);
        if (!mine)
            continue;
        accepted++;
        if (!cjson_accepts(buf, n, NULL))
            FAILF("accepted what cJSON refuses: %.*s", (int)n, buf);
        if (memmem(buf, n, "\\u0000", 6) == NULL && !agrees(buf, n))
            FAILF("values differ from cJSON: %.*s", (int)n, buf);
    }
    ASSERT(accepted > 1000); /* the mutations did exercise valid documents */
}

TEST(envelope_spans_and_data)
{
    const char *m = "{\"message_id\":42,\"message_type\":\"room_message\","
                    "\"data\":{\"room_id\":\"r1\",\"content\":{\"a\":[1,2]},\"x\":\"\\u00e9\"}}";
    hub_json_env_t env;
    int top = lua_gettop(vm.L);
    ASSERT_EQ(hub_lua_decode_envelope(&vm, m, strlen(m), &env), 0);
    ASSERT_EQ(lua_gettop(vm.L), top + 1);
    ASSERT(lua_istable(vm.L, -1));
    lua_getfield(vm.L, -1, "room_id");
    ASSERT(strcmp(lua_tostring(vm.L, -1), "r1") == 0);
    lua_settop(vm.L, top);
    ASSERT(env.id_len == 2 && memcmp(env.id, "42", 2) == 0);
    ASSERT(env.type_is_string && env.type_len == 14 && memcmp(env.type, "\"room_message\"", 14) == 0);
    const hub_env_member_t *c = hub_json_env_member(&env, "content");
    ASSERT(c != NULL && c->val_len == 11 && memcmp(c->val, "{\"a\":[1,2]}", 11) == 0);
    ASSERT(hub_json_env_member(&env, "a") == NULL); /* nested members are not data's */
    ASSERT(!env.has_nul && !env.overflow);
}

TEST(envelope_duplicates_last_wins_everywhere)
{
    const char *m = "{\"data\":{\"k\":1,\"k\":2},\"message_type\":\"a\",\"message_type\":\"b\","
                    "\"data\":{\"k\":3}}";
    hub_json_env_t env;
    int top = lua_gettop(vm.L);
    ASSERT_EQ(hub_lua_decode_envelope(&vm, m, strlen(m), &env), 0);
    ASSERT_EQ(lua_gettop(vm.L), top + 1);
    lua_getfield(vm.L, -1, "k");
    ASSERT_EQ(lua_tointeger(vm.L, -1), 3);
    lua_settop(vm.L, top);
    ASSERT(memcmp(env.type, "\"b\"", 3) == 0);
    const hub_env_member_t *k = hub_json_env_member(&env, "k");
    ASSERT(k != NULL && k->val_len == 1 && k->val[0] == '3');
}

TEST(envelope_refusals)
{
    hub_json_env_t env;
    int top = lua_gettop(vm.L);
    ASSERT(hub_lua_decode_envelope(&vm, "[1]", 3, &env) != 0 && env.not_object);
    ASSERT(hub_lua_decode_envelope(&vm, "{\"data\":{}", 10, &env) != 0 && !env.not_object);
    ASSERT(hub_lua_decode_envelope(&vm, "{} x", 4, &env) != 0);
    ASSERT_EQ(lua_gettop(vm.L), top);
    const char *nul = "{\"message_type\":\"ping\",\"data\":{\"s\":\"a\\u0000\"}}";
    ASSERT_EQ(hub_lua_decode_envelope(&vm, nul, strlen(nul), &env), 0);
    ASSERT(env.has_nul);
    lua_settop(vm.L, top);
    /* no data member: an empty table */
    ASSERT_EQ(hub_lua_decode_envelope(&vm, "{\"message_type\":\"ping\"}", 23, &env), 0);
    ASSERT(lua_istable(vm.L, -1) && env.data == NULL);
    lua_settop(vm.L, top);
}

TEST(envelope_overflow_beyond_recorded_members)
{
    char m[1024];
    size_t n = (size_t)snprintf(m, sizeof(m), "{\"data\":{");
    for (int i = 0; i < HUB_JSON_MEMBERS + 4; i++)
        n += (size_t)snprintf(m + n, sizeof(m) - n, "%s\"k%d\":%d", i ? "," : "", i, i);
    n += (size_t)snprintf(m + n, sizeof(m) - n, "}}");
    hub_json_env_t env;
    int top = lua_gettop(vm.L);
    ASSERT_EQ(hub_lua_decode_envelope(&vm, m, n, &env), 0);
    lua_settop(vm.L, top);
    ASSERT(env.overflow);
    ASSERT_EQ(env.nmembers, HUB_JSON_MEMBERS);
    ASSERT(hub_json_env_member(&env, "k0") != NULL);
}

int main(void)
{
    vm_setup();
    RUN(valid_documents_match_cjson);
    RUN(invalid_documents_are_refused_with_the_stack_unchanged);
    RUN(nesting_limit_and_a_megabyte_of_brackets);
    RUN(numbers_round_like_strtod);
    RUN(nul_is_kept_in_strings);
    RUN(string_specials_at_every_offset);
    RUN(encoder_table_shapes);
    RUN(digit_runs_of_every_length);
    RUN(mutations_never_crash_and_never_exceed_cjson);
    RUN(envelope_spans_and_data);
    RUN(envelope_duplicates_last_wins_everywhere);
    RUN(envelope_refusals);
    RUN(envelope_overflow_beyond_recorded_members);
    vm_teardown();
    HARNESS_MAIN_END();
}
