-- Permission policy: gohub.can(client, permission, target) calls M.can.
-- Default: admin:system grants everything; otherwise the permission must be
-- listed in client.permissions (from the token, or auth.anonymous_permissions
-- for anonymous connections).
--
-- target is what the permission applies to (a room id for join:room,
-- send:message in a room, create:room, delete:room; the target_id of a
-- direct message; nil otherwise). Use it for finer policies, e.g.:
--
--   if permission == "join:room" and target:sub(1, 6) == "staff:" then
--     return has(client, "staff")
--   end

local M = {}

local ADMIN = "admin:system"


function M.can(client, permission, target) -- luacheck: no unused args
  local held = client.permissions
  if type(held) ~= "table" then
    return false
  end
  -- one pass for both: the permission itself, or admin:system
  for i = 1, #held do
    local p = held[i]
    if p == permission or p == ADMIN then
      return true
    end
  end
  return false
end


return M
