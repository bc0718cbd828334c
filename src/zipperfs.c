#include "zipperfs.h"

#include <errno.h>
#include <json-c/json.h>
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
    cfg->list_parallel = 4;
    cfg->list_tree = true;
    cfg->retries = 6;
    cfg->retry_deadline_s = 120;
    cfg->stall_timeout_s = 30;
    cfg->connect_timeout_s = 10;
    cfg->read_window_mb = 64;
    cfg->prefetch_budget_mb = 64;
    cfg->prefetch_parallel = 16;
    cfg->prefetch_part_mb = 8;
    cfg->split_below_mbs = 200;
    cfg->lookahead = 16;
    cfg->file_mode = 0644;
    cfg->dir_mode = 0755;
    cfg->uid = getuid();
    cfg->gid = getgid();
    cfg->control_name = ".zipperfs";
    cfg->crc_cache_entries = 1000000;
    cfg->max_jobs = 2;
    cfg->notify_retry_max_s = 60;
    cfg->read_ahead_kb = ZFS_READ_AHEAD_KB_DEFAULT;
    struct request_limits lim = REQUEST_LIMITS_DEFAULT;
    cfg->max_request_bytes = lim.max_request_bytes;
    cfg->max_request_paths = lim.max_members;
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

/* An S3 store of bucket/prefix with the mount's region, endpoint and
 * credentials (resolved on the first call, into z). */
static int make_s3_store(struct zfs *z, const struct zfs_config *cfg, const char *bucket,
                         const char *prefix, struct store **out)
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
    if (!z->region && !(z->region = strdup(region)))
        return -ENOMEM;
    if (z->endpoint) {
        /* resolved by an earlier call */
    } else if (cfg->endpoint) {
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
        .bucket = bucket,
        .prefix = prefix,
        .list_page_size = (int)cfg->list_page_size,
        .access_key = creds.access_key,
        .secret_key = creds.secret_key,
        .session_token = creds.session_token,
    };
    rc = store_s3_new(&sc, z->http, out);
    if (rc == 0)
        log_info("%s s3://%s%s%s at %s (region %s) with %s credentials%s",
                 out == &z->store ? "serving" : "output to", bucket, prefix[0] ? "/" : "",
                 prefix, z->endpoint, z->region, creds.source,
                 creds.access_key ? "" : " (anonymous requests)");
    s3_credentials_clear(&creds);
    return rc;
}

/* The GCS endpoint and authentication of the mount, into z. */
static int setup_gcs(struct zfs *z, const struct zfs_config *cfg)
{
    bool emulator = false;
    const char *emu = getenv("STORAGE_EMULATOR_HOST");
    int rc;

    if (cfg->endpoint) {
        z->endpoint = strdup(cfg->endpoint);
        emulator = strstr(cfg->endpoint, "googleapis.com") == NULL;
    } else if (emu && *emu) {
        z->endpoint = zfs_endpoint_from_emulator_host(emu);
        emulator = true;
    } else {
        z->endpoint = strdup(GCS_DEFAULT_ENDPOINT);
    }
    if (!z->endpoint)
        return -ENOMEM;
    struct auth_config ac;
    if ((rc = choose_auth(cfg, emulator, &ac)) < 0)
        return rc;
    if ((rc = auth_new(&ac, z->http, &z->auth)) < 0) {
        log_error("cannot set up %s authentication: %s", auth_kind_name(ac.kind), strerror(-rc));
        return rc;
    }
    z->auth_name = auth_kind_name(ac.kind);
    return 0;
}

/* The output bucket's store: gs:// (with the source's endpoint and
 * authentication, or, beside a local source, resolved as for a gs://
 * source), s3:// beside an s3:// source (its endpoint, region and
 * credentials), or a local directory. */
