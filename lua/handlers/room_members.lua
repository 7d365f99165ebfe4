-- room_members {room_id} -> room_members {room_id,
-- members = [{client_id, user_id}]}. Needs join:room.

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

  -- already an array of {client_id, user_id} that encodes as a JSON array
  local members, err = gohub.rooms.members(room_id)
  if not members then
    return room_errors.reply(err)
  end

  return "room_members", { room_id = room_id, members = members }
end


return M
