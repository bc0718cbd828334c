/* Unit tests for the JWT signer and the access-token providers.
 *
 * HTTP never happens here: each provider's transport is replaced through
 * auth_set_hooks with fake_perform, which records the request and answers
 * with a canned response, and the monotonic clock with a fake one the
 * tests move by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http/auth.h"
#include "http/auth_internal.h"
#include "http/http.h"
#include "http/jwt.h"
#include "util/log.h"

/* auth.c names http_perform as its default transport. Every provider made
 * here has its transport replaced, so this stand-in is never called; it
 * only lets the test link without the real client, and being weak it
 * yields to the real one whenever that is linked in. */
__attribute__((weak)) int http_perform(struct http_client *c, const struct http_request *req,
                                       struct http_response *resp)
{
    (void)c;
    (void)req;
    (void)resp;
    fail_msg("the real HTTP client was called");
    return -ENOSYS;
}

#define SCOPE_RO "https://www.googleapis.com/auth/devstorage.read_only"
#define TEST_EMAIL "reader@example-project.iam.gserviceaccount.com"
#define TEST_TOKEN_URI "https://oauth2.example.test/token"
#define FORM_PREFIX "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="

/* ---- shared state: one RSA key for the whole run (keygen is slow) ---- */

struct keys {
    EVP_PKEY *pkey;
    char *pem; /* PKCS#8 PEM of pkey's private half, like Google's key files */
};

static char *pem_of(EVP_PKEY *pkey, const EVP_CIPHER *cipher, const char *pass)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    assert_int_equal(PEM_write_bio_PrivateKey(bio, pkey, cipher, (unsigned char *)pass,
                                              pass ? (int)strlen(pass) : 0, NULL, NULL),
                     1);
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    assert_true(len > 0);
    char *copy = strndup(data, (size_t)len);
    assert_non_null(copy);
    BIO_free(bio);
    return copy;
}

static int group_setup(void **state)
{
    struct keys *k = calloc(1, sizeof(*k));
    if (!k)
        return -1;
    k->pkey = EVP_RSA_gen(2048);
    if (!k->pkey)
        return -1;
    k->pem = pem_of(k->pkey, NULL, NULL);
    *state = k;
    return 0;
}

static int group_teardown(void **state)
{
    struct keys *k = *state;
    EVP_PKEY_free(k->pkey);
    free(k->pem);
    free(k);
    return 0;
}

/* ---- helpers ---- */

static size_t b64url_decode(const char *in, size_t len, unsigned char *out, size_t size)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        const char *p = memchr(alphabet, in[i], 64);
        assert_non_null(p);
        acc = acc << 6 | (uint32_t)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            assert_true(o < size);
            out[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    return o;
}

struct jwt_parts {
    char header[1024];
    char claims[2048];
    unsigned char sig[1024];
    size_t sig_len;
    size_t signed_len; /* length of "header64.claims64" */
};

static void split_jwt(const char *jwt, struct jwt_parts *p)
{
    memset(p, 0, sizeof(*p));
    const char *dot1 = strchr(jwt, '.');
    assert_non_null(dot1);
    const char *dot2 = strchr(dot1 + 1, '.');
    assert_non_null(dot2);
    assert_null(strchr(dot2 + 1, '.'));
    /* base64url without padding: none of the standard alphabet's extras */
    assert_null(strpbrk(jwt, "=+/"));
    b64url_decode(jwt, (size_t)(dot1 - jwt), (unsigned char *)p->header, sizeof(p->header) - 1);
    b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), (unsigned char *)p->claims,
                  sizeof(p->claims) - 1);
    p->sig_len = b64url_decode(dot2 + 1, strlen(dot2 + 1), p->sig, sizeof(p->sig));
    p->signed_len = (size_t)(dot2 - jwt);
}

static bool verify_rs256(EVP_PKEY *pkey, const char *jwt, const struct jwt_parts *p)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    assert_non_null(md);
    assert_int_equal(EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pkey), 1);
    assert_true(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0);
    int ok = EVP_DigestVerify(md, p->sig, p->sig_len, (const unsigned char *)jwt, p->signed_len);
    EVP_MD_CTX_free(md);
    return ok == 1;
}

struct tmpdir {
    char path[256];
};

static void tmpdir_make(struct tmpdir *t)
{
    const char *base = getenv("TMPDIR");
    snprintf(t->path, sizeof(t->path), "%s/zipperfs-auth-XXXXXX", base && base[0] ? base : "/tmp");
    assert_non_null(mkdtemp(t->path));
}

static void tmpdir_file(const struct tmpdir *t, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s", t->path, name);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_str(const char *path, const char *s)
{
    write_file(path, s, strlen(s));
}

/* A key file's JSON; NULL fields are left out. */
static char *key_json(const char *type, const char *email, const char *pem, const char *kid,
                      const char *token_uri)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "project_id", json_object_new_string("example-project"));
    if (type)
        json_object_object_add(o, "type", json_object_new_string(type));
    if (email)
        json_object_object_add(o, "client_email", json_object_new_string(email));
    if (pem)
        json_object_object_add(o, "private_key", json_object_new_string(pem));
    if (kid)
        json_object_object_add(o, "private_key_id", json_object_new_string(kid));
    if (token_uri)
        json_object_object_add(o, "token_uri", json_object_new_string(token_uri));
    char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
    json_object_put(o);
    assert_non_null(s);
    return s;
}

/* ---- fakes ---- */

struct fake_clock {
    int64_t now_ms;
};

static int64_t fake_now(void *arg)
{
    return ((struct fake_clock *)arg)->now_ms;
}

