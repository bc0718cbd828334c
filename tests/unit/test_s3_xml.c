/* Parsing of S3 responses: ListObjectsV2 pages (names, pagination tokens,
 * url-encoded keys, malformed and truncated XML, a fuzz loop), ETags and
 * the generations made of them, HTTP dates, and shared credentials files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/s3_creds.h"
#include "store/s3_xml.h"
#include "util/log.h"

/* ---- helpers ---------------------------------------------------------- */

#define HEAD "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" \
             "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
#define TAIL "</ListBucketResult>"
#define OBJ(key, size, etag) \
    "<Contents><Key>" key "</Key><LastModified>2024-05-01T12:34:56.000Z</LastModified>" \
    "<ETag>&quot;" etag "&quot;</ETag><Size>" size "</Size>" \
    "<StorageClass>STANDARD</StorageClass></Contents>"
#define PFX(p) "<CommonPrefixes><Prefix>" p "</Prefix></CommonPrefixes>"

struct etags_seen {
    int count;
    int64_t last_generation;
    char last[S3_ETAG_MAX];
};

static void count_etag(void *arg, int64_t generation, const char *etag)
{
    struct etags_seen *e = arg;
    e->count++;
    e->last_generation = generation;
    snprintf(e->last, sizeof(e->last), "%s", etag);
}

/* Parses xml from an exactly sized heap copy (no NUL after it), so an
 * over-read shows under AddressSanitizer. */
static int parse_list_n(const char *xml, size_t len, const char *prefix,
                        struct store_listing *l, char **token, struct etags_seen *seen)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, xml, len);
    int rc = s3_xml_parse_list(copy, len, prefix, l, token, seen ? count_etag : NULL, seen);
    free(copy);
    return rc;
}

static int parse_list(const char *xml, const char *prefix, struct store_listing *l, char **token)
{
    return parse_list_n(xml, strlen(xml), prefix, l, token, NULL);
}

static int nonempty(const char *xml)
{
    size_t len = strlen(xml);
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, xml, len);
    int rc = s3_xml_list_nonempty(copy, len);
    free(copy);
    return rc;
}

static const struct store_entry *find_entry(const struct store_listing *l, const char *name,
                                            bool is_dir)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->entries[i].name, name) == 0 && l->entries[i].is_dir == is_dir)
            return &l->entries[i];
    return NULL;
}

static void expect_list_eproto(const char *xml, const char *prefix)
{
    struct store_listing l = {0};
    char *token = (char *)"sentinel";
    int rc = parse_list(xml, prefix, &l, &token);
    if (rc != -EPROTO)
        fail_msg("expected -EPROTO for %s (prefix '%s'), got %d", xml, prefix, rc);
    assert_null(token);
    store_listing_free(&l);
}

/* ---- listing pages ---------------------------------------------------- */

static void test_list_page(void **state)
{
    (void)state;
    const char *xml = HEAD "<Name>bkt</Name><Prefix>a/</Prefix><KeyCount>4</KeyCount>"
                           "<MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter>"
                           "<IsTruncated>false</IsTruncated>"
                      OBJ("a/", "0", "d41d8cd98f00b204e9800998ecf8427e")
                      OBJ("a/one.txt", "12", "0123456789abcdef0123456789abcdef")
                      OBJ("a/big.bin", "9223372036854775807", "abc-17")
                      PFX("a/sub/") PFX("a/other dir/") TAIL;
    struct store_listing l = {0};
    char *token = NULL;
    struct etags_seen seen = {0};
    assert_int_equal(parse_list_n(xml, strlen(xml), "a/", &l, &token, &seen), 0);
    assert_null(token);
    assert_int_equal(l.count, 4); /* the marker "a/" is left out */
    const struct store_entry *e = find_entry(&l, "one.txt", false);
    assert_non_null(e);
    assert_int_equal(e->attr.size, 12);
    assert_int_equal(e->attr.generation, s3_etag_generation("0123456789abcdef0123456789abcdef"));
    assert_int_equal(e->attr.mtime_sec, 1714566896);
    assert_int_equal(e->attr.mtime_nsec, 0);
    e = find_entry(&l, "big.bin", false);
    assert_non_null(e);
    assert_int_equal(e->attr.size, INT64_MAX);
    assert_non_null(find_entry(&l, "sub", true));
    assert_non_null(find_entry(&l, "other dir", true));
    /* the callback sees every file with its normalized ETag */
    assert_int_equal(seen.count, 2);
    assert_string_equal(seen.last, "abc-17");
    assert_int_equal(seen.last_generation, s3_etag_generation("abc-17"));
    store_listing_free(&l);
}

