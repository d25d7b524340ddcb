/* A service's data follows it (docs/data.md): copies of a volume of its
 * primary VM carried to its standby host, attached to its container at
 * recovery, brought back at failback.  Part of the recovery engine: its steps
 * are driven by recovery.c (phases data_copied, data_attached) and
 * failback.c, the periodic copies by the engine's tick.
 *
 * One copy is: volume_snapshot on the primary's host (the image as an idle VM
 * left it, or a drive-backup of a running one), the packed file carried in
 * chunks (chunk_copy.h: volume_snapshot_read -> data_write), data_install on
 * the standby host.  At most one copy at a time per standby host. */
#ifndef VCR_SERVER_SERVICE_DATA_H
#define VCR_SERVER_SERVICE_DATA_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct svc;
struct recovery;

/* Snapshots of hundreds of MB under TCG; installs unpack them. */
#define SERVICE_DATA_ORDER_MS 300000

struct copy_result {
    int64_t taken_ms; /* wall: the point in time the copy holds */
    int64_t bytes, raw_bytes;
    int64_t snapshot_ms, transfer_ms, install_ms;
    char method[16]; /* "file" or "drive-backup" */
    char host[65];   /* the standby host it reached */
};

enum data_busy {
    DATA_IDLE,
    DATA_PERIODIC, /* a warm copy */
    DATA_RECOVERY, /* the recovery's copy or attach */
    DATA_FAILBACK, /* the way back */
};

/* Per service (struct svc); zeroed means nothing done yet. */
struct svc_data {
    enum data_busy busy;
    int stage;               /* within the copy: snapshot, transfer, install */
    char host[65];           /* the standby host of the work under way */
    int64_t t_stage;         /* monotonic: when the stage began */
    int64_t next_copy_mono;  /* periodic: the next copy is due */
    struct copy_result cur;  /* the copy under way */
    struct copy_result last; /* the last one that reached a standby host (taken_ms 0: none) */
    int64_t age_ms;          /* at the last recovery: detection - taken, -1 unknown */
    char sha256[65];         /* of the copy under way (packed) */
    char last_error[600];
    void (*done)(struct svc *s, const char *error); /* the copy's caller */
};

/* max(0, detected_ms - taken_ms): how much of the primary's life before the
 * failure the copy misses (a copy taken after the VM died misses nothing). */
int64_t service_data_age_ms(int64_t detected_ms, int64_t taken_ms);

/* Recovery steps (after container_ready): a fresh copy when the primary's
 * host is connected, else (or if it fails) the last copy on the standby; then
 * data_attach.  Each ends in recovery_phase_done or recovery_fail. */
void service_data_copy_step(struct svc *s);
void service_data_attach_step(struct svc *s);
/* Failback, before the primary starts: data_export on the standby, the copy
 * back, volume_restore on the primary's host; done(s, error) at the end. */
void service_data_failback(struct svc *s, void (*done)(struct svc *s, const char *error));
/* From the tick: periodic copies of a warm service; a recovery step waiting
 * for a periodic copy to end. */
void service_data_tick(struct svc *s, int64_t now);
/* The `data` member of GET /v1/services (NULL when the service has none). */
json_t *service_data_json(const struct svc *s);

#endif
