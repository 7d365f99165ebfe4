-- list_rooms {} -> rooms {rooms = [{id, name, member_count, max_clients}]}

local gohub = require "gohub"
local validate = require "lib.validate"

local M = {}


function M.handle(client, data)
  local bad = validate.object(data)
  if bad then
    return gohub.error(gohub.errors.INVALID_FORMAT, bad)
  end

  local rooms = {}
  for i, room in ipairs(gohub.rooms.list()) do
    rooms[i] = {
      id = room.id,
      name = room.name,
      member_count = room.member_count,
      max_clients = room.max_clients,
    }
  end

  -- json.array: an empty list is sent as [] rather than {}
  return "rooms", { rooms = gohub.json.array(rooms) }
end


return M
