/* inbox.h: a worker's (or the main thread's) cross-thread mailbox: a mutex, an
 * intrusive FIFO and a uv_async_t doorbell rung on the empty-to-non-empty
 * transition. Any thread may post; only the owning loop's thread drains.
 * uv_async_send is the only libuv call made across threads. */
#ifndef HUB_INBOX_H
#define HUB_INBOX_H

#include <uv.h>

typedef struct hub_inbox_msg_s hub_inbox_msg_t;

/* Embed this at the start of a message. run() is called on the owner's
 * thread and takes ownership of the message (it frees it). */
struct hub_inbox_msg_s {
    hub_inbox_msg_t *next;
    void (*run)(void *owner, hub_inbox_msg_t *m);
};

typedef struct {
    uv_async_t async;
    uv_mutex_t mu;
    hub_inbox_msg_t *head, *tail;
    void *owner;
    int closed;
} hub_inbox_t;

/* Initialises the inbox on loop (owner thread). Returns 0 or a UV error. */
int hub_inbox_init(hub_inbox_t *ib, uv_loop_t *loop, void *owner);

/* Posts m from any thread; returns 0, or HUB_ECLOSED after close (the caller
 * keeps m then). */
int hub_inbox_post(hub_inbox_t *ib, hub_inbox_msg_t *m);

/* Owner thread: refuses further posts, runs what is queued, closes the
 * async handle (close_cb may be NULL). */
void hub_inbox_close(hub_inbox_t *ib, uv_close_cb close_cb);

/* Destroys the mutex after the async handle's close callback ran. */
void hub_inbox_destroy(hub_inbox_t *ib);

#endif