struct fake_http {
    /* the answer */
    int ret;
    long status;
    const char *response;
    /* the last request */
    int calls;
    char method[16];
    char url[512];
    char headers[8][256];
    int n_headers;
    char body[8192];
    size_t body_len;
    bool no_retry;
    bool had_auth;
    int64_t deadline_ms;
};

/* The providers are created with a struct fake_http posing as the client,
 * so the fake finds its state through the pointer it is handed. */
static int fake_perform(struct http_client *c, const struct http_request *req,
                        struct http_response *resp)
{
    struct fake_http *f = (struct fake_http *)c;
    f->calls++;
    snprintf(f->method, sizeof(f->method), "%s", req->method ? req->method : "GET");
    snprintf(f->url, sizeof(f->url), "%s", req->url);
    f->n_headers = 0;
    for (const char *const *h = req->headers; h && *h; h++) {
        assert_true(f->n_headers < 8);
        snprintf(f->headers[f->n_headers++], sizeof(f->headers[0]), "%s", *h);
    }
    f->body_len = req->body ? req->body_len : 0;
    assert_true(f->body_len < sizeof(f->body));
    if (req->body)
        memcpy(f->body, req->body, req->body_len);
    f->body[f->body_len] = '\0';
    f->no_retry = req->no_retry;
    f->had_auth = req->auth != NULL;
    f->deadline_ms = req->deadline_ms;
    assert_non_null(req->body_out);
    if (f->response)
        assert_int_equal(dynbuf_append(req->body_out, f->response, strlen(f->response)), 0);
    if (resp) {
        resp->status = f->status;
        resp->attempts = 1;
        resp->bytes = req->body_out->len;
    }
    return f->ret;
}

static bool has_header(const struct fake_http *f, const char *line)
{
    for (int i = 0; i < f->n_headers; i++)
        if (strcmp(f->headers[i], line) == 0)
            return true;
    return false;
}

static void fake_answer(struct fake_http *f, int ret, long status, const char *response)
{
    f->ret = ret;
    f->status = status;
    f->response = response;
}

static struct auth *new_provider(const struct auth_config *cfg, struct fake_http *f,
                                 struct fake_clock *clk)
{
    struct auth *a = NULL;
    assert_int_equal(auth_new(cfg, (struct http_client *)f, &a), 0);
    struct auth_hooks hooks = {.perform = fake_perform, .now_ms = fake_now, .clock_arg = clk};
    auth_set_hooks(a, &hooks);
    return a;
}

static void expect_header(struct auth *a, const char *token)
{
    char hdr[4096];
    char want[4096];
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), 0);
    snprintf(want, sizeof(want), "Authorization: Bearer %s", token);
    assert_string_equal(hdr, want);
}

/* ---- base64url and JWT ---- */

static void test_base64url_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } v[] = {
        {"", 0, ""},
        {"f", 1, "Zg"},
        {"fo", 2, "Zm8"},
        {"foo", 3, "Zm9v"},
        {"foob", 4, "Zm9vYg"},
        {"fooba", 5, "Zm9vYmE"},
        {"foobar", 6, "Zm9vYmFy"},
        {"\xfb\xff", 2, "-_8"},
        {"\xff\xff\xfe", 3, "___-"},
        {"\0\0\0", 3, "AAAA"},
        /* RFC 7515 appendix A.1's header */
        {"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}", 30, "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char *s = jwt_base64url_encode((const unsigned char *)v[i].in, v[i].len);
        assert_non_null(s);
        assert_string_equal(s, v[i].out);
        free(s);
    }
    assert_null(jwt_base64url_encode((const unsigned char *)"", SIZE_MAX));
}

static void test_jwt_assertion_verifies(void **state)
{
    struct keys *k = *state;
    char *jwt = NULL;
    struct jwt_parts p;

    assert_int_equal(jwt_build_assertion(k->pem, "0123abcd", TEST_EMAIL, SCOPE_RO,
                                         "https://oauth2.googleapis.com/token", 1700000000, &jwt),
                     0);
    split_jwt(jwt, &p);
    assert_string_equal(p.header, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"0123abcd\"}");
    assert_string_equal(p.claims, "{\"iss\":\"" TEST_EMAIL "\",\"scope\":\"" SCOPE_RO
                                  "\",\"aud\":\"https://oauth2.googleapis.com/token\","
                                  "\"iat\":1700000000,\"exp\":1700003600}");
    assert_int_equal(p.sig_len, 256);
    assert_true(verify_rs256(k->pkey, jwt, &p));

    /* a flipped bit in the signature must not verify */
    p.sig[10] ^= 0x01;
    assert_false(verify_rs256(k->pkey, jwt, &p));
    free(jwt);

    /* no key id: no kid member */
    assert_int_equal(jwt_build_assertion(k->pem, NULL, TEST_EMAIL, SCOPE_RO, TEST_TOKEN_URI, 5,
                                         &jwt),
                     0);
    split_jwt(jwt, &p);
    assert_string_equal(p.header, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}");
    assert_string_equal(p.claims, "{\"iss\":\"" TEST_EMAIL "\",\"scope\":\"" SCOPE_RO
                                  "\",\"aud\":\"" TEST_TOKEN_URI "\",\"iat\":5,\"exp\":3605}");
    assert_true(verify_rs256(k->pkey, jwt, &p));
    free(jwt);
}

