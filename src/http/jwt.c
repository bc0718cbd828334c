#include "http/jwt.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Keys shorter than this are not worth trusting; longer ones would let a
 * crafted key file make each signature take seconds. Google issues 2048. */
#define JWT_RSA_MIN_BITS 2048
#define JWT_RSA_MAX_BITS 8192

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *jwt_base64url_encode(const unsigned char *data, size_t len)
{
    /* 4 output characters per 3 input bytes, rounded up, plus the NUL */
    if (len > (SIZE_MAX - 8) / 4 * 3)
        return NULL;
    size_t out_len = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
    char *out = malloc(out_len + 1);
    if (!out)
        return NULL;

    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[o++] = b64url_alphabet[v >> 18 & 0x3f];
        out[o++] = b64url_alphabet[v >> 12 & 0x3f];
        out[o++] = b64url_alphabet[v >> 6 & 0x3f];
        out[o++] = b64url_alphabet[v & 0x3f];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        out[o++] = b64url_alphabet[v >> 18 & 0x3f];
        out[o++] = b64url_alphabet[v >> 12 & 0x3f];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18 & 0x3f];
        out[o++] = b64url_alphabet[v >> 12 & 0x3f];
        out[o++] = b64url_alphabet[v >> 6 & 0x3f];
    }
    out[o] = '\0';
    return out;
}

/* An encrypted key would otherwise make OpenSSL ask for a passphrase on the
 * terminal; a negative return refuses instead. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *arg)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)arg;
    return -1;
}

/* Loads an RSA private key of sane size. On success *out is owned by the
 * caller (EVP_PKEY_free). Leaves OpenSSL's per-thread error queue empty so
 * that a bad key does not leave stale errors behind for later callers. */
static int load_rsa_private_key(const char *pem, EVP_PKEY **out)
{
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;
    int ret = -EINVAL;

    *out = NULL;
    if (!pem)
        goto out;
    size_t len = strlen(pem);
    if (len == 0 || len > INT_MAX)
        goto out;
    bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio) {
        ret = -ENOMEM;
        goto out;
    }
    pkey = PEM_read_bio_PrivateKey(bio, NULL, refuse_passphrase, NULL);
    if (!pkey)
        goto out;
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA)
        goto out;
    int bits = EVP_PKEY_get_bits(pkey);
    if (bits < JWT_RSA_MIN_BITS || bits > JWT_RSA_MAX_BITS)
        goto out;
    *out = pkey;
    pkey = NULL;
    ret = 0;
out:
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    ERR_clear_error();
    return ret;
}

int jwt_check_private_key(const char *pem_private_key)
{
    EVP_PKEY *pkey = NULL;
    int ret = load_rsa_private_key(pem_private_key, &pkey);
    EVP_PKEY_free(pkey);
    return ret;
}