static void test_list_root_and_namespaces(void **state)
{
    (void)state;
    /* no namespace, a default one, a prefixed one: local names count */
    static const char *const pages[] = {
        "<ListBucketResult><IsTruncated>false</IsTruncated>" OBJ("x", "1", "e") PFX("d/") TAIL,
        HEAD "<IsTruncated>false</IsTruncated>" OBJ("x", "1", "e") PFX("d/") TAIL,
        "<s3:ListBucketResult xmlns:s3=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        "<s3:Contents><s3:Key>x</s3:Key><s3:Size>1</s3:Size><s3:ETag>\"e\"</s3:ETag>"
        "</s3:Contents><s3:CommonPrefixes><s3:Prefix>d/</s3:Prefix></s3:CommonPrefixes>"
        "</s3:ListBucketResult>",
    };
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        struct store_listing l = {0};
        char *token = NULL;
        assert_int_equal(parse_list(pages[i], "", &l, &token), 0);
        assert_int_equal(l.count, 2);
        const struct store_entry *e = find_entry(&l, "x", false);
        assert_non_null(e);
        assert_int_equal(e->attr.generation, s3_etag_generation("e"));
        /* the prefixed page has no LastModified */
        assert_int_equal(e->attr.mtime_sec, i < 2 ? 1714566896 : 0);
        assert_non_null(find_entry(&l, "d", true));
        store_listing_free(&l);
    }
}

static void test_list_odd_names(void **state)
{
    (void)state;
    /* an empty component, dots, a server that ignored the delimiter, XML
     * escapes: passed on as they are; the namespace layer decides */
    const char *xml = HEAD "<IsTruncated>false</IsTruncated>"
                      OBJ("p/a &amp; b &lt;c&gt;", "1", "e1")
                      OBJ("p/deep/er/file", "1", "e2")
                      OBJ("p/child/", "0", "e3")
                      OBJ("p/..", "1", "e4")
                      PFX("p//") PFX("p/x/y/") TAIL;
    struct store_listing l = {0};
    char *token = NULL;
    assert_int_equal(parse_list(xml, "p/", &l, &token), 0);
    assert_non_null(find_entry(&l, "a & b <c>", false));
    assert_non_null(find_entry(&l, "deep", true));
    assert_non_null(find_entry(&l, "child", true));
    assert_non_null(find_entry(&l, "..", false));
    assert_non_null(find_entry(&l, "", true));
    assert_non_null(find_entry(&l, "x", true));
    assert_int_equal(l.count, 6);
    store_listing_free(&l);
}