static void test_jwt_sign_exact_input(void **state)
{
    struct keys *k = *state;
    char *jwt = NULL;
    struct jwt_parts p;

    /* the JSON texts are signed as given, not re-serialised */
    assert_int_equal(jwt_sign_rs256(k->pem, "{ \"a\" : 1 }", "{\"b\":\"\\/\"}", &jwt), 0);
    split_jwt(jwt, &p);
    assert_string_equal(p.header, "{ \"a\" : 1 }");
    assert_string_equal(p.claims, "{\"b\":\"\\/\"}");
    assert_true(verify_rs256(k->pkey, jwt, &p));
    free(jwt);
}

static void test_jwt_bad_keys(void **state)
{
    struct keys *k = *state;
    char *jwt = (char *)"untouched";

    assert_int_equal(jwt_sign_rs256("not a key", "{}", "{}", &jwt), -EINVAL);
    assert_null(jwt);
    assert_int_equal(jwt_sign_rs256(NULL, "{}", "{}", &jwt), -EINVAL);
    assert_int_equal(jwt_sign_rs256(k->pem, NULL, "{}", &jwt), -EINVAL);
    assert_int_equal(
        jwt_check_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        -EINVAL);
    assert_int_equal(jwt_check_private_key(""), -EINVAL);
    assert_int_equal(jwt_check_private_key(k->pem), 0);
    /* iat so large that exp would overflow */
    assert_int_equal(jwt_build_assertion(k->pem, NULL, TEST_EMAIL, SCOPE_RO, TEST_TOKEN_URI,
                                         INT64_MAX - 10, &jwt),
                     -EINVAL);

    /* encrypted: refused, without asking for a passphrase */
    char *enc = pem_of(k->pkey, EVP_aes_256_cbc(), "secret");
    assert_non_null(strstr(enc, "ENCRYPTED"));
    assert_int_equal(jwt_check_private_key(enc), -EINVAL);
    free(enc);

    /* not RSA */
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    assert_non_null(ec);
    char *ec_pem = pem_of(ec, NULL, NULL);
    assert_int_equal(jwt_check_private_key(ec_pem), -EINVAL);
    free(ec_pem);
    EVP_PKEY_free(ec);

    /* too short an RSA key */
    EVP_PKEY *small = EVP_RSA_gen(1024);
    assert_non_null(small);
    char *small_pem = pem_of(small, NULL, NULL);
    assert_int_equal(jwt_check_private_key(small_pem), -EINVAL);
    free(small_pem);
    EVP_PKEY_free(small);
}

/* ---- token responses ---- */

static int parse_str(const char *json, char **token, int64_t *exp)
{
    return auth_parse_token_response(json, strlen(json), token, exp);
}

static void test_token_response_good(void **state)
{
    (void)state;
    char *tok = NULL;
    int64_t exp = 0;

    assert_int_equal(
        parse_str("{\"access_token\":\"ya29.a0Af-_~+/=\",\"expires_in\":3599,"
                  "\"token_type\":\"Bearer\"}",
                  &tok, &exp),
        0);
    assert_string_equal(tok, "ya29.a0Af-_~+/=");
    assert_int_equal(exp, 3599);
    free(tok);

    /* whitespace around, any case of bearer, extra members */
    assert_int_equal(parse_str(" \n{\"token_type\":\"bearer\",\"access_token\":\"t\","
                               "\"expires_in\":1,\"scope\":\"x\"}\r\n ",
                               &tok, &exp),
                     0);
    assert_string_equal(tok, "t");
    assert_int_equal(exp, 1);
    free(tok);

    /* expires_in and token_type are optional */
    assert_int_equal(parse_str("{\"access_token\":\"t\"}", &tok, &exp), 0);
    assert_int_equal(exp, AUTH_DEFAULT_EXPIRES_IN_S);
    free(tok);

    /* the largest lifetime accepted */
    char buf[128];
    snprintf(buf, sizeof(buf), "{\"access_token\":\"t\",\"expires_in\":%d}",
             AUTH_MAX_EXPIRES_IN_S);
    assert_int_equal(parse_str(buf, &tok, &exp), 0);
    assert_int_equal(exp, AUTH_MAX_EXPIRES_IN_S);
    free(tok);

    /* the input need not be NUL-terminated: only len bytes count */
    const char *padded = "{\"access_token\":\"abc\",\"expires_in\":60}GARBAGE";
    assert_int_equal(auth_parse_token_response(padded, strlen(padded) - 7, &tok, &exp), 0);
    assert_string_equal(tok, "abc");
    free(tok);
}