int jwt_sign_rs256(const char *pem_private_key, const char *header_json,
                   const char *claims_json, char **out_jwt)
{
    EVP_PKEY *pkey = NULL;
    EVP_MD_CTX *md = NULL;
    EVP_PKEY_CTX *pctx = NULL; /* owned by md */
    char *header64 = NULL;
    char *claims64 = NULL;
    char *input = NULL;
    unsigned char *sig = NULL;
    char *sig64 = NULL;
    int ret = -EINVAL;

    if (!out_jwt)
        return -EINVAL;
    *out_jwt = NULL;
    if (!header_json || !claims_json)
        goto out;
    ret = load_rsa_private_key(pem_private_key, &pkey);
    if (ret < 0)
        goto out;

    ret = -ENOMEM;
    header64 = jwt_base64url_encode((const unsigned char *)header_json, strlen(header_json));
    claims64 = jwt_base64url_encode((const unsigned char *)claims_json, strlen(claims_json));
    if (!header64 || !claims64)
        goto out;
    size_t h_len = strlen(header64);
    size_t c_len = strlen(claims64);
    /* the signing input, with room for ".signature" appended later */
    input = malloc(h_len + 1 + c_len + 1);
    if (!input)
        goto out;
    memcpy(input, header64, h_len);
    input[h_len] = '.';
    memcpy(input + h_len + 1, claims64, c_len + 1);
    size_t input_len = h_len + 1 + c_len;

    md = EVP_MD_CTX_new();
    if (!md)
        goto out;
    ret = -EIO;
    if (EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, pkey) != 1)
        goto out;
    /* RS256 is PKCS#1 v1.5; it is OpenSSL's default too, but say so */
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)
        goto out;
    size_t sig_len = 0;
    if (EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)input, input_len) != 1)
        goto out;
    sig = malloc(sig_len);
    if (!sig) {
        ret = -ENOMEM;
        goto out;
    }
    if (EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)input, input_len) != 1)
        goto out;

    ret = -ENOMEM;
    sig64 = jwt_base64url_encode(sig, sig_len);
    if (!sig64)
        goto out;
    size_t s_len = strlen(sig64);
    char *jwt = malloc(input_len + 1 + s_len + 1);
    if (!jwt)
        goto out;
    memcpy(jwt, input, input_len);
    jwt[input_len] = '.';
    memcpy(jwt + input_len + 1, sig64, s_len + 1);
    *out_jwt = jwt;
    ret = 0;
out:
    if (ret < 0)
        ERR_clear_error();
    free(sig64);
    free(sig);
    free(input);
    free(claims64);
    free(header64);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);
    return ret;
}

/* Adds a string member; the value is copied. Returns 0 or -ENOMEM. */
static int add_string(json_object *obj, const char *key, const char *value)
{
    json_object *v = json_object_new_string(value);
    if (!v)
        return -ENOMEM;
    if (json_object_object_add(obj, key, v) != 0) {
        json_object_put(v);
        return -ENOMEM;
    }
    return 0;
}

static int add_int64(json_object *obj, const char *key, int64_t value)
{
    json_object *v = json_object_new_int64(value);
    if (!v)
        return -ENOMEM;
    if (json_object_object_add(obj, key, v) != 0) {
        json_object_put(v);
        return -ENOMEM;
    }
    return 0;
}

/* json-c keeps members in insertion order and PLAIN leaves out all
 * whitespace, so the texts come out exactly as documented in jwt.h. */
static const char *to_plain_json(json_object *obj)
{
    return json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                   JSON_C_TO_STRING_NOSLASHESCAPE);
}

int jwt_build_assertion(const char *pem_private_key, const char *private_key_id,
                        const char *client_email, const char *scope, const char *audience,
                        int64_t iat, char **out_jwt)
{
    json_object *header = NULL;
    json_object *claims = NULL;
    int ret = -EINVAL;

    if (!out_jwt)
        return -EINVAL;
    *out_jwt = NULL;
    if (!pem_private_key || !client_email || !scope || !audience || iat < 0 ||
        iat > INT64_MAX - JWT_ASSERTION_LIFETIME_S)
        goto out;

    ret = -ENOMEM;
    header = json_object_new_object();
    claims = json_object_new_object();
    if (!header || !claims)
        goto out;
    if (add_string(header, "alg", "RS256") < 0 || add_string(header, "typ", "JWT") < 0 ||
        (private_key_id && add_string(header, "kid", private_key_id) < 0))
        goto out;
    if (add_string(claims, "iss", client_email) < 0 || add_string(claims, "scope", scope) < 0 ||
        add_string(claims, "aud", audience) < 0 || add_int64(claims, "iat", iat) < 0 ||
        add_int64(claims, "exp", iat + JWT_ASSERTION_LIFETIME_S) < 0)
        goto out;

    const char *header_json = to_plain_json(header);
    const char *claims_json = to_plain_json(claims);
    if (!header_json || !claims_json)
        goto out;
    ret = jwt_sign_rs256(pem_private_key, header_json, claims_json, out_jwt);
out:
    json_object_put(claims);
    json_object_put(header);
    return ret;
}
