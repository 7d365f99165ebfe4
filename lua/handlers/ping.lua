-- ping {ts?} -> pong {ts, server_ts, rtt}
-- ts is the client's clock in ms; rtt is server_ts - ts (0 without ts).

local gohub = require "gohub"
local validate = require "lib.validate"

local M = {}

local OPTIONAL = { optional = true } -- one table, not one per ping


function M.handle(client, data)
  local bad = validate.object(data)
      or validate.number(data, "ts", OPTIONAL)
  if bad then
    return gohub.error(gohub.errors.INVALID_FORMAT, bad)
  end

  local server_ts = gohub.now()
  local ts = data.ts
  if type(ts) ~= "number" then
    return "pong", { ts = gohub.json.null, server_ts = server_ts, rtt = 0 }
  end
  return "pong", { ts = ts, server_ts = server_ts, rtt = server_ts - ts }
end


return M