static void test_token_response_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{}",
        "{\"expires_in\":3600}",
        "{\"access_token\":\"\",\"expires_in\":3600}",
        "{\"access_token\":null,\"expires_in\":3600}",
        "{\"access_token\":12345,\"expires_in\":3600}",
        "{\"access_token\":[\"t\"],\"expires_in\":3600}",
        "{\"access_token\":{\"t\":1}}",
        "{\"access_token\":true}",
        /* characters that would break or forge a header line */
        "{\"access_token\":\"ab\\r\\nX-Evil: 1\"}",
        "{\"access_token\":\"ab cd\"}",
        "{\"access_token\":\"ab\\u0000cd\"}",
        "{\"access_token\":\"caf\\u00e9\"}",
        /* expires_in of the wrong type or absurd */
        "{\"access_token\":\"t\",\"expires_in\":\"3600\"}",
        "{\"access_token\":\"t\",\"expires_in\":3600.5}",
        "{\"access_token\":\"t\",\"expires_in\":null}",
        "{\"access_token\":\"t\",\"expires_in\":0}",
        "{\"access_token\":\"t\",\"expires_in\":-60}",
        "{\"access_token\":\"t\",\"expires_in\":604801}",
        "{\"access_token\":\"t\",\"expires_in\":9223372036854775807}",
        "{\"access_token\":\"t\",\"expires_in\":99999999999999999999999999}",
        "{\"access_token\":\"t\",\"expires_in\":-99999999999999999999999999}",
        /* not a bearer token */
        "{\"access_token\":\"t\",\"token_type\":\"mac\"}",
        "{\"access_token\":\"t\",\"token_type\":1}",
        /* not one JSON object */
        "",
        "   ",
        "null",
        "[{\"access_token\":\"t\"}]",
        "\"ya29.t\"",
        "ya29.t",
        "<html><body>502 Bad Gateway</body></html>",
        "{\"access_token\":\"t\"} {\"access_token\":\"u\"}",
        "{\"access_token\":\"t\"}x",
        "{'access_token':'t'}",
        "{\"access_token\":\"t\",}",
        /* truncated */
        "{\"access_token\":\"ya29.abc\",\"expires_in\":35",
        "{\"access_token\":\"ya29.abc\",\"expires_in\":3599",
        "{\"access_token\":\"ya29.ab",
        "{",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *tok = (char *)"untouched";
        int64_t exp = -1;
        int ret = parse_str(bad[i], &tok, &exp);
        if (ret != -EPROTO)
            fail_msg("case %zu (%s): got %d", i, bad[i], ret);
        assert_null(tok);
    }

    /* an over-long token */
    size_t n = AUTH_TOKEN_MAX_LEN + 1;
    char *big = malloc(n + 64);
    assert_non_null(big);
    strcpy(big, "{\"access_token\":\"");
    size_t off = strlen(big);
    memset(big + off, 'a', n);
    strcpy(big + off + n, "\"}");
    char *tok = NULL;
    int64_t exp = 0;
    assert_int_equal(parse_str(big, &tok, &exp), -EPROTO);
    free(big);

    /* binary garbage, NUL bytes included */
    unsigned char garbage[512];
    unsigned int seed = 12345;
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof(garbage); i++) {
            seed = seed * 1103515245u + 12345u;
            garbage[i] = (unsigned char)(seed >> 16);
        }
        tok = NULL;
        assert_int_equal(
            auth_parse_token_response((const char *)garbage, sizeof(garbage), &tok, &exp),
            -EPROTO);
        assert_null(tok);
    }
    const char with_nul[] = "{\"access_token\":\"t\"}\0";
    assert_int_equal(auth_parse_token_response(with_nul, sizeof(with_nul), &tok, &exp), -EPROTO);
    const char nul_inside[] = "{\"access_token\":\"t\0u\"}";
    assert_int_equal(auth_parse_token_response(nul_inside, sizeof(nul_inside) - 1, &tok, &exp),
                     -EPROTO);

    /* over the size cap: refused before parsing */
    size_t huge = AUTH_TOKEN_RESPONSE_MAX + 1;
    char *h = malloc(huge);
    assert_non_null(h);
    memset(h, ' ', huge);
    memcpy(h, "{\"access_token\":\"t\"}", 20);
    assert_int_equal(auth_parse_token_response(h, huge, &tok, &exp), -EFBIG);
    free(h);

    assert_int_equal(auth_parse_token_response(NULL, 0, &tok, &exp), -EINVAL);
}

/* ---- key files ---- */

static int parse_key(const char *json, struct auth_key_file *k)
{
    return auth_parse_key_file(json, strlen(json), k);
}

static void test_key_file_good(void **state)
{
    struct keys *k = *state;
    struct auth_key_file kf;

    char *j = key_json("service_account", TEST_EMAIL, k->pem, "kid-1", TEST_TOKEN_URI);
    assert_int_equal(parse_key(j, &kf), 0);
    assert_string_equal(kf.client_email, TEST_EMAIL);
    assert_string_equal(kf.private_key, k->pem);
    assert_string_equal(kf.private_key_id, "kid-1");
    assert_string_equal(kf.token_uri, TEST_TOKEN_URI);
    auth_key_file_clear(&kf);
    assert_null(kf.private_key);
    auth_key_file_clear(&kf); /* twice is harmless */
    free(j);

    /* optional fields absent: default token_uri, no key id */
    j = key_json("service_account", TEST_EMAIL, k->pem, NULL, NULL);
    assert_int_equal(parse_key(j, &kf), 0);
    assert_null(kf.private_key_id);
    assert_string_equal(kf.token_uri, "https://oauth2.googleapis.com/token");
    auth_key_file_clear(&kf);
    free(j);
}

