-- delete_room {room_id} -> room_deleted {room_id}. Needs delete:room.
-- The members get room_deleted from the server and stop being members.

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
  if not gohub.can(client, "delete:room", room_id) then
    return gohub.error(gohub.errors.FORBIDDEN, "forbidden")
  end

  local ok, err = gohub.rooms.delete(room_id)
  if not ok then
    return room_errors.reply(err)
  end

  return "room_deleted", { room_id = room_id }
end


return M