static int make_output_store(struct zfs *z, const struct zfs_config *cfg)
{
    char err[512];
    int rc;
    if ((rc = zfs_source_parse(cfg->output_bucket, &z->output_source, err, sizeof(err))) < 0) {
        log_error("output_bucket: %s", err);
        return rc;
    }
    const struct zfs_source *o = &z->output_source;
    switch (o->kind) {
    case ZFS_SOURCE_LOCAL:
        rc = store_local_new(o->path, &z->output);
        break;
    case ZFS_SOURCE_GCS:
        if (z->source.kind == ZFS_SOURCE_S3) {
            log_error("output_bucket: a gs:// output needs a gs:// or local source");
            return -EINVAL;
        }
        if (!z->endpoint && (rc = setup_gcs(z, cfg)) < 0)
            return rc;
        {
            struct store_gcs_config gc = {
                .endpoint = z->endpoint,
                .bucket = o->bucket,
                .prefix = o->prefix,
                .list_page_size = (int)cfg->list_page_size,
            };
            rc = store_gcs_new(&gc, z->http, z->auth, &z->output);
        }
        break;
    case ZFS_SOURCE_S3:
        if (z->source.kind != ZFS_SOURCE_S3) {
            log_error("output_bucket: an s3:// output needs an s3:// source");
            return -EINVAL;
        }
        rc = make_s3_store(z, cfg, o->bucket, o->prefix, &z->output);
        break;
    }
    if (rc == 0)
        log_info("request archives are uploaded to %s", cfg->output_bucket);
    return rc;
}

/* The requests' notify callback: into the durable outbox. */
static int zfs_notify(void *arg, const char *label, const uint8_t *msg, size_t len)
{
    struct zfs *z = arg;
    if (!z->outbox)
        return -EIO; /* logged when the outbox could not be opened */
    return outbox_enqueue(z->outbox, label, msg, len);
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
    z->reader_cfg.split_below = (uint64_t)cfg->split_below_mbs * 1000000;
    z->reader_cfg.max_ahead = (size_t)(cfg->read_window_mb ? cfg->read_window_mb : 1) << 20;
    /* a read takes no longer than one request may: a run's GET that keeps
     * getting a byte now and then would keep it waiting */
    z->reader_cfg.read_deadline_ms = hc.retry.deadline_ms;
    /* the kernel's retry of a failed read comes at once: within the stall
     * timeout the store is still the one that just failed */
    z->reader_cfg.fail_hold_ms = hc.stall_timeout_ms;
    if (cfg->lookahead > 0) {
        struct lookahead_config lc;
        lookahead_config_default(&lc);
        lc.max_readers = cfg->lookahead;
        /* a quarter of the budget at most for first parts not read yet */
        lc.max_bytes = pc.budget / 4;
        lc.reader = z->reader_cfg;
        if ((rc = lookahead_new(&lc, &z->lookahead)) < 0)
            goto fail;
    }
    if ((rc = walk_new(&z->walk)) < 0)
        goto fail;

    if (z->source.kind == ZFS_SOURCE_LOCAL) {
        if ((rc = store_local_new(z->source.path, &z->store)) < 0)
            goto fail;
    } else if (z->source.kind == ZFS_SOURCE_S3) {
        if ((rc = make_s3_store(z, cfg, z->source.bucket, z->source.prefix, &z->store)) < 0)
            goto fail;
    } else {
        if ((rc = setup_gcs(z, cfg)) < 0)
            goto fail;
        struct store_gcs_config gc = {
            .endpoint = z->endpoint,
            .bucket = z->source.bucket,
            .prefix = z->source.prefix,
            .list_page_size = (int)cfg->list_page_size,
        };
        if ((rc = store_gcs_new(&gc, z->http, z->auth, &z->store)) < 0)
            goto fail;
        log_info("serving gs://%s%s%s from %s with %s authentication", z->source.bucket,
                 z->source.prefix[0] ? "/" : "", z->source.prefix, z->endpoint, z->auth_name);
    }
    if (cfg->output_bucket && (rc = make_output_store(z, cfg)) < 0)
        goto fail;

    struct meta_config mc;
    meta_config_default(&mc);
    mc.stat_ttl_ms = (int64_t)(cfg->stat_ttl_s * 1000);
    mc.list_ttl_ms = (int64_t)(cfg->list_ttl_s * 1000);
    mc.negative_ttl_ms = (int64_t)(cfg->negative_ttl_s * 1000);
    mc.max_entries = cfg->cache_entries ? cfg->cache_entries : 1;
    mc.list_parallel = cfg->list_parallel;
    mc.list_tree = cfg->list_tree;
    mc.hidden_root_name = cfg->control_name;
    if ((rc = meta_new(&mc, z->store, &z->meta)) < 0)
        goto fail;

    /* the CRC cache: without it archives still work, they just recompute */
    z->cache_dir = cfg->cache_dir ? strdup(cfg->cache_dir) : default_cache_dir();
    if (z->cache_dir &&
        crc_cache_open(z->cache_dir, cfg->crc_cache_entries ? cfg->crc_cache_entries : 1,
                       &z->crcs) < 0) {
        log_warn("CRC cache in %s unusable: archives will recompute CRCs", z->cache_dir);
        z->crcs = NULL;
    }

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
        .lookahead = z->lookahead,
        .ttl_ms = mc.stat_ttl_ms,
        .file_mode = cfg->file_mode,
        .dir_mode = cfg->dir_mode,
        /* materializing fetches as many at once as reads do */
        .crc_workers = pc.workers,
    };
    rc = z->source_id ? archive_set_new(&ac, &z->archives) : -ENOMEM;
    free(local_real);
    if (rc < 0)
        goto fail;
    struct request_set_config rc_cfg = {
        .archives = z->archives,
        .notify = (cfg->notify_url || cfg->notify_dir) ? zfs_notify : NULL,
        .notify_arg = z,
        .output = z->output,
        .output_url = cfg->output_bucket,
        .max_jobs = cfg->max_jobs,
        .limits = REQUEST_LIMITS_DEFAULT,
        .notify_retry_max_ms = (int64_t)(cfg->notify_retry_max_s * 1000),
    };
    rc_cfg.limits.max_request_bytes = cfg->max_request_bytes;
    rc_cfg.limits.max_members = cfg->max_request_paths;
    if ((rc = request_set_new(&rc_cfg, &z->requests)) < 0)
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
    /* nothing waits on the network from here on: a listing ahead, a job's
     * fetch, an upload or a POST under way stops within a second */
    http_client_stop(z->http);
    request_set_free(z->requests);
    outbox_free(z->outbox);
    store_destroy(z->output);
    zfs_source_clear(&z->output_source);
    archive_set_free(z->archives);
    lookahead_free(z->lookahead);
    walk_free(z->walk);
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
    free(z->cache_dir);
    free(z);
}