static void test_key_file_bad(void **state)
{
    struct keys *k = *state;
    struct auth_key_file kf;
    const char *bad_pem = "-----BEGIN PRIVATE KEY-----\nQUJDRA==\n-----END PRIVATE KEY-----\n";
    struct {
        const char *type, *email, *pem, *kid, *uri;
    } cases[] = {
        {"authorized_user", TEST_EMAIL, k->pem, NULL, NULL},
        {"external_account", TEST_EMAIL, k->pem, NULL, NULL},
        {NULL, TEST_EMAIL, k->pem, NULL, NULL},
        {"service_account", NULL, k->pem, NULL, NULL},
        {"service_account", "", k->pem, NULL, NULL},
        {"service_account", "a b@example.com", k->pem, NULL, NULL},
        {"service_account", TEST_EMAIL, NULL, NULL, NULL},
        {"service_account", TEST_EMAIL, "", NULL, NULL},
        {"service_account", TEST_EMAIL, bad_pem, NULL, NULL},
        {"service_account", TEST_EMAIL, "garbage", NULL, NULL},
        {"service_account", TEST_EMAIL, k->pem, NULL, "ftp://example.test/token"},
        {"service_account", TEST_EMAIL, k->pem, NULL, "https://"},
        {"service_account", TEST_EMAIL, k->pem, NULL, "https://x/\r\nHost: y"},
        {"service_account", TEST_EMAIL, k->pem, "", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *j = key_json(cases[i].type, cases[i].email, cases[i].pem, cases[i].kid,
                           cases[i].uri);
        int ret = parse_key(j, &kf);
        if (ret != -EINVAL)
            fail_msg("case %zu: got %d", i, ret);
        assert_null(kf.client_email);
        assert_null(kf.private_key);
        free(j);
    }

    /* fields of the wrong type */
    char *j = key_json("service_account", TEST_EMAIL, k->pem, NULL, NULL);
    json_object *o = json_tokener_parse(j);
    free(j);
    json_object_object_add(o, "client_email", json_object_new_int(7));
    assert_int_equal(parse_key(json_object_to_json_string(o), &kf), -EINVAL);
    json_object_object_add(o, "client_email", json_object_new_string(TEST_EMAIL));
    json_object_object_add(o, "private_key_id", json_object_new_array());
    assert_int_equal(parse_key(json_object_to_json_string(o), &kf), -EINVAL);
    json_object_object_add(o, "private_key_id", json_object_new_string("k"));
    json_object_object_add(o, "token_uri", json_object_new_boolean(1));
    assert_int_equal(parse_key(json_object_to_json_string(o), &kf), -EINVAL);
    json_object_object_add(o, "token_uri", json_object_new_string(TEST_TOKEN_URI));
    assert_int_equal(parse_key(json_object_to_json_string(o), &kf), 0);
    auth_key_file_clear(&kf);
    json_object_put(o);

    /* not JSON, truncated, not an object */
    assert_int_equal(parse_key("", &kf), -EINVAL);
    assert_int_equal(parse_key("[]", &kf), -EINVAL);
    assert_int_equal(parse_key("{\"type\":\"service_account\"", &kf), -EINVAL);
    assert_int_equal(parse_key("\x89PNG\r\n\x1a\n", &kf), -EINVAL);

    /* over the cap */
    size_t huge = AUTH_KEY_FILE_MAX + 1;
    char *h = malloc(huge);
    assert_non_null(h);
    memset(h, ' ', huge);
    h[0] = '{';
    h[huge - 1] = '}';
    assert_int_equal(auth_parse_key_file(h, huge, &kf), -EFBIG);
    free(h);
}

static void test_key_file_read(void **state)
{
    struct keys *k = *state;
    struct tmpdir t;
    char path[512];
    struct auth_key_file kf;

    tmpdir_make(&t);
    tmpdir_file(&t, "key.json", path, sizeof(path));
    char *j = key_json("service_account", TEST_EMAIL, k->pem, "kid-1", NULL);
    write_str(path, j);
    free(j);
    assert_int_equal(auth_read_key_file(path, &kf), 0);
    assert_string_equal(kf.client_email, TEST_EMAIL);
    auth_key_file_clear(&kf);

    /* oversized file: refused on its size */
    size_t huge = AUTH_KEY_FILE_MAX + 100;
    char *h = malloc(huge);
    assert_non_null(h);
    memset(h, ' ', huge);
    h[0] = '{';
    h[huge - 1] = '}';
    write_file(path, h, huge);
    free(h);
    assert_int_equal(auth_read_key_file(path, &kf), -EFBIG);

    /* through auth_new too: a bad file fails the mount */
    struct auth_config cfg = {.kind = AUTH_KEY_FILE, .key_file = path};
    struct auth *a = NULL;
    assert_int_equal(auth_new(&cfg, NULL, &a), -EFBIG);
    assert_null(a);
    assert_int_equal(unlink(path), 0);

    assert_int_equal(auth_read_key_file(path, &kf), -ENOENT);
    assert_int_equal(auth_new(&cfg, NULL, &a), -ENOENT);
    assert_int_equal(auth_read_key_file(t.path, &kf), -EINVAL); /* a directory */
    cfg.key_file = NULL;
    assert_int_equal(auth_new(&cfg, NULL, &a), -EINVAL);
    assert_int_equal(rmdir(t.path), 0);
}

/* ---- refresh decision ---- */

static void test_refresh_decision(void **state)
{
    (void)state;
    const int64_t t0 = 1000000;

    /* expired, or no lifetime */
    assert_true(auth_token_needs_refresh(t0, t0, 3600, 300));
    assert_true(auth_token_needs_refresh(t0 + 1, t0, 3600, 300));
    assert_true(auth_token_needs_refresh(t0, t0 + 3600000, 0, 300));
    assert_true(auth_token_needs_refresh(t0, t0 + 3600000, -5, 300));

    /* hour-long token, 5-minute margin: the boundary */
    assert_false(auth_token_needs_refresh(t0, t0 + 3600000, 3600, 300));
    assert_false(auth_token_needs_refresh(t0, t0 + 300001, 3600, 300));
    assert_false(auth_token_needs_refresh(t0, t0 + 300000, 3600, 300));
    assert_true(auth_token_needs_refresh(t0, t0 + 299999, 3600, 300));

    /* short-lived token: the margin shrinks to half the lifetime */
    assert_false(auth_token_needs_refresh(t0, t0 + 120000, 120, 300));
    assert_false(auth_token_needs_refresh(t0, t0 + 60000, 120, 300));
    assert_true(auth_token_needs_refresh(t0, t0 + 59999, 120, 300));
    assert_false(auth_token_needs_refresh(t0, t0 + 600, 1, 300));
    assert_true(auth_token_needs_refresh(t0, t0 + 499, 1, 300));

    /* no margin: only expiry counts */
    assert_false(auth_token_needs_refresh(t0, t0 + 1, 3600, 0));
    assert_false(auth_token_needs_refresh(t0, t0 + 1, 3600, -100));

    /* extremes must not overflow (UBSan watches) */
    assert_false(auth_token_needs_refresh(INT64_MIN, INT64_MAX, 3600, 300));
    assert_false(auth_token_needs_refresh(INT64_MIN, INT64_MAX, INT64_MAX, INT64_MAX));
    assert_false(auth_token_needs_refresh(0, INT64_MAX, INT64_MAX, INT64_MAX));
    assert_true(auth_token_needs_refresh(INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX));
    assert_true(auth_token_needs_refresh(-5, -4, INT64_MAX, INT64_MAX));
}

/* ---- providers ---- */

static void test_none_provider(void **state)
{
    (void)state;
    struct auth_config cfg = {.kind = AUTH_NONE};
    struct auth *a = NULL;
    char hdr[16] = "junk";

    assert_int_equal(auth_new(&cfg, NULL, &a), 0);
    assert_int_equal(auth_get_kind(a), AUTH_NONE);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), 0);
    assert_string_equal(hdr, "");
    auth_invalidate(a);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), 0);
    assert_int_equal(auth_header(a, hdr, 0), -ERANGE);
    auth_free(a);
    auth_free(NULL);

    assert_string_equal(auth_kind_name(AUTH_NONE), "none");
    assert_string_equal(auth_kind_name(AUTH_METADATA), "metadata");
    assert_string_equal(auth_kind_name(AUTH_KEY_FILE), "key-file");
    assert_string_equal(auth_kind_name(AUTH_TOKEN_FILE), "token-file");

    cfg.kind = (enum auth_kind)42;
    assert_int_equal(auth_new(&cfg, NULL, &a), -EINVAL);
    cfg.kind = AUTH_NONE;
    cfg.refresh_margin_s = -1;
    assert_int_equal(auth_new(&cfg, NULL, &a), -EINVAL);
    assert_int_equal(auth_new(NULL, NULL, &a), -EINVAL);
}

