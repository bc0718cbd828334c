/* JSON Web Tokens signed with RS256, as used by the OAuth 2.0 JWT-bearer
 * grant (RFC 7523) that trades a service-account key for an access token.
 *
 * Everything here is pure (no I/O, no shared state) and thread-safe.
 * Strings returned through out parameters are malloc'd and owned by the
 * caller. Errors are negative errno values. */
#ifndef ZIPPERFS_JWT_H
#define ZIPPERFS_JWT_H

#include <stddef.h>
#include <stdint.h>

/* Lifetime written into an assertion's "exp" claim; Google's token endpoint
 * refuses assertions that live longer than one hour. */
#define JWT_ASSERTION_LIFETIME_S 3600

/* Base64url (RFC 4648 section 5) without padding. Returns a malloc'd,
 * NUL-terminated string, or NULL when memory runs out or len is absurd. */
char *jwt_base64url_encode(const unsigned char *data, size_t len);

/* Checks that pem holds an unencrypted RSA private key that can sign
 * (2048 to 8192 bits). Returns 0, or -EINVAL for anything else (wrong
 * type, encrypted, garbage), -ENOMEM. Never prompts for a passphrase. */
int jwt_check_private_key(const char *pem_private_key);

/* Signs base64url(header_json) "." base64url(claims_json) with RSASSA-PKCS1
 * v1.5 over SHA-256 and returns the compact JWT in *out_jwt. The JSON texts
 * are taken as they are (not re-serialised). Returns 0, -EINVAL for a key
 * that does not load or bad arguments, -ENOMEM, or -EIO when OpenSSL fails
 * to sign. */
int jwt_sign_rs256(const char *pem_private_key, const char *header_json,
                   const char *claims_json, char **out_jwt);

/* Builds and signs the assertion for the JWT-bearer grant:
 *   header {"alg":"RS256","typ":"JWT","kid":private_key_id}  (kid left out when NULL)
 *   claims {"iss":client_email,"scope":scope,"aud":audience,"iat":iat,"exp":iat+3600}
 * audience is the token_uri the assertion is posted to; iat is wall-clock
 * seconds since the epoch. Returns 0 or -errno as jwt_sign_rs256. */
int jwt_build_assertion(const char *pem_private_key, const char *private_key_id,
                        const char *client_email, const char *scope, const char *audience,
                        int64_t iat, char **out_jwt);

#endif
