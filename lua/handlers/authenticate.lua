-- authenticate {token} -> authenticated {client_id, user_id, permissions,
-- expires_at} (plus username when the token has one).
--
-- gohub.authenticate verifies the JWT like the handshake does and, when it
-- is valid, gives the connection the token's identity: user_id, username,
-- permissions (the token's, or auth.anonymous_permissions when it has no
-- permissions claim), claims; it also moves the connection to that user
-- for direct messages and member lists, and sets when it expires
-- (expires_at: the token's exp in seconds since the epoch, null without
-- one). A connection whose token expires is closed with 1008 unless a
-- fresh authenticate came first. Errors: 2002 token expired, 2003 invalid
-- token (the connection keeps its identity), 2000 when auth is disabled.

local gohub = require "gohub"
local validate = require "lib.validate"

local M = {}


function M.handle(client, data)
  local bad = validate.object(data) or validate.string(data, "token")
  if bad then
    return gohub.error(gohub.errors.INVALID_FORMAT, bad)
  end

  local identity, code, message = gohub.authenticate(client, data.token)
  if not identity then
    return gohub.error(code, message)
  end

  return "authenticated", {
    client_id = client.id,
    user_id = identity.user_id,
    username = identity.username,
    permissions = identity.permissions,
    expires_at = identity.expires_at,
  }
end


return M