static void test_token_file_provider(void **state)
{
    (void)state;
    struct tmpdir t;
    char path[512];
    struct fake_clock clk = {.now_ms = 5000};
    struct fake_http f = {0};
    char hdr[256];

    tmpdir_make(&t);
    tmpdir_file(&t, "token", path, sizeof(path));
    struct auth_config cfg = {.kind = AUTH_TOKEN_FILE, .token_file = path};

    /* a missing file is no error at creation (it may appear later) */
    struct auth *a = new_provider(&cfg, &f, &clk);
    assert_int_equal(auth_get_kind(a), AUTH_TOKEN_FILE);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);
    assert_string_equal(hdr, "");

    /* within the check interval the failure is remembered */
    write_str(path, "  ya29.first\n");
    clk.now_ms += 500;
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);
    clk.now_ms += 501;
    expect_header(a, "ya29.first"); /* trimmed */

    /* a change is seen after at most a second */
    write_str(path, "\tya29.second-token\r\n\n");
    clk.now_ms += 999;
    expect_header(a, "ya29.first");
    clk.now_ms += 1;
    expect_header(a, "ya29.second-token");

    /* same size, new content */
    write_str(path, "\tya29.third--token\r\n\n");
    clk.now_ms += 1000;
    expect_header(a, "ya29.third--token");

    /* empty or blank: -EACCES */
    write_str(path, "");
    clk.now_ms += 1000;
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);
    write_str(path, " \n\t \n");
    clk.now_ms += 1000;
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);

    /* two tokens, or a token with a control character: no token */
    write_str(path, "ya29.a ya29.b\n");
    clk.now_ms += 1000;
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);
    write_str(path, "ya29.a\x01\n");
    clk.now_ms += 1000;
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);

    /* over the size cap */
    size_t huge = AUTH_TOKEN_FILE_MAX + 1;
    char *h = malloc(huge);
    assert_non_null(h);
    memset(h, 'a', huge);
    write_file(path, h, huge);
    free(h);
    clk.now_ms += 1000;
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);

    /* back to good, then removed */
    write_str(path, "ya29.fourth");
    clk.now_ms += 1000;
    expect_header(a, "ya29.fourth");
    assert_int_equal(unlink(path), 0);
    clk.now_ms += 1000;
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);

    /* auth_invalidate re-reads at once, without waiting for the interval */
    write_str(path, "ya29.fifth");
    auth_invalidate(a);
    expect_header(a, "ya29.fifth");
    write_str(path, "ya29.sixth");
    auth_invalidate(a);
    expect_header(a, "ya29.sixth");

    /* a buffer too small for the header */
    assert_int_equal(auth_header(a, hdr, 10), -ERANGE);
    assert_string_equal(hdr, "");

    assert_int_equal(f.calls, 0);
    auth_free(a);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(t.path), 0);

    cfg.token_file = NULL;
    assert_int_equal(auth_new(&cfg, NULL, &a), -EINVAL);
}

#define META_OK(tok, exp) \
    "{\"access_token\":\"" tok "\",\"expires_in\":" #exp ",\"token_type\":\"Bearer\"}"

