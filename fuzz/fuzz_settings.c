/*
 * fuzz_settings.c - libFuzzer target for the configuration file parser:
 * any bytes are either applied or refused with a "NAME:LINE: message"
 * cause, never a crash or a leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/settings.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    settings c;
    char *cause = NULL;
    FILE *devnull;

    settings_init(&c);
    if (settings_load_string(&c, "fuzz.conf", (const char *)data, size, &cause) != 0) {
        if (cause == NULL || strncmp(cause, "fuzz.conf:", 10) != 0)
            abort();
    } else if ((devnull = fopen("/dev/null", "w")) != NULL) {
        settings_print(&c, devnull);
        fclose(devnull);
    }
    free(cause);
    settings_free(&c);
    return 0;
}
