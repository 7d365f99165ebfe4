-- create_room {room_id, name?, max_clients?} -> room_created {room_id, name,
-- max_clients}. Needs create:room. The room stays until it is deleted.

local gohub = require "gohub"
local validate = require "lib.validate"
local room_errors = require "lib.room_errors"

local M = {}

-- the server's bound (gohub.rooms.create raises past it); 0 = unlimited
local MAX_CLIENTS = { optional = true, max = 10000000 }


function M.handle(client, data)
  local bad = validate.object(data)
      or validate.room_id(data, "room_id")
      or validate.string(data, "name", { optional = true })
      or validate.count(data, "max_clients", MAX_CLIENTS)
  if bad then
    return gohub.error(gohub.errors.INVALID_FORMAT, bad)
  end

  local room_id = data.room_id
  if not gohub.can(client, "create:room", room_id) then
    return gohub.error(gohub.errors.FORBIDDEN, "forbidden")
  end

  local name = data.name
  if type(name) ~= "string" then
    name = room_id
  end
  local max_clients = data.max_clients
  if type(max_clients) ~= "number" then
    max_clients = gohub.config.rooms.default_max_clients
  end

  local room, err = gohub.rooms.create(room_id, {
    name = name,
    max_clients = max_clients,
  })
  if not room then
    return room_errors.reply(err)
  end

  return "room_created", {
    room_id = room.id,
    name = room.name,
    max_clients = room.max_clients,
  }
end


return M
