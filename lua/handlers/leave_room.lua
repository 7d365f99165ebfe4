-- leave_room {room_id} -> room_left {room_id, status}
-- No permission needed. The other members get member_left from the server.

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
  local ok, err = gohub.rooms.leave(client.id, room_id)
  if not ok then
    return room_errors.reply(err)
  end

  return "room_left", { room_id = room_id, status = "left" }
end


return M
