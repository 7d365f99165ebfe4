-- set_status {status} -> status_set {status}
-- An example of a custom handler (the README walks through it): it stores
-- the status in the connection's ctx and tells every room the client is in
-- with status_changed {client_id, user_id, status}.

local gohub = require "gohub"
local validate = require "lib.validate"

local M = {}


function M.handle(client, data)
  -- 1. validate the input: a bad request gets error 1001
  local bad = validate.object(data)
      or validate.string(data, "status", { min_len = 1, max_len = 64 })
  if bad then
    return gohub.error(gohub.errors.INVALID_FORMAT, bad)
  end

  -- 2. check a permission (lua/permissions.lua decides)
  if not gohub.can(client, "send:message") then
    return gohub.error(gohub.errors.FORBIDDEN, "forbidden")
  end

  -- 3. keep per-connection state in client.ctx
  local status = data.status
  client.ctx.status = status

  -- 4. tell the other members of every room the client is in
  local change = {
    client_id = client.id,
    user_id = client.user_id,
    status = status,
  }
  for _, room_id in ipairs(gohub.rooms.of(client.id)) do
    gohub.rooms.publish(room_id, "status_changed", change, client.id)
  end

  -- 5. reply to the sender
  return "status_set", { status = status }
end


return M
