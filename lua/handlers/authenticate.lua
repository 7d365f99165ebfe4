-- authenticate {token} -> authenticated {client_id, user_id, permissions,
-- expires_at}. In-band token verification is not available yet: every token
-- is refused with 2003 (use ?token= or Authorization: Bearer at the handshake).

local gohub = require "gohub"
local validate = require "lib.validate"

local M = {}


function M.handle(client, data)
  local bad = validate.object(data) or validate.string(data, "token")
  if bad then
    return gohub.error(gohub.errors.INVALID_FORMAT, bad)
  end

  return gohub.error(gohub.errors.INVALID_TOKEN, "invalid token")
end


return M
