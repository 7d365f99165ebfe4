-- broadcast {content} -> pushed as broadcast {content, sender_id, timestamp}
-- to every other connection; the sender gets an ack (when it sent a
-- message_id). Needs broadcast (admin:system holds it).

local gohub = require "gohub"
local validate = require "lib.validate"

local M = {}

-- content is passed on untouched: it arrives as a raw JSON value (checked
-- but not decoded into Lua tables) and is sent on byte for byte
M.raw = { "content" }


function M.handle(client, data)
  local bad = validate.object(data) or validate.present(data, "content")
  if bad then
    return gohub.error(gohub.errors.INVALID_FORMAT, bad)
  end

  if not gohub.can(client, "broadcast") then
    return gohub.error(gohub.errors.FORBIDDEN, "forbidden")
  end

  gohub.broadcast("broadcast", {
    content = data.content,
    sender_id = client.user_id,
    timestamp = gohub.now(),
  }, client.id)
end


return M
