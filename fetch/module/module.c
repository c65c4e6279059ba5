/* module.c - dagy-agent-aws.so: exports the AWS table of fetch/module/table.h, the only symbol
 * the module makes visible (every other one, its copies of fetch/ and proto/ included, is hidden
 * and bound inside the module). Loaded by fetch/module/lazy.c. */
#include "fetch/module/table.h"

__attribute__((visibility("default"))) const dagy_fetch_module dagy_fetch_table = {
    .head = {.version = DAGY_FETCH_TABLE_VERSION,
             .size = sizeof(dagy_fetch_module),
             .build = DAGY_VERSION},
    .aws_new = fetch_aws_new,
    .aws_free = fetch_aws_free,
    .aws_json_opts = fetch_aws_json_opts,
    .s3_get_file = fetch_s3_get_file,
    .s3_get_file_streaming = fetch_s3_get_file_streaming,
    .s3_put = fetch_s3_put,
    .s3_put_fd = fetch_s3_put_fd,
    .http_get = fetch_http_get,
};
