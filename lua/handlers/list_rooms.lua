-- list_rooms {} -> rooms {rooms = [{id, name, member_count, max_clients}]}

local gohub = require "gohub"
local validate = require "lib.validate"

local M = {}


function M.handle(client, data)
  local bad = validate.object(data)
  if bad then
    return gohub.error(gohub.errors.INVALID_FORMAT, bad)
  end

  -- already {id, name, member_count, max_clients} tables in an array that
  -- encodes as [] when there are no rooms
  return "rooms", { rooms = gohub.rooms.list() }
end


return M
