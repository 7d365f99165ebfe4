/* inbox.c: cross-thread message queue. post() from any thread; drain and
 * close on the owning loop's thread only. */
#include "inbox.h"

#include "common.h"

static void drain(hub_inbox_t *ib)
{
    uv_mutex_lock(&ib->mu);
    hub_inbox_msg_t *m = ib->head;
    ib->head = ib->tail = NULL;
    uv_mutex_unlock(&ib->mu);
    while (m != NULL) {
        hub_inbox_msg_t *next = m->next;
        m->run(ib->owner, m);
        m = next;
    }
}

static void on_async(uv_async_t *a)
{
    drain(a->data);
}

int hub_inbox_init(hub_inbox_t *ib, uv_loop_t *loop, void *owner)
{
    ib->head = ib->tail = NULL;
    ib->owner = owner;
    ib->closed = 0;
    int r = uv_mutex_init(&ib->mu);
    if (r != 0)
        return r;
    r = uv_async_init(loop, &ib->async, on_async);
    if (r != 0) {
        uv_mutex_destroy(&ib->mu);
        return r;
    }
    ib->async.data = ib;
    return 0;
}

int hub_inbox_post(hub_inbox_t *ib, hub_inbox_msg_t *m)
{
    m->next = NULL;
    uv_mutex_lock(&ib->mu);
    if (ib->closed) {
        uv_mutex_unlock(&ib->mu);
        return HUB_ECLOSED;
    }
    int ring = ib->head == NULL;
    if (ib->tail)
        ib->tail->next = m;
    else
        ib->head = m;
    ib->tail = m;
    uv_mutex_unlock(&ib->mu);
    /* uv_async_send coalesces; ring only on the empty-to-non-empty edge */
    if (ring)
        uv_async_send(&ib->async);
    return 0;
}

void hub_inbox_close(hub_inbox_t *ib, uv_close_cb close_cb)
{
    uv_mutex_lock(&ib->mu);
    ib->closed = 1;
    uv_mutex_unlock(&ib->mu);
    drain(ib);
    uv_close((uv_handle_t *)&ib->async, close_cb);
}

void hub_inbox_destroy(hub_inbox_t *ib)
{
    uv_mutex_destroy(&ib->mu);
}
