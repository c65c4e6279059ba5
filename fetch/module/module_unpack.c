/* module_unpack.c - dagy-agent-unpack.so: exports the unpack table of fetch/module/table.h
 * (libarchive's side of the agent), the only symbol the module makes visible. Loaded by
 * fetch/module/lazy.c the first time a run unpacks an archive. */
#include "fetch/module/table.h"

__attribute__((visibility("default"))) const dagy_unpack_module dagy_unpack_table = {
    .head = {.version = DAGY_UNPACK_TABLE_VERSION,
             .size = sizeof(dagy_unpack_module),
             .build = DAGY_VERSION},
    .unpack_cancellable = unpack_archive_cancellable,
    .unpack_growing = unpack_archive_growing,
};
