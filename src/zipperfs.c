#include "zipperfs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/s3_creds.h"
#include "util/log.h"

#define GCS_DEFAULT_ENDPOINT "https://storage.googleapis.com"
#define S3_DEFAULT_REGION "us-east-1"

void zfs_config_default(struct zfs_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->auth = "auto";
    cfg->stat_ttl_s = 60;
    cfg->list_ttl_s = 60;
    cfg->negative_ttl_s = 5;
    cfg->cache_entries = 100000;
    cfg->list_page_size = 1000;
    cfg->retries = 6;
    cfg->retry_deadline_s = 120;
    cfg->stall_timeout_s = 30;
    cfg->connect_timeout_s = 10;
    cfg->read_window_mb = 32;
    cfg->prefetch_budget_mb = 64;
    cfg->prefetch_parallel = 8;
    cfg->prefetch_part_mb = 0;
    cfg->file_mode = 0644;
    cfg->dir_mode = 0755;
    cfg->uid = getuid();
    cfg->gid = getgid();
    cfg->control_name = ".zipperfs";
    cfg->crc_cache_entries = 1000000;
}

/* $XDG_CACHE_HOME/zipperfs, ~/.cache/zipperfs, or /var/cache/zipperfs */
static char *default_cache_dir(void)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    char *out = NULL;
    if (xdg && xdg[0] == '/') {
        if (asprintf(&out, "%s/zipperfs", xdg) < 0)
            out = NULL;
    } else if (home && home[0] == '/') {
        if (asprintf(&out, "%s/.cache/zipperfs", home) < 0)
            out = NULL;
    } else {
        out = strdup("/var/cache/zipperfs");
    }
    return out;
}

/* The bucket and prefix of "SCHEME://bucket[/prefix]" (rest is what
 * follows the "://"). GCS bucket names are lower case; S3 allows upper case
 * in old buckets. */
