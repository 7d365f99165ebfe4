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


-- The permissions array of a client, as a set. A client table (and so its
-- permissions array) lives as long as the connection's identity, so the set
-- is built once per array, not on every message (a loop over the array cost
-- ~1,000 instructions per check); an array replaced by a new one gets a new
-- set. Weak keys: the sets go with their arrays.
local sets = setmetatable({}, { __mode = "k" })


local function held_set(client)
  local held = client.permissions
  if type(held) ~= "table" then
    return nil
  end
  local set = sets[held]
  if set == nil then
    set = {}
    for i = 1, #held do
      set[held[i]] = true
    end
    sets[held] = set
  end
  return set
end


function M.can(client, permission, target) -- luacheck: no unused args
  local set = held_set(client)
  return set ~= nil and (set[ADMIN] == true or set[permission] == true)
end


return M