static void test_list_pagination_tokens(void **state)
{
    (void)state;
    struct store_listing l = {0};
    char *token = NULL;
    /* truncated: the token, exactly as sent (opaque: never url-decoded) */
    const char *p1 = HEAD "<IsTruncated>true</IsTruncated><EncodingType>url</EncodingType>"
                     OBJ("k1", "1", "e")
                     "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=+%2F"
                     "</NextContinuationToken>" TAIL;
    assert_int_equal(parse_list(p1, "", &l, &token), 0);
    assert_non_null(token);
    assert_string_equal(token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=+%2F");
    free(token);
    token = NULL;
    /* the last page: a token there means nothing */
    const char *p2 = HEAD "<NextContinuationToken>stale</NextContinuationToken>"
                     "<IsTruncated>false</IsTruncated>" OBJ("k2", "1", "e") TAIL;
    assert_int_equal(parse_list(p2, "", &l, &token), 0);
    assert_null(token);
    /* no IsTruncated at all: the last page */
    assert_int_equal(parse_list(HEAD OBJ("k3", "1", "e") TAIL, "", &l, &token), 0);
    assert_null(token);
    assert_int_equal(l.count, 3);
    store_listing_free(&l);
    /* more to come but no way to ask for it */
    expect_list_eproto(HEAD "<IsTruncated>true</IsTruncated>" OBJ("k", "1", "e") TAIL, "");
    expect_list_eproto(HEAD "<IsTruncated>true</IsTruncated><NextContinuationToken>"
                            "</NextContinuationToken>" TAIL, "");
    expect_list_eproto(HEAD "<IsTruncated>yes</IsTruncated>" TAIL, "");
    expect_list_eproto(HEAD "<IsTruncated>false</IsTruncated><IsTruncated>false</IsTruncated>"
                            TAIL, "");
    expect_list_eproto(HEAD "<IsTruncated>true</IsTruncated><NextContinuationToken>a"
                            "</NextContinuationToken><NextContinuationToken>b"
                            "</NextContinuationToken>" TAIL, "");
}

static void test_list_url_encoded(void **state)
{
    (void)state;
    /* EncodingType may come before or after the keys it applies to */
    static const char *const pages[] = {
        HEAD "<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
        OBJ("d%2Fsp+ace%2Bplus%25pct%C3%A9", "3", "e") PFX("d%2Fsub+dir%2F")
        OBJ("d%2Fnul%00byte", "1", "e") TAIL,
        HEAD "<IsTruncated>false</IsTruncated>"
        OBJ("d%2Fsp+ace%2Bplus%25pct%C3%A9", "3", "e") PFX("d%2Fsub+dir%2F")
        OBJ("d%2Fnul%00byte", "1", "e") "<EncodingType>url</EncodingType>" TAIL,
    };
    for (size_t i = 0; i < 2; i++) {
        struct store_listing l = {0};
        char *token = NULL;
        assert_int_equal(parse_list(pages[i], "d/", &l, &token), 0);
        assert_non_null(find_entry(&l, "sp ace+plus%pct\xc3\xa9", false));
        assert_non_null(find_entry(&l, "sub dir", true));
        assert_int_equal(l.count, 2); /* the name with a NUL is skipped */
        store_listing_free(&l);
    }
    /* without EncodingType the same text is the name */
    struct store_listing l = {0};
    char *token = NULL;
    assert_int_equal(parse_list(HEAD OBJ("d/a+b%41", "1", "e") TAIL, "d/", &l, &token), 0);
    assert_non_null(find_entry(&l, "a+b%41", false));
    store_listing_free(&l);
    /* bad escapes, an unknown encoding */
    expect_list_eproto(HEAD "<EncodingType>url</EncodingType>" OBJ("d%2Fx%G1", "1", "e") TAIL,
                       "");
    expect_list_eproto(HEAD "<EncodingType>url</EncodingType>" OBJ("x%4", "1", "e") TAIL, "");
    expect_list_eproto(HEAD "<EncodingType>url</EncodingType>" OBJ("x%", "1", "e") TAIL, "");
    expect_list_eproto(HEAD "<EncodingType>base64</EncodingType>" TAIL, "");
    /* decoded, the key is outside the listed directory */
    expect_list_eproto(HEAD "<EncodingType>url</EncodingType>" OBJ("e%2Fx", "1", "e") TAIL,
                       "d/");
}

static void test_tree_page(void **state)
{
    (void)state;
    /* a page asked without a delimiter: keys at any depth keep their whole
     * name below the listed directory; markers stay, ending in "/" */
    static const char xml[] = HEAD "<Name>bkt</Name><Prefix>t/</Prefix>"
        "<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
        "<NextContinuationToken>tok+2</NextContinuationToken>"
        OBJ("t%2F", "0", "e0") OBJ("t%2Fa%2F", "0", "e1") OBJ("t%2Fa%2Fb%2Fc+d.txt", "5", "e2")
        OBJ("t%2Fa%2Fn%00ul", "1", "e3") OBJ("t%2Fz.bin", "7", "e4") TAIL;
    size_t len = sizeof(xml) - 1;
    char *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, xml, len);
    struct store_listing l = {0};
    char *token = NULL;
    struct etags_seen seen = {0};
    assert_int_equal(s3_xml_parse_tree_page(copy, len, "t/", &l, &token, count_etag, &seen), 0);
    assert_string_equal(token, "tok+2");
    free(token);
    /* t/'s own marker and the name with a NUL are left out */
    assert_int_equal(l.count, 3);
    assert_non_null(find_entry(&l, "a/", false));
    const struct store_entry *e = find_entry(&l, "a/b/c d.txt", false);
    assert_non_null(e);
    assert_int_equal(e->attr.size, 5);
    assert_int_equal(e->attr.generation, s3_etag_generation("e2"));
    assert_non_null(find_entry(&l, "z.bin", false));
    assert_int_equal(seen.count, 3);
    store_listing_free(&l);
    /* the same page, as a listing with a delimiter, folds the deep ones */
    assert_int_equal(parse_list_n(xml, len, "t/", &l, &token, NULL), 0);
    assert_non_null(find_entry(&l, "a", true));
    assert_null(find_entry(&l, "a/b/c d.txt", false));
    free(token);
    store_listing_free(&l);
    /* CommonPrefixes answer another question; so do keys elsewhere */
    static const char *const bad[] = {
        HEAD "<IsTruncated>false</IsTruncated>" OBJ("t/x", "1", "e") PFX("t/d/") TAIL,
        HEAD "<IsTruncated>false</IsTruncated>" OBJ("u/x", "1", "e") TAIL,
    };
    for (size_t i = 0; i < 2; i++) {
        token = NULL;
        assert_int_equal(s3_xml_parse_tree_page(bad[i], strlen(bad[i]), "t/", &l, &token, NULL,
                                                NULL),
                         -EPROTO);
        assert_int_equal(l.count, 0); /* a bad page adds nothing */
        assert_null(token);
        store_listing_free(&l);
    }
    free(copy);
}

