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

  local list, err = gohub.rooms.members(room_id)
  if not list then
    return room_errors.reply(err)
  end

  local members = {}
  for i, member in ipairs(list) do
    members[i] = { client_id = member.client_id, user_id = member.user_id }
  end

  return "room_members", {
    room_id = room_id,
    members = gohub.json.array(members),
  }
end


return M
