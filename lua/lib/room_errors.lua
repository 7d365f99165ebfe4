-- Turns the short error strings of gohub.rooms.* ("not_found", "full", ...)
-- into protocol errors, the same way in every handler:
--
--   local count, err = gohub.rooms.join(client.id, room_id)
--   if not count then
--     return room_errors.reply(err)
--   end

local gohub = require "gohub"

local errors = gohub.errors

local M = {}

local REPLIES = {
  not_found       = { errors.ROOM_NOT_FOUND, "room not found" },
  exists          = { errors.ROOM_EXISTS, "room already exists" },
  full            = { errors.ROOM_FULL, "room full" },
  not_member      = { errors.NOT_IN_ROOM, "not in room" },
  already_member  = { errors.ALREADY_IN_ROOM, "already in room" },
  invalid_room_id = { errors.INVALID_FORMAT, "invalid room_id" },
  too_many_rooms  = { errors.FORBIDDEN, "too many rooms" },
  -- a cluster's room owner did not grant a seat in time (a node died, the
  -- bus is down): the client may try again
  unavailable     = { errors.SERVER_ERROR, "room owner unavailable, try again" },
  out_of_memory   = { errors.SERVER_ERROR, "server error" },
}


-- Returns what a handler returns for err: nil, code, message[, details].
-- Unknown errors give 1000 with the original string in details.reason.
function M.reply(err)
  local known = REPLIES[err]
  if not known then
    return gohub.error(errors.UNKNOWN, "unknown error",
                       { reason = tostring(err) })
  end
  return gohub.error(known[1], known[2])
end


return M
