-- join_room {room_id} -> room_joined {room_id, status, member_count}
-- Needs join:room. The other members get member_joined from the server.

local gohub = require "gohub"
local validate = require "lib.validate"
local room_errors = require "lib.room_errors"

local M = {}


function M.handle(client, data)
  local bad = validate.object(data) or validate.room_id(data, "room_id")
  if bad then
    return gohub.error(gohub.errors.INVALID_FORMAT, bad)
  end

  local room_id = data.room_id
  if not gohub.can(client, "join:room", room_id) then
    return gohub.error(gohub.errors.FORBIDDEN, "forbidden")
  end

  local member_count, err = gohub.rooms.join(client.id, room_id)
  if not member_count then
    return room_errors.reply(err)
  end

  return "room_joined", {
    room_id = room_id,
    status = "joined",
    member_count = member_count,
  }
end


return M
