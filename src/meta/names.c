#include "meta/names.h"

#include <string.h>

bool names_component_ok(const char *name, size_t len)
{
    if (len == 0 || len > NAMES_MAX_COMPONENT)
        return false;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return false;
    return memchr(name, '/', len) == NULL && memchr(name, '\0', len) == NULL;
}

const char *names_key_of_path(const char *path)
{
    while (*path == '/')
        path++;
    return path;
}

const char *names_split(const char *key, char *parent)
{
    const char *slash = strrchr(key, '/');
    if (!slash) {
        parent[0] = '\0';
        return key;
    }
    memcpy(parent, key, (size_t)(slash - key));
    parent[slash - key] = '\0';
    return slash + 1;
}