int zfs_start(struct zfs *z)
{
    const struct zfs_config *cfg = &z->cfg;
    if (cfg->notify_url || cfg->notify_dir) {
        char *dir = NULL;
        int rc = -ENOENT;
        if (z->cache_dir && asprintf(&dir, "%s/outbox", z->cache_dir) < 0)
            dir = NULL;
        struct outbox_config oc = {
            .dir = dir,
            .notify_url = cfg->notify_url,
            .notify_dir = cfg->notify_dir,
            .http = z->http,
            .auth = z->auth,
            .backoff_max_ms = (int64_t)(cfg->notify_retry_max_s * 1000),
        };
        if (dir)
            rc = outbox_new(&oc, &z->outbox);
        if (rc < 0)
            log_error("the notification outbox in %s cannot be used (%s): nobody will be "
                      "notified", dir ? dir : "(no cache directory)", strerror(-rc));
        free(dir);
    }
    return request_set_start(z->requests);
}

static void add_counter(struct json_object *o, const char *key, uint64_t value)
{
    json_object_object_add(o, key, json_object_new_int64((int64_t)value));
}

int zfs_stats_json(struct zfs *z, char **out, size_t *len)
{
    struct meta_stats ms;
    struct archive_stats as;
    struct request_set_stats rs;
    meta_get_stats(z->meta, &ms);
    archive_set_get_stats(z->archives, &as);
    request_set_get_stats(z->requests, &rs);

    struct json_object *o = json_object_new_object();
    struct json_object *meta = json_object_new_object();
    struct json_object *arch = json_object_new_object();
    struct json_object *req = json_object_new_object();
    int rc = -ENOMEM;
    if (!o || !meta || !arch || !req) {
        json_object_put(meta);
        json_object_put(arch);
        json_object_put(req);
        goto out;
    }
    add_counter(meta, "list_requests", ms.list_calls);
    add_counter(meta, "stat_requests", ms.stat_calls);
    add_counter(meta, "listing_cache_hits", ms.listing_hits);
    add_counter(meta, "stat_cache_hits", ms.stat_hits);
    add_counter(meta, "negative_cache_hits", ms.negative_hits);
    add_counter(meta, "listings_prefetched", ms.list_prefetched);
    add_counter(meta, "prefetched_listing_hits", ms.list_prefetch_hits);
    add_counter(meta, "listing_waits", ms.list_prefetch_waits);
    add_counter(meta, "prefetched_listings_dropped", ms.list_prefetch_dropped);
    add_counter(meta, "tree_listings", ms.tree_listings);
    add_counter(meta, "tree_pages", ms.tree_pages);
    json_object_object_add(o, "namespace", meta);
    add_counter(arch, "layouts", as.layouts);
    add_counter(arch, "crc_cache_hits", as.crc_cache_hits);
    add_counter(arch, "crcs_computed", as.crcs_computed);
    add_counter(arch, "crc_fetches", as.crc_fetches);
    add_counter(arch, "bytes_served", as.bytes_served);
    json_object_object_add(o, "archives", arch);
    add_counter(req, "submitted", rs.submitted);
    add_counter(req, "refused", rs.refused);
    add_counter(req, "shared", rs.shared);
    add_counter(req, "queued", rs.queued);
    add_counter(req, "running", rs.running);
    add_counter(req, "done", rs.done);
    add_counter(req, "failed", rs.failed);
    add_counter(req, "notifications_queued", rs.notifications);
    add_counter(req, "notification_errors", rs.notify_errors);
    add_counter(req, "uploads", rs.uploads);
    add_counter(req, "uploads_skipped", rs.uploads_skipped);
    json_object_object_add(o, "requests", req);
    struct json_object *rd = json_object_new_object();
    if (rd) {
        struct prefetch_stats ps;
        struct lookahead_stats ls = {0};
        prefetch_get_stats(z->prefetch, &ps);
        if (z->lookahead)
            lookahead_get_stats(z->lookahead, &ls);
        add_counter(rd, "prefetch_budget", ps.budget);
        add_counter(rd, "prefetch_held", ps.held);
        add_counter(rd, "prefetch_peak", ps.peak);
        add_counter(rd, "prefetch_refused", ps.refused);
        add_counter(rd, "runs", ps.counts[PREFETCH_RUNS]);
        add_counter(rd, "parts", ps.counts[PREFETCH_PARTS]);
        add_counter(rd, "splits", ps.counts[PREFETCH_SPLITS]);
        add_counter(rd, "parts_cancelled", ps.counts[PREFETCH_CANCELLED]);
        add_counter(rd, "exact_fetches", ps.counts[PREFETCH_FETCHES]);
        add_counter(rd, "budget_fallbacks", ps.counts[PREFETCH_FALLBACKS]);
        add_counter(rd, "worker_fallbacks", ps.counts[PREFETCH_TAKEBACKS]);
        add_counter(rd, "read_timeouts", ps.counts[PREFETCH_TIMEOUTS]);
        add_counter(rd, "held_failures", ps.counts[PREFETCH_HELD]);
        add_counter(rd, "lookahead_primed", ls.primed);
        add_counter(rd, "lookahead_taken", ls.taken);
        add_counter(rd, "lookahead_expired", ls.expired);
        add_counter(rd, "lookahead_refused", ls.refused);
        add_counter(rd, "walk_steps", walk_steps(z->walk));
        json_object_object_add(o, "reads", rd);
    }
    if (z->outbox) {
        struct outbox_stats os;
        struct json_object *ob = json_object_new_object();
        outbox_get_stats(z->outbox, &os);
        if (ob) {
            add_counter(ob, "enqueued", os.enqueued);
            add_counter(ob, "delivered", os.delivered);
            add_counter(ob, "pending", os.pending);
            add_counter(ob, "failed_attempts", os.failed_attempts);
            add_counter(ob, "rejected", os.rejected);
            add_counter(ob, "corrupt", os.corrupt);
            json_object_object_add(o, "notifications", ob);
        }
    }

    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                             JSON_C_TO_STRING_SPACED);
    size_t n = text ? strlen(text) : 0;
    char *buf = text ? malloc(n + 2) : NULL;
    if (buf) {
        memcpy(buf, text, n);
        buf[n] = '\n';
        buf[n + 1] = '\0';
        *out = buf;
        *len = n + 1;
        rc = 0;
    }
out:
    json_object_put(o);
    return rc;
}
