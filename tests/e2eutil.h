/*
 * e2eutil.h - helpers of the end-to-end suites (tests/check_e2e_*.c): the
 * real emad started on a private endpoint (testutil.h), driven by libemad
 * and by raw nanomsg REQ sockets speaking the wire protocol of
 * docs/PROTOCOL.md (requests packed with reqpack.h, replies decoded here).
 * Every failure fails the running Check test.
 *
 * Client timeouts are generous (minutes) and scaled by
 * EMAD_TEST_TIMEOUT_SCALE: they stop a hung test, they never pace one.
 */
#ifndef EMAD_TESTS_E2EUTIL_H
#define EMAD_TESTS_E2EUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <check.h>
#include <msgpack.h>

#include "common/proto.h" /* proto_map_get(): the value of a key in a reply map */
#include "emad.h"
#include "reqpack.h"
#include "testutil.h"

#define MIB (1024u * 1024u)

/* Extra daemon arguments: 1 MiB messages, so that models are sent in many chunks. */
extern const char *const e2e_small_msg_args[];

/* Start a daemon with extra arguments (may be NULL) or fail the test. */
void e2e_daemon_up(tu_daemon *d, const char *const *argv);

/* Stop a daemon and assert it shut down cleanly. */
void e2e_daemon_down(tu_daemon *d);

/* Client options with the defaults except the time limits: minutes, scaled. */
void e2e_options(emad_options *o);

/* Connect a client with options (NULL: e2e_options()) or fail the test. */
emad_client *e2e_client_open(const tu_daemon *d, const emad_options *opts);

/* emad_connect() with e2e_options(), for threads (no Check assertions); its result. */
int e2e_connect(emad_client **c, const char *url);

/* Assert a libemad call succeeded, showing the client's last error if not. */
#define OK(c, call)                                                                                \
    do {                                                                                           \
        int ok_rc_ = (call);                                                                       \
        ck_assert_msg(ok_rc_ == 0, "%s: %s (%s)", #call, emad_strerror(ok_rc_),                    \
                      emad_last_error(c));                                                         \
    } while (0)

/* Value of a daemon counter; fails the test if the counter is missing. */
uint64_t e2e_stat(emad_client *c, const char *name);

/* A tensor description for a push (ndim 0 to 2: shape d0, d1). */
emad_tensor e2e_tensor(const char *name, int kind, int dtype, const void *data, uint64_t nbytes,
                       uint32_t ndim, uint64_t d0, uint64_t d1);

/* Find a pulled tensor by name or fail. */
const emad_tensor *e2e_find(const emad_model *m, const char *name);

/* A float buffer of n elements all equal to v (malloc'd). */
float *e2e_floats(size_t n, float v);

/* 1 if all n floats at p (any alignment) equal v. */
int e2e_all_equal(const void *p, size_t n, float v);

/* ---- raw wire protocol ---- */

/* A reply received on a raw socket, decoded in place (freed by e2e_raw_free()). */
typedef struct e2e_reply {
    void *msg;
    msgpack_unpacked u;
    const msgpack_object *root;
    int code; /* 0 if ok, else the error code (EMAD_E*, negative; positive on the wire) */
} e2e_reply;

/* Receive timeout for raw sockets that expect a reply: minutes, scaled. */
int e2e_reply_wait_ms(void);

/* Open a raw REQ socket connected to the daemon, with this receive timeout. */
int e2e_raw_open(const tu_daemon *d, int rcvtimeo_ms);

/* Unsigned value of key in map; fails the test if absent. */
uint64_t e2e_obj_u64(const msgpack_object *map, const char *key);

/* Send len bytes and decode the reply into *r (fails the test on transport errors). */
void e2e_raw_call(int s, const void *buf, size_t len, e2e_reply *r);

/* Send the packed request, decode the reply into *r. */
void e2e_raw_send(int s, const rq *q, e2e_reply *r);

/* Free a raw reply. */
void e2e_raw_free(e2e_reply *r);

/* Send the packed request, expect error code (EMAD_E*; 0: success), and free the reply. */
void e2e_raw_expect(int s, const rq *q, int code);

/* Open a transaction on model at step over a raw socket; its id. */
uint64_t e2e_raw_begin(int s, rq *q, const char *model, uint64_t step);

/* Start a raw transaction push of one tensor in q: the tensor (e2e_tensor_1d()) follows. */
void e2e_txn_push(rq *q, uint64_t txn);

/* Pack a request of op ("commit" or "abort") for transaction txn into q. */
void e2e_txn_end(rq *q, const char *op, uint64_t txn);

/* Pack one tensor map (1-D) for a raw push; with_offset adds "offset". */
void e2e_tensor_1d(rq *q, const char *name, const char *kind, const char *dtype, uint64_t dim,
                   const void *data, size_t len, int with_offset, uint64_t offset);

/* Run one suite made of the given test cases; exit status 0 if every test passed. */
int e2e_run(Suite *s);

#endif
