/*
 * fuzz_authfile.c - libFuzzer target for the auth file parser
 * (src/daemon/authfile.c): any bytes are either parsed into a table whose
 * users all have a valid name and a key, or refused with a
 * "NAME:LINE: message" cause, never a crash or a leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/authfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    authfile *a = NULL;
    char *cause = NULL;

    if (authfile_parse(&a, "fuzz.ini", (const char *)data, size, &cause) != 0) {
        if (a != NULL || cause == NULL || strncmp(cause, "fuzz.ini:", 9) != 0)
            abort();
    } else {
        for (size_t i = 0; i < a->nusers; i++) {
            const authfile_user *u = &a->users[i];
            if (!u->has_key || !auth_user_valid(u->name, strlen(u->name)))
                abort();
            for (int role = 0; role < AUTHFILE_ROLES; role++)
                (void)authfile_allows(u, role, "team-a-run", 10);
        }
    }
    free(cause);
    authfile_destroy(a);
    return 0;
}
