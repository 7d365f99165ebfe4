-- direct_message {target_id, content} -> pushed as direct_message {content,
-- sender_id, timestamp} to the connection whose client_id is target_id and to
-- every connection of the user whose user_id is target_id. Needs send:message.

local gohub = require "gohub"
local validate = require "lib.validate"

local errors = gohub.errors

local M = {}

-- content is passed on untouched: it arrives as a raw JSON value (checked
-- but not decoded into Lua tables) and is sent on byte for byte
M.raw = { "content" }


function M.handle(client, data)
  local bad = validate.object(data)
      or validate.string(data, "target_id")
      or validate.present(data, "content")
  if bad then
    return gohub.error(errors.INVALID_FORMAT, bad)
  end

  local target_id = data.target_id
  if not gohub.can(client, "send:message", target_id) then
    return gohub.error(errors.FORBIDDEN, "forbidden")
  end

  local message = {
    content = data.content,
    sender_id = client.user_id,
    timestamp = gohub.now(),
  }
  local to_client = gohub.send(target_id, "direct_message", message)
  local to_user = gohub.send_user(target_id, "direct_message", message)
  if not to_client and not to_user then
    return gohub.error(errors.CLIENT_OFFLINE, "client offline")
  end
end


return M