static void test_url_decode(void **state)
{
    (void)state;
    size_t n;
    char *s = s3_url_decode("a+b%20c%2b%2B%00z", 17, &n);
    assert_non_null(s);
    assert_int_equal(n, 9);
    assert_memory_equal(s, "a b c++\0z", 9);
    free(s);
    s = s3_url_decode("", 0, &n);
    assert_non_null(s);
    assert_int_equal(n, 0);
    free(s);
    static const char *const bad[] = {"%", "%1", "%zz", "a%g0", "%0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errno = 0;
        assert_null(s3_url_decode(bad[i], strlen(bad[i]), &n));
        assert_int_equal(errno, EPROTO);
    }
}

static void test_list_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "not xml",
        "{\"items\":[]}",
        "<ListBucketResult>",
        HEAD,
        HEAD TAIL "<extra/>",
        HEAD TAIL "trailing",
        "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>",
        "<Other/>",
        /* items missing what a file needs */
        HEAD "<Contents><Size>1</Size><ETag>e</ETag></Contents>" TAIL,
        HEAD "<Contents><Key>k</Key><ETag>e</ETag></Contents>" TAIL,
        HEAD "<Contents><Key>k</Key><Size>1</Size></Contents>" TAIL,
        HEAD "<CommonPrefixes></CommonPrefixes>" TAIL,
        /* sizes */
        HEAD OBJ("k", "-1", "e") TAIL,
        HEAD OBJ("k", "", "e") TAIL,
        HEAD OBJ("k", "1e3", "e") TAIL,
        HEAD OBJ("k", " 1", "e") TAIL,
        HEAD OBJ("k", "9223372036854775808", "e") TAIL,
        HEAD OBJ("k", "99999999999999999999999", "e") TAIL,
        /* ETags */
        HEAD OBJ("k", "1", "") TAIL,
        HEAD "<Contents><Key>k</Key><Size>1</Size><ETag>a\"b</ETag></Contents>" TAIL,
        HEAD "<Contents><Key>k</Key><Size>1</Size><ETag>a&#10;b</ETag></Contents>" TAIL,
        /* timestamps */
        HEAD "<Contents><Key>k</Key><Size>1</Size><ETag>e</ETag>"
        "<LastModified>yesterday</LastModified></Contents>" TAIL,
        HEAD "<Contents><Key>k</Key><Size>1</Size><ETag>e</ETag>"
        "<LastModified>2024-02-30T00:00:00Z</LastModified></Contents>" TAIL,
        /* duplicates and markup inside values */
        HEAD "<Contents><Key>k</Key><Key>j</Key><Size>1</Size><ETag>e</ETag></Contents>" TAIL,
        HEAD "<Contents><Key>k<b/></Key><Size>1</Size><ETag>e</ETag></Contents>" TAIL,
        HEAD "<CommonPrefixes><Prefix>a/</Prefix><Prefix>b/</Prefix></CommonPrefixes>" TAIL,
        /* prefixes that are not one level below */
        HEAD PFX("noslash") TAIL,
        HEAD PFX("") TAIL,
        /* DTDs: entity expansion is refused before it starts */
        "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">"
        "<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>"
        "<ListBucketResult><Contents><Key>&lol2;</Key><Size>1</Size><ETag>e</ETag>"
        "</Contents></ListBucketResult>",
        "<?xml version=\"1.0\"?><!DOCTYPE x SYSTEM \"file:///etc/passwd\">"
        "<ListBucketResult/>",
        "<ListBucketResult><Contents><Key>&undefined;</Key></Contents></ListBucketResult>",
        /* not well-formed */
        HEAD "<Contents><Key>k</Contents>" TAIL,
        HEAD "<Contents><Key>a\x01</Key><Size>1</Size><ETag>e</ETag></Contents>" TAIL,
        HEAD "<Contents><Key>\xff\xfe</Key><Size>1</Size><ETag>e</ETag></Contents>" TAIL,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_list_eproto(bad[i], "");
    /* keys outside the directory listed */
    expect_list_eproto(HEAD OBJ("b/x", "1", "e") TAIL, "a/");
    expect_list_eproto(HEAD OBJ("a", "1", "e") TAIL, "a/");
    expect_list_eproto(HEAD PFX("b/") TAIL, "a/");
    expect_list_eproto(HEAD PFX("a/") TAIL, "a/");
}

