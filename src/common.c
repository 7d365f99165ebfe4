/* common.c: error strings and aborting allocators. Any thread. */
#include "common.h"

#include <string.h>

const char *hub_strerror(int err)
{
    switch (err) {
    case HUB_OK:      return "ok";
    case HUB_ECLOSED: return "connection closed";
    case HUB_EFULL:   return "queue full";
    case HUB_ECONFIG: return "invalid configuration";
    case HUB_EPROTO:  return "protocol error";
    case HUB_EALREADY:   return "already_member";
    case HUB_ENOTMEMBER: return "not_member";
    case HUB_ETOOMANY:   return "too_many_rooms";
    case HUB_EROOMFULL:  return "full";
    case HUB_EOFFLINE:   return "offline";
    default:          return uv_strerror(err);
    }
}
