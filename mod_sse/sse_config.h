/*
 * sse_config.h - mod_sse configuration: per-directory (stream) settings and
 * server settings, with the directive parsers and start-up validation.
 *
 * Every per-dir field has a *_set flag so that merging keeps a value set in an
 * enclosing section unless the inner section sets it again. create() fills
 * every field with its default, so a merged config is always complete.
 * Callers: mod_sse.c (directive table, hooks), sse_handler.c (accessors).
 */
#ifndef SSE_CONFIG_H
#define SSE_CONFIG_H

#include "httpd.h"
#include "http_config.h"
#include "apr_tables.h"

#define SSE_DEFAULT_CHANNEL_PARAM "channel"
#define SSE_DEFAULT_LEID_PARAM "lastEventId"
#define SSE_DEFAULT_MAX_CHANNELS 8
#define SSE_MAX_CHANNELS_LIMIT 32 /* = SSE_BUS_FILTER_MAX */
#define SSE_DEFAULT_RETRY_MS 3000
#define SSE_DEFAULT_HEARTBEAT_S 15
#define SSE_DEFAULT_WRITE_TIMEOUT_S 30
#define SSE_DEFAULT_BUFFER_SIZE (64u * 1024u)
#define SSE_MIN_BUFFER_SIZE (4u * 1024u)
#define SSE_MAX_BUFFER_SIZE (64u * 1024u * 1024u)
#define SSE_DEFAULT_SLOW_LAG (1024u * 1024u)
#define SSE_RETRY_AFTER_S "5"
#define SSE_DEFAULT_RETRY_SPREAD_MS 2000
#define SSE_DEFAULT_DETACHED_THREADS 1
#define SSE_MAX_DETACHED_THREADS 64
#define SSE_MAX_DETACHED_COALESCE_MS 1000

typedef enum { SSE_SLOW_SKIP = 0, SSE_SLOW_CLOSE = 1 } sse_slow_policy_t;

/* SSEMode: how a stream is served (sse_detach.h). */
typedef enum {
    SSE_MODE_THREADED = 0,
    SSE_MODE_DETACHED = 1,
    SSE_MODE_AUTO = 2
} sse_mode_t;
#define SSE_DEFAULT_MODE SSE_MODE_THREADED

typedef struct sse_dir_conf {
    const char *bus_path;             int bus_path_set;
    apr_array_header_t *channels;     int channels_set;   /* const char * */
    apr_array_header_t *allow;        int allow_set;      /* fnmatch patterns */
    const char *channel_param;        int channel_param_set;
    int max_channels;                 int max_channels_set;
    int retry_ms;                     int retry_ms_set;
    int heartbeat_s;                  int heartbeat_s_set;
    int write_timeout_s;              int write_timeout_s_set;
    apr_size_t buffer_size;           int buffer_size_set;
    sse_slow_policy_t slow_policy;    int slow_policy_set;
    apr_uint64_t slow_lag;            int slow_lag_set;
    int replay;                       int replay_set;
    const char *leid_param;           int leid_param_set;
    sse_mode_t mode;                  int mode_set;
    int retry_spread_ms;              int retry_spread_ms_set;
} sse_dir_conf_t;

typedef struct sse_srv_conf {
    int max_streams; int max_streams_set; /* per child; 0 = unlimited */
    int detached_threads; int detached_threads_set; /* loops per child */
    int detached_coalesce_ms; int detached_coalesce_ms_set; /* 0 = off */
    int detached_uring; int detached_uring_set; /* io_uring sends if the
                                                    kernel allows them */
} sse_srv_conf_t;

void *sse_create_dir_conf(apr_pool_t *p, char *dir);
void *sse_merge_dir_conf(apr_pool_t *p, void *basev, void *addv);
void *sse_create_srv_conf(apr_pool_t *p, server_rec *s);
void *sse_merge_srv_conf(apr_pool_t *p, void *basev, void *addv);

/* Directive parsers (see the doc comment at each one for syntax). */
const char *sse_cmd_bus(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_channel(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_channel_allow(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_channel_param(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_max_channels(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_retry(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_heartbeat(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_write_timeout(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_buffer_size(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_slow_client(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_slow_client_lag(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_replay(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_leid_param(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_max_streams(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_mode(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_retry_spread(cmd_parms *cmd, void *dc, const char *arg);
const char *sse_cmd_detached_threads(cmd_parms *cmd, void *dc,
                                     const char *arg);
const char *sse_cmd_detached_coalesce(cmd_parms *cmd, void *dc,
                                      const char *arg);
const char *sse_cmd_detached_uring(cmd_parms *cmd, void *dc, int on);
const char *sse_mode_str(sse_mode_t m);

/* check_config hook: a section with `SetHandler sse-stream` must also have
 * SSEBus and SSEChannel or SSEChannelAllow (here or in an enclosing scope).
 * Runs on `apache2 -t` as well as on every start. */
int sse_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                     server_rec *s);

/* Parse "64k", "1M", "2G", "4096" (k = 1024). 0 on success. */
int sse_parse_size(const char *arg, apr_uint64_t *out);

#endif /* SSE_CONFIG_H */