static void test_metadata_provider(void **state)
{
    (void)state;
    struct fake_clock clk = {.now_ms = 1000000};
    struct fake_http f = {0};
    char hdr[256];
    struct auth_config cfg = {.kind = AUTH_METADATA, .metadata_host = "127.0.0.1:8089"};
    struct auth *a = new_provider(&cfg, &f, &clk);

    assert_int_equal(auth_get_kind(a), AUTH_METADATA);
    assert_int_equal(f.calls, 0); /* nothing fetched at creation */

    fake_answer(&f, 0, 200, META_OK("ya29.meta1", 3600));
    expect_header(a, "ya29.meta1");
    assert_int_equal(f.calls, 1);
    assert_string_equal(f.method, "GET");
    assert_string_equal(
        f.url, "http://127.0.0.1:8089/computeMetadata/v1/instance/service-accounts/default/token");
    assert_true(has_header(&f, "Metadata-Flavor: Google"));
    assert_int_equal(f.body_len, 0);
    assert_false(f.no_retry);
    assert_false(f.had_auth);

    /* cached within its lifetime */
    fake_answer(&f, 0, 200, META_OK("ya29.meta2", 3600));
    expect_header(a, "ya29.meta1");
    clk.now_ms += (3600 - 300) * 1000LL; /* exactly the margin left */
    expect_header(a, "ya29.meta1");
    assert_int_equal(f.calls, 1);

    /* near expiry: refreshed */
    clk.now_ms += 1;
    expect_header(a, "ya29.meta2");
    assert_int_equal(f.calls, 2);
    expect_header(a, "ya29.meta2");
    assert_int_equal(f.calls, 2);

    /* invalidated: fetched again at once */
    fake_answer(&f, 0, 200, META_OK("ya29.meta3", 3600));
    auth_invalidate(a);
    expect_header(a, "ya29.meta3");
    assert_int_equal(f.calls, 3);

    /* a failed refresh keeps the still-valid token, and waits before
     * trying again */
    clk.now_ms += (3600 - 100) * 1000LL;
    fake_answer(&f, -EIO, 503, "backend unavailable");
    expect_header(a, "ya29.meta3");
    assert_int_equal(f.calls, 4);
    expect_header(a, "ya29.meta3");
    assert_int_equal(f.calls, 4);
    clk.now_ms += AUTH_FAILED_REFRESH_BACKOFF_MS;
    expect_header(a, "ya29.meta3");
    assert_int_equal(f.calls, 5);

    /* once it has expired, the failure shows (briefly remembered) */
    clk.now_ms += 100 * 1000LL;
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EIO);
    assert_int_equal(f.calls, 6);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EIO);
    assert_int_equal(f.calls, 6);
    clk.now_ms += AUTH_FAILED_FETCH_HOLD_MS;
    fake_answer(&f, 0, 200, META_OK("ya29.meta4", 120));
    expect_header(a, "ya29.meta4");
    assert_int_equal(f.calls, 7);

    /* a two-minute token is refreshed with a minute left, not at once */
    fake_answer(&f, 0, 200, META_OK("ya29.meta5", 3600));
    clk.now_ms += 60 * 1000LL;
    expect_header(a, "ya29.meta4");
    assert_int_equal(f.calls, 7);
    clk.now_ms += 1;
    expect_header(a, "ya29.meta5");
    assert_int_equal(f.calls, 8);

    /* refusals are -EACCES; a 404 means the VM has no service account */
    fake_answer(&f, -EACCES, 403, "{\"error\":\"access_denied\"}");
    auth_invalidate(a);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);
    fake_answer(&f, -ENOENT, 404, "Not Found\n");
    auth_invalidate(a);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);

    /* a 200 with a body that is no token */
    fake_answer(&f, 0, 200, "<html>captive portal</html>");
    auth_invalidate(a);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EPROTO);
    fake_answer(&f, 0, 200, "{\"access_token\":\"\",\"expires_in\":3600}");
    auth_invalidate(a);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EPROTO);
    auth_free(a);
}

static void test_metadata_host_choice(void **state)
{
    (void)state;
    struct fake_clock clk = {.now_ms = 0};
    struct fake_http f = {0};
    struct auth_config cfg = {.kind = AUTH_METADATA};
    char hdr[256];
    const char *path = "/computeMetadata/v1/instance/service-accounts/default/token";
    char want[256];
    struct auth *a;

    fake_answer(&f, 0, 200, META_OK("t", 3600));
    unsetenv("GCE_METADATA_HOST");
    unsetenv("GCE_METADATA_ROOT");
    a = new_provider(&cfg, &f, &clk);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), 0);
    snprintf(want, sizeof(want), "http://metadata.google.internal%s", path);
    assert_string_equal(f.url, want);
    auth_free(a);

    setenv("GCE_METADATA_ROOT", "old-name.test:81", 1);
    a = new_provider(&cfg, &f, &clk);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), 0);
    snprintf(want, sizeof(want), "http://old-name.test:81%s", path);
    assert_string_equal(f.url, want);
    auth_free(a);

    setenv("GCE_METADATA_HOST", "[::1]:8080", 1);
    a = new_provider(&cfg, &f, &clk);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), 0);
    snprintf(want, sizeof(want), "http://[::1]:8080%s", path);
    assert_string_equal(f.url, want);
    auth_free(a);

    /* configuration beats the environment */
    cfg.metadata_host = "configured.test";
    a = new_provider(&cfg, &f, &clk);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), 0);
    snprintf(want, sizeof(want), "http://configured.test%s", path);
    assert_string_equal(f.url, want);
    auth_free(a);

    /* nothing that would change the URL's meaning */
    cfg.metadata_host = "evil.test/x?y=";
    assert_int_equal(auth_new(&cfg, NULL, &a), -EINVAL);
    cfg.metadata_host = "user@evil.test";
    assert_int_equal(auth_new(&cfg, NULL, &a), -EINVAL);
    cfg.metadata_host = NULL;
    setenv("GCE_METADATA_HOST", "a b", 1);
    assert_int_equal(auth_new(&cfg, NULL, &a), -EINVAL);

    unsetenv("GCE_METADATA_HOST");
    unsetenv("GCE_METADATA_ROOT");
}