static void test_list_limits(void **state)
{
    (void)state;
    /* nesting past the cap */
    char deep[2048] = HEAD;
    for (int i = 0; i < 20; i++)
        strcat(deep, "<x>");
    for (int i = 0; i < 20; i++)
        strcat(deep, "</x>");
    strcat(deep, TAIL);
    expect_list_eproto(deep, "");

    /* a value past the text cap (64 KiB); a long key within it is fine */
    size_t n = 100 << 10;
    char *big = malloc(n + 512);
    assert_non_null(big);
    strcpy(big, HEAD "<Contents><Key>");
    size_t off = strlen(big);
    memset(big + off, 'k', n);
    strcpy(big + off + n, "</Key><Size>1</Size><ETag>e</ETag></Contents>" TAIL);
    expect_list_eproto(big, "");
    memset(big + off, 'k', 3000);
    strcpy(big + off + 3000, "</Key><Size>1</Size><ETag>e</ETag></Contents>" TAIL);
    struct store_listing l = {0};
    char *token = NULL;
    assert_int_equal(parse_list(big, "", &l, &token), 0);
    assert_int_equal(l.count, 1);
    assert_int_equal(strlen(l.entries[0].name), 3000);
    store_listing_free(&l);
    free(big);

    /* a long ETag is refused rather than cut */
    char etag_page[1024];
    char etag[S3_ETAG_MAX + 1];
    memset(etag, 'e', sizeof(etag) - 1);
    etag[sizeof(etag) - 1] = '\0';
    snprintf(etag_page, sizeof(etag_page),
             HEAD "<Contents><Key>k</Key><Size>1</Size><ETag>%s</ETag></Contents>" TAIL, etag);
    expect_list_eproto(etag_page, "");
}