static int parse_bucket_url(const char *text, const char *rest, bool upper_ok,
                            struct zfs_source *out, char *err, size_t errsize)
{
    const char *slash = strchr(rest, '/');
    size_t blen = slash ? (size_t)(slash - rest) : strlen(rest);
    size_t max = upper_ok ? 255 : 222;
    if (blen == 0 || blen > max) {
        snprintf(err, errsize, "%s: no valid bucket name", text);
        return -EINVAL;
    }
    for (size_t i = 0; i < blen; i++) {
        char c = rest[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.' || (upper_ok && c >= 'A' && c <= 'Z'))) {
            snprintf(err, errsize, "%s: bucket names hold only %s0-9, '-', '_', '.'", text,
                     upper_ok ? "a-z, A-Z, " : "a-z, ");
            return -EINVAL;
        }
    }
    out->bucket = strndup(rest, blen);
    /* the prefix loses its slashes at both ends; inner "//" is kept
     * as it is: it names different objects */
    const char *p = slash ? slash : "";
    while (*p == '/')
        p++;
    size_t plen = strlen(p);
    while (plen > 0 && p[plen - 1] == '/')
        plen--;
    out->prefix = strndup(p, plen);
    if (!out->bucket || !out->prefix) {
        zfs_source_clear(out);
        snprintf(err, errsize, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

int zfs_source_parse(const char *text, struct zfs_source *out, char *err, size_t errsize)
{
    memset(out, 0, sizeof(*out));
    if (!text || !*text) {
        snprintf(err, errsize, "no source given");
        return -EINVAL;
    }
    if (strncmp(text, "gs://", 5) == 0) {
        out->kind = ZFS_SOURCE_GCS;
        return parse_bucket_url(text, text + 5, false, out, err, errsize);
    }
    if (strncmp(text, "s3://", 5) == 0) {
        out->kind = ZFS_SOURCE_S3;
        return parse_bucket_url(text, text + 5, true, out, err, errsize);
    }
    if (strstr(text, "://")) {
        snprintf(err, errsize, "%s: unsupported scheme (gs://, s3:// or a directory)", text);
        return -EINVAL;
    }
    out->kind = ZFS_SOURCE_LOCAL;
    out->path = strdup(text);
    if (!out->path) {
        snprintf(err, errsize, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

void zfs_source_clear(struct zfs_source *s)
{
    free(s->bucket);
    free(s->prefix);
    free(s->path);
    memset(s, 0, sizeof(*s));
}

char *zfs_endpoint_from_emulator_host(const char *value)
{
    char *out;
    if (strstr(value, "://"))
        return strdup(value);
    if (asprintf(&out, "http://%s", value) < 0)
        return NULL;
    return out;
}

static int choose_auth(const struct zfs_config *cfg, bool emulator, struct auth_config *ac)
{
    memset(ac, 0, sizeof(*ac));
    ac->key_file = cfg->key_file;
    ac->token_file = cfg->token_file;
    ac->metadata_host = cfg->metadata_host;
    const char *mode = cfg->auth ? cfg->auth : "auto";
    if (strcmp(mode, "none") == 0 || strcmp(mode, "anonymous") == 0) {
        ac->kind = AUTH_NONE;
    } else if (strcmp(mode, "metadata") == 0) {
        ac->kind = AUTH_METADATA;
    } else if (strcmp(mode, "key_file") == 0) {
        ac->kind = AUTH_KEY_FILE;
        if (!ac->key_file)
            ac->key_file = getenv("GOOGLE_APPLICATION_CREDENTIALS");
        if (!ac->key_file) {
            log_error("auth=key_file needs -o key_file= or GOOGLE_APPLICATION_CREDENTIALS");
            return -EINVAL;
        }
    } else if (strcmp(mode, "token_file") == 0) {
        ac->kind = AUTH_TOKEN_FILE;
        if (!ac->token_file) {
            log_error("auth=token_file needs -o token_file=");
            return -EINVAL;
        }
    } else if (strcmp(mode, "auto") == 0) {
        const char *gac = getenv("GOOGLE_APPLICATION_CREDENTIALS");
        if (cfg->key_file) {
            ac->kind = AUTH_KEY_FILE;
        } else if (cfg->token_file) {
            ac->kind = AUTH_TOKEN_FILE;
        } else if (emulator) {
            ac->kind = AUTH_NONE;
        } else if (gac && *gac) {
            ac->kind = AUTH_KEY_FILE;
            ac->key_file = gac;
        } else {
            ac->kind = AUTH_METADATA;
        }
    } else {
        log_error("unknown auth mode '%s' (auto, none, metadata, key_file, token_file)", mode);
        return -EINVAL;
    }
    return 0;
}

/* A region goes into the signing scope and the default endpoint's host */
static bool valid_region(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n > 64)
        return false;
    for (const char *p = r; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return false;
    return true;
}

static int make_s3_store(struct zfs *z, const struct zfs_config *cfg)
{
    struct s3_credentials creds;
    const char *mode = cfg->auth ? cfg->auth : "auto";
    bool anonymous = strcmp(mode, "none") == 0 || strcmp(mode, "anonymous") == 0;
    int rc;

    if (!anonymous && strcmp(mode, "auto") != 0) {
        log_error("auth=%s is for gs:// sources; s3:// takes auth=auto or auth=none", mode);
        return -EINVAL;
    }
    const char *region = cfg->region;
    if (!region || !*region)
        region = getenv("AWS_REGION");
    if (!region || !*region)
        region = getenv("AWS_DEFAULT_REGION");
    if (!region || !*region)
        region = S3_DEFAULT_REGION;
    if (!valid_region(region)) {
        log_error("region '%s': a region holds only a-z, 0-9 and '-'", region);
        return -EINVAL;
    }
    if (!(z->region = strdup(region)))
        return -ENOMEM;
    if (cfg->endpoint) {
        z->endpoint = strdup(cfg->endpoint);
    } else if (asprintf(&z->endpoint, "https://s3.%s.amazonaws.com", region) < 0) {
        z->endpoint = NULL;
    }
    if (!z->endpoint)
        return -ENOMEM;

    struct s3_credentials_config cc = {
        .anonymous = anonymous,
        .credentials_file = cfg->credentials_file,
        .profile = cfg->profile,
    };
    if ((rc = s3_credentials_resolve(&cc, &creds)) < 0)
        return rc;
    struct store_s3_config sc = {
        .endpoint = z->endpoint,
        .region = z->region,
        .bucket = z->source.bucket,
        .prefix = z->source.prefix,
        .list_page_size = (int)cfg->list_page_size,
        .access_key = creds.access_key,
        .secret_key = creds.secret_key,
        .session_token = creds.session_token,
    };
    rc = store_s3_new(&sc, z->http, &z->store);
    if (rc == 0)
        log_info("serving s3://%s%s%s from %s (region %s) with %s credentials%s",
                 z->source.bucket, z->source.prefix[0] ? "/" : "", z->source.prefix,
                 z->endpoint, z->region, creds.source,
                 creds.access_key ? "" : " (anonymous requests)");
    s3_credentials_clear(&creds);
    return rc;
}

int zfs_new(const struct zfs_config *cfg, struct zfs **out)
{
    char err[512];
    int rc;
    struct zfs *z = calloc(1, sizeof(*z));
    if (!z)
        return -ENOMEM;
    z->cfg = *cfg;
    if ((rc = zfs_source_parse(cfg->source, &z->source, err, sizeof(err))) < 0) {
        log_error("%s", err);
        goto fail;
    }

    struct http_client_config hc;
    http_client_config_default(&hc);
    hc.retry.max_attempts = cfg->retries > 0 ? (int)cfg->retries : 1;
    hc.retry.deadline_ms = (int64_t)(cfg->retry_deadline_s * 1000);
    hc.stall_timeout_ms = (int64_t)(cfg->stall_timeout_s * 1000);
    if (hc.stall_timeout_ms < 100)
        hc.stall_timeout_ms = 100;
    hc.connect_timeout_ms = (int64_t)(cfg->connect_timeout_s * 1000);
    if ((rc = http_client_new(&hc, &z->http)) < 0)
        goto fail;

    struct prefetch_config pc = {
        .budget = (size_t)(cfg->prefetch_budget_mb ? cfg->prefetch_budget_mb : 1) << 20,
        .workers = cfg->prefetch_parallel ? cfg->prefetch_parallel : 1,
    };
    if ((rc = prefetch_pool_new(&pc, &z->prefetch)) < 0)
        goto fail;
    reader_config_default(&z->reader_cfg);
    z->reader_cfg.pool = z->prefetch;
    z->reader_cfg.max_parallel = pc.workers;
    z->reader_cfg.part_size = (uint64_t)cfg->prefetch_part_mb << 20;
    z->reader_cfg.max_ahead = (size_t)(cfg->read_window_mb ? cfg->read_window_mb : 1) << 20;
    /* a read takes no longer than one request may: a run's GET that keeps
     * getting a byte now and then would keep it waiting */
    z->reader_cfg.read_deadline_ms = hc.retry.deadline_ms;

    if (z->source.kind == ZFS_SOURCE_LOCAL) {
        if ((rc = store_local_new(z->source.path, &z->store)) < 0)
            goto fail;
    } else if (z->source.kind == ZFS_SOURCE_S3) {
        if ((rc = make_s3_store(z, cfg)) < 0)
            goto fail;
    } else {
        bool emulator = false;
        const char *emu = getenv("STORAGE_EMULATOR_HOST");
        if (cfg->endpoint) {
            z->endpoint = strdup(cfg->endpoint);
            emulator = strstr(cfg->endpoint, "googleapis.com") == NULL;
        } else if (emu && *emu) {
            z->endpoint = zfs_endpoint_from_emulator_host(emu);
            emulator = true;
        } else {
            z->endpoint = strdup(GCS_DEFAULT_ENDPOINT);
        }
        if (!z->endpoint) {
            rc = -ENOMEM;
            goto fail;
        }
        struct auth_config ac;
        if ((rc = choose_auth(cfg, emulator, &ac)) < 0)
            goto fail;
        if ((rc = auth_new(&ac, z->http, &z->auth)) < 0) {
            log_error("cannot set up %s authentication: %s", auth_kind_name(ac.kind),
                      strerror(-rc));
            goto fail;
        }
        struct store_gcs_config gc = {
            .endpoint = z->endpoint,
            .bucket = z->source.bucket,
            .prefix = z->source.prefix,
            .list_page_size = (int)cfg->list_page_size,
        };
        if ((rc = store_gcs_new(&gc, z->http, z->auth, &z->store)) < 0)
            goto fail;
        log_info("serving gs://%s%s%s from %s with %s authentication", z->source.bucket,
                 z->source.prefix[0] ? "/" : "", z->source.prefix, z->endpoint,
                 auth_kind_name(ac.kind));
    }

    struct meta_config mc;
    meta_config_default(&mc);
    mc.stat_ttl_ms = (int64_t)(cfg->stat_ttl_s * 1000);
    mc.list_ttl_ms = (int64_t)(cfg->list_ttl_s * 1000);
    mc.negative_ttl_ms = (int64_t)(cfg->negative_ttl_s * 1000);
    mc.max_entries = cfg->cache_entries ? cfg->cache_entries : 1;
    mc.hidden_root_name = cfg->control_name;
    if ((rc = meta_new(&mc, z->store, &z->meta)) < 0)
        goto fail;

    /* the CRC cache: without it archives still work, they just recompute */
    char *cache_dir = cfg->cache_dir ? strdup(cfg->cache_dir) : default_cache_dir();
    if (cache_dir && crc_cache_open(cache_dir, cfg->crc_cache_entries ? cfg->crc_cache_entries : 1,
                                    &z->crcs) < 0) {
        log_warn("CRC cache in %s unusable: archives will recompute CRCs", cache_dir);
        z->crcs = NULL;
    }
    free(cache_dir);

    const char *root_name;
    char *local_real = NULL;
    if (z->source.kind == ZFS_SOURCE_LOCAL) {
        local_real = realpath(z->source.path, NULL);
        const char *p = local_real ? local_real : z->source.path;
        const char *slash = strrchr(p, '/');
        root_name = slash && slash[1] ? slash + 1 : "root";
        if (asprintf(&z->source_id, "local:%s", p) < 0)
            z->source_id = NULL;
    } else {
        const char *slash = strrchr(z->source.prefix, '/');
        root_name = z->source.prefix[0] ? (slash ? slash + 1 : z->source.prefix) : z->source.bucket;
        if (asprintf(&z->source_id, "%s://%s/%s",
                     z->source.kind == ZFS_SOURCE_S3 ? "s3" : "gs", z->source.bucket,
                     z->source.prefix) < 0)
            z->source_id = NULL;
    }
    struct archive_set_config ac = {
        .meta = z->meta,
        .store = z->store,
        .crcs = z->crcs,
        .source_id = z->source_id,
        .root_name = root_name,
        .reader = z->reader_cfg,
        .ttl_ms = mc.stat_ttl_ms,
        .file_mode = cfg->file_mode,
        .dir_mode = cfg->dir_mode,
    };
    rc = z->source_id ? archive_set_new(&ac, &z->archives) : -ENOMEM;
    free(local_real);
    if (rc < 0)
        goto fail;
    *out = z;
    return 0;
fail:
    zfs_free(z);
    return rc;
}

void zfs_free(struct zfs *z)
{
    if (!z)
        return;
    archive_set_free(z->archives);
    prefetch_pool_free(z->prefetch); /* after every reader, before the store */
    crc_cache_close(z->crcs);
    free(z->source_id);
    meta_free(z->meta);
    store_destroy(z->store);
    auth_free(z->auth);
    http_client_free(z->http);
    zfs_source_clear(&z->source);
    free(z->endpoint);
    free(z->region);
    free(z);
}