/* Checks the JWT-bearer form the key-file provider posted and returns the
 * assertion's claims. */
static json_object *check_form(EVP_PKEY *pkey, const struct fake_http *f, const char *kid)
{
    struct jwt_parts p;
    char want_header[256];

    assert_string_equal(f->method, "POST");
    assert_string_equal(f->url, TEST_TOKEN_URI);
    assert_true(has_header(f, "Content-Type: application/x-www-form-urlencoded"));
    assert_false(f->no_retry);
    assert_false(f->had_auth);
    assert_int_equal(strlen(f->body), f->body_len);
    assert_int_equal(strncmp(f->body, FORM_PREFIX, strlen(FORM_PREFIX)), 0);
    const char *jwt = f->body + strlen(FORM_PREFIX);
    assert_null(strchr(jwt, '&'));
    split_jwt(jwt, &p);
    assert_true(verify_rs256(pkey, jwt, &p));
    snprintf(want_header, sizeof(want_header), "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
             kid);
    assert_string_equal(p.header, want_header);

    json_object *claims = json_tokener_parse(p.claims);
    assert_non_null(claims);
    json_object *v;
    assert_true(json_object_object_get_ex(claims, "iss", &v));
    assert_string_equal(json_object_get_string(v), TEST_EMAIL);
    assert_true(json_object_object_get_ex(claims, "aud", &v));
    assert_string_equal(json_object_get_string(v), TEST_TOKEN_URI);
    assert_true(json_object_object_get_ex(claims, "iat", &v));
    int64_t iat = json_object_get_int64(v);
    int64_t now = (int64_t)time(NULL);
    assert_true(iat >= now - 60 && iat <= now + 1);
    assert_true(json_object_object_get_ex(claims, "exp", &v));
    assert_int_equal(json_object_get_int64(v), iat + 3600);
    return claims;
}

static void test_key_file_provider(void **state)
{
    struct keys *k = *state;
    struct tmpdir t;
    char path[512];
    char hdr[256];
    struct fake_clock clk = {.now_ms = 42};
    struct fake_http f = {0};

    tmpdir_make(&t);
    tmpdir_file(&t, "key.json", path, sizeof(path));
    char *j = key_json("service_account", TEST_EMAIL, k->pem, "kid-7", TEST_TOKEN_URI);
    write_str(path, j);
    free(j);

    struct auth_config cfg = {.kind = AUTH_KEY_FILE, .key_file = path};
    struct auth *a = new_provider(&cfg, &f, &clk);
    assert_int_equal(auth_get_kind(a), AUTH_KEY_FILE);
    assert_int_equal(f.calls, 0);

    fake_answer(&f, 0, 200, META_OK("ya29.key1", 3599));
    expect_header(a, "ya29.key1");
    assert_int_equal(f.calls, 1);
    json_object *claims = check_form(k->pkey, &f, "kid-7");
    json_object *v;
    assert_true(json_object_object_get_ex(claims, "scope", &v));
    assert_string_equal(json_object_get_string(v), SCOPE_RO);
    json_object_put(claims);

    /* cached */
    fake_answer(&f, 0, 200, META_OK("ya29.key2", 3599));
    clk.now_ms += 1000 * 1000LL;
    expect_header(a, "ya29.key1");
    assert_int_equal(f.calls, 1);

    /* invalidated: a new assertion and token */
    auth_invalidate(a);
    expect_header(a, "ya29.key2");
    assert_int_equal(f.calls, 2);
    claims = check_form(k->pkey, &f, "kid-7");
    json_object_put(claims);

    /* near expiry: refreshed */
    fake_answer(&f, 0, 200, META_OK("ya29.key3", 3599));
    clk.now_ms += (3599 - 299) * 1000LL;
    expect_header(a, "ya29.key3");
    assert_int_equal(f.calls, 3);

    /* the token endpoint refuses the grant: -EACCES */
    fake_answer(&f, -EINVAL, 400,
                "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT Signature.\"}");
    auth_invalidate(a);
    assert_int_equal(auth_header(a, hdr, sizeof(hdr)), -EACCES);
    auth_free(a);

    /* a configured scope goes into the assertion */
    cfg.scope = "https://www.googleapis.com/auth/cloud-platform";
    a = new_provider(&cfg, &f, &clk);
    fake_answer(&f, 0, 200, META_OK("ya29.key4", 3599));
    expect_header(a, "ya29.key4");
    claims = check_form(k->pkey, &f, "kid-7");
    assert_true(json_object_object_get_ex(claims, "scope", &v));
    assert_string_equal(json_object_get_string(v), cfg.scope);
    json_object_put(claims);
    auth_free(a);

    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(t.path), 0);
}

int main(void)
{
    log_init_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64url_vectors),
        cmocka_unit_test(test_jwt_assertion_verifies),
        cmocka_unit_test(test_jwt_sign_exact_input),
        cmocka_unit_test(test_jwt_bad_keys),
        cmocka_unit_test(test_token_response_good),
        cmocka_unit_test(test_token_response_bad),
        cmocka_unit_test(test_key_file_good),
        cmocka_unit_test(test_key_file_bad),
        cmocka_unit_test(test_key_file_read),
        cmocka_unit_test(test_refresh_decision),
        cmocka_unit_test(test_none_provider),
        cmocka_unit_test(test_token_file_provider),
        cmocka_unit_test(test_metadata_provider),
        cmocka_unit_test(test_metadata_host_choice),
        cmocka_unit_test(test_key_file_provider),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