static void test_list_truncated_everywhere(void **state)
{
    (void)state;
    /* every proper prefix of a good page is malformed, never a shorter
     * listing taken for the whole */
    const char *xml = HEAD "<IsTruncated>true</IsTruncated>" OBJ("a/x", "5", "e1") PFX("a/d/")
                      "<NextContinuationToken>tok</NextContinuationToken>" TAIL;
    size_t len = strlen(xml);
    for (size_t cut = 0; cut < len; cut++) {
        struct store_listing l = {0};
        char *token = NULL;
        int rc = parse_list_n(xml, cut, "a/", &l, &token, NULL);
        if (rc != -EPROTO)
            fail_msg("a page cut at %zu of %zu gave %d", cut, len, rc);
        assert_null(token);
        store_listing_free(&l);
    }
    struct store_listing l = {0};
    char *token = NULL;
    assert_int_equal(parse_list_n(xml, len, "a/", &l, &token, NULL), 0);
    assert_string_equal(token, "tok");
    free(token);
    store_listing_free(&l);
}

static void test_list_nonempty(void **state)
{
    (void)state;
    assert_int_equal(nonempty(HEAD "<KeyCount>0</KeyCount><IsTruncated>false</IsTruncated>" TAIL),
                     0);
    assert_int_equal(nonempty("<ListBucketResult/>"), 0);
    assert_int_equal(nonempty(HEAD OBJ("a/b/c", "1", "e") TAIL), 1);
    assert_int_equal(nonempty(HEAD PFX("a/b/") TAIL), 1);
    assert_int_equal(nonempty(HEAD OBJ("a/", "0", "e") TAIL), 1); /* a marker counts */
    assert_int_equal(nonempty(""), -EPROTO);
    assert_int_equal(nonempty(HEAD), -EPROTO);
    assert_int_equal(nonempty("<Error><Code>NoSuchBucket</Code></Error>"), -EPROTO);
    assert_int_equal(nonempty(HEAD "<Contents><Key>k</Key></Contents>" TAIL), -EPROTO);
}

/* ---- ETags and generations -------------------------------------------- */

static void expect_etag(const char *in, const char *want)
{
    char out[S3_ETAG_MAX];
    int rc = s3_etag_normalize(in, strlen(in), out);
    if (want == NULL) {
        if (rc != -EPROTO)
            fail_msg("ETag '%s' gave %d, want -EPROTO", in, rc);
        return;
    }
    if (rc != 0)
        fail_msg("ETag '%s' gave %d", in, rc);
    assert_string_equal(out, want);
}

static void test_etag_normalize(void **state)
{
    (void)state;
    expect_etag("\"d41d8cd98f00b204e9800998ecf8427e\"", "d41d8cd98f00b204e9800998ecf8427e");
    expect_etag("d41d8cd98f00b204e9800998ecf8427e", "d41d8cd98f00b204e9800998ecf8427e");
    expect_etag("  \"abc-12\"\t", "abc-12");
    expect_etag("W/\"weak\"", "weak");
    expect_etag("\"\"", NULL);
    expect_etag("", NULL);
    expect_etag("   ", NULL);
    expect_etag("\"a\"b\"", NULL);
    expect_etag("\"a b\"", NULL);
    expect_etag("\"a\r\nX-Injected: 1\"", NULL);
    expect_etag("\"caf\xc3\xa9\"", NULL);
    char longest[S3_ETAG_MAX + 2];
    memset(longest, 'e', S3_ETAG_MAX - 1);
    longest[S3_ETAG_MAX - 1] = '\0';
    expect_etag(longest, longest);
    longest[S3_ETAG_MAX - 1] = 'e';
    longest[S3_ETAG_MAX] = '\0';
    expect_etag(longest, NULL);
}

static void test_etag_generation(void **state)
{
    (void)state;
    /* the first 8 bytes of SHA-256("abc") = ba7816bf8f01cfea, top bit off */
    assert_int_equal(s3_etag_generation("abc"), 0x3a7816bf8f01cfeaLL);
    int64_t a = s3_etag_generation("d41d8cd98f00b204e9800998ecf8427e");
    assert_true(a > 0);
    assert_int_equal(a, s3_etag_generation("d41d8cd98f00b204e9800998ecf8427e"));
    /* changed content, changed ETag, changed generation */
    assert_int_not_equal(a, s3_etag_generation("d41d8cd98f00b204e9800998ecf8427f"));
    assert_int_not_equal(s3_etag_generation("abc-1"), s3_etag_generation("abc-2"));
    /* a quoted header and an unquoted element of one object agree */
    char x[S3_ETAG_MAX], y[S3_ETAG_MAX];
    assert_int_equal(s3_etag_normalize("\"9b2cf535f27731c974343645a3985328\"", 34, x), 0);
    assert_int_equal(s3_etag_normalize("9b2cf535f27731c974343645a3985328", 32, y), 0);
    assert_int_equal(s3_etag_generation(x), s3_etag_generation(y));
    /* always positive */
    char buf[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(buf, sizeof(buf), "etag-%d", i);
        assert_true(s3_etag_generation(buf) > 0);
    }
}

/* ---- HTTP dates ------------------------------------------------------- */

static void test_http_date(void **state)
{
    (void)state;
    int64_t t;
    assert_int_equal(s3_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", 29, &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(s3_parse_http_date("Wed, 01 May 2024 12:34:56 GMT", 29, &t), 0);
    assert_int_equal(t, 1714566896);
    assert_int_equal(s3_parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT", 29, &t), 0);
    assert_int_equal(t, 1709164800);
    assert_int_equal(s3_parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT", 29, &t), 0);
    assert_int_equal(t, 0);
    static const char *const bad[] = {
        "",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT ",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 30 Feb 2024 08:49:37 GMT",
        "Sun, 29 Feb 2023 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:49:37 GMT",
        "Sun, 06 Nov 1994 08:60:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 19x4 08:49:37 GMT",
        "Sun; 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08-49-37 GMT",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (s3_parse_http_date(bad[i], strlen(bad[i]), &t) != -EINVAL)
            fail_msg("'%s' was taken for a date", bad[i]);
}

/* ---- shared credentials files ----------------------------------------- */

static void test_credentials_parse(void **state)
{
    (void)state;
    const char *text = "# comment\n"
                       "[default]\n"
                       "aws_access_key_id = AKIDEFAULT\n"
                       "aws_secret_access_key=secret/with+chars:and=equals\r\n"
                       "\n"
                       "; another comment\n"
                       "[ other ]\n"
                       "  AWS_ACCESS_KEY_ID =  AKIOTHER  \n"
                       "aws_secret_access_key = s2\n"
                       "aws_session_token = TOKEN/abc==\n"
                       "region = eu-west-1\n"
                       "[nokey]\n"
                       "aws_secret_access_key = s3\n"
                       "[badkey]\n"
                       "aws_access_key_id = AKI:D\n"
                       "aws_secret_access_key = s4\n";
    struct s3_credentials c;
    assert_int_equal(s3_credentials_parse(text, strlen(text), "default", &c), 0);
    assert_string_equal(c.access_key, "AKIDEFAULT");
    assert_string_equal(c.secret_key, "secret/with+chars:and=equals");
    assert_null(c.session_token);
    s3_credentials_clear(&c);
    assert_null(c.access_key);

    assert_int_equal(s3_credentials_parse(text, strlen(text), "other", &c), 0);
    assert_string_equal(c.access_key, "AKIOTHER");
    assert_string_equal(c.secret_key, "s2");
    assert_string_equal(c.session_token, "TOKEN/abc==");
    s3_credentials_clear(&c);

    assert_int_equal(s3_credentials_parse(text, strlen(text), "missing", &c), -ENOENT);
    assert_null(c.access_key);
    assert_int_equal(s3_credentials_parse(text, strlen(text), "nokey", &c), -EINVAL);
    assert_null(c.access_key);
    assert_int_equal(s3_credentials_parse(text, strlen(text), "badkey", &c), -EINVAL);
    assert_int_equal(s3_credentials_parse("", 0, "default", &c), -ENOENT);
    /* a NUL byte: not a text file */
    assert_int_equal(s3_credentials_parse("[default]\0", 10, "default", &c), -EINVAL);
    const char *ctl = "[default]\naws_access_key_id = A\naws_secret_access_key = a\x01b\n";
    assert_int_equal(s3_credentials_parse(ctl, strlen(ctl), "default", &c), -EINVAL);
}

/* ---- fuzz ------------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static const char *const seeds[] = {
    HEAD "<Name>b</Name><Prefix>a/</Prefix><IsTruncated>true</IsTruncated>"
    OBJ("a/x", "12", "abc") OBJ("a/", "0", "m") PFX("a/d/")
    "<NextContinuationToken>t0k/en=</NextContinuationToken>" TAIL,
    HEAD "<EncodingType>url</EncodingType>" OBJ("a%2Fy+z", "1", "e") PFX("a%2Fq%2F") TAIL,
    "<ListBucketResult/>",
    HEAD "<Contents><Key>a/&amp;</Key><Size>0</Size><ETag>W/\"w\"</ETag></Contents>" TAIL,
};

static const char *const inserts[] = {
    "<", ">", "&", "&amp;", "\"", "</Key>", "<Key>", "<Contents>", "</Contents>", "%", "%2",
    "<!DOCTYPE x>", "<!--", "-->", "<![CDATA[", "]]>", "\xff", "\x00", "/", "a/", "99999999999999999999",
};

static void check_one(const char *buf, size_t len)
{
    static const char *const prefixes[] = {"", "a/"};
    for (size_t p = 0; p < 2; p++) {
        struct store_listing l = {0};
        char *token = NULL;
        int rc = s3_xml_parse_list(buf, len, prefixes[p], &l, &token, NULL, NULL);
        if (rc != 0 && rc != -EPROTO)
            fail_msg("parse_list returned %d", rc);
        if (rc < 0) {
            assert_null(token);
            assert_int_equal(l.count, 0);
        }
        for (size_t i = 0; i < l.count; i++)
            assert_non_null(l.entries[i].name);
        free(token);
        store_listing_free(&l);
    }
    int rc = s3_xml_list_nonempty(buf, len);
    if (rc != 0 && rc != 1 && rc != -EPROTO)
        fail_msg("list_nonempty returned %d", rc);
}

static void test_fuzz(void **state)
{
    (void)state;
    char buf[4096];
    for (int iter = 0; iter < 20000; iter++) {
        const char *seed = seeds[rnd() % (sizeof(seeds) / sizeof(seeds[0]))];
        size_t len = strlen(seed);
        memcpy(buf, seed, len);
        int edits = 1 + (int)(rnd() % 4);
        for (int e = 0; e < edits; e++) {
            switch (rnd() % 4) {
            case 0: /* flip a byte */
                if (len)
                    buf[rnd() % len] = (char)rnd();
                break;
            case 1: /* cut */
                if (len)
                    len = rnd() % len;
                break;
            case 2: { /* insert a token */
                const char *ins = inserts[rnd() % (sizeof(inserts) / sizeof(inserts[0]))];
                size_t il = strlen(ins) ? strlen(ins) : 1;
                size_t at = len ? rnd() % len : 0;
                if (len + il < sizeof(buf)) {
                    memmove(buf + at + il, buf + at, len - at);
                    memcpy(buf + at, ins, il);
                    len += il;
                }
                break;
            }
            default: { /* drop a span */
                if (len < 2)
                    break;
                size_t at = rnd() % len, n = rnd() % (len - at);
                memmove(buf + at, buf + at + n, len - at - n);
                len -= n;
                break;
            }
            }
        }
        /* an exact-size copy, so an over-read shows under ASan */
        char *copy = malloc(len ? len : 1);
        assert_non_null(copy);
        memcpy(copy, buf, len);
        check_one(copy, len);
        free(copy);
    }
}

int main(void)
{
    log_init(false, LOG_LEVEL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_page),
        cmocka_unit_test(test_list_root_and_namespaces),
        cmocka_unit_test(test_list_odd_names),
        cmocka_unit_test(test_list_pagination_tokens),
        cmocka_unit_test(test_list_url_encoded),
        cmocka_unit_test(test_tree_page),
        cmocka_unit_test(test_url_decode),
        cmocka_unit_test(test_list_malformed),
        cmocka_unit_test(test_list_limits),
        cmocka_unit_test(test_list_truncated_everywhere),
        cmocka_unit_test(test_list_nonempty),
        cmocka_unit_test(test_etag_normalize),
        cmocka_unit_test(test_etag_generation),
        cmocka_unit_test(test_http_date),
        cmocka_unit_test(test_credentials_parse),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
