-- Checks for the `data` table of a request. Every check returns nil when the
-- value is fine, or the error message to send with code 1001 (INVALID_FORMAT),
-- so checks chain with `or`:
--
--   local bad = validate.object(data) or validate.string(data, "room_id")
--   if bad then
--     return gohub.error(gohub.errors.INVALID_FORMAT, bad)
--   end
--
-- Options: `optional = true` accepts a missing field (or JSON null);
-- string takes `min_len`/`max_len`, count takes `max`.
-- Pure functions: callable from any handler, no state.

local gohub = require "gohub"

local type = type
local valid_id = gohub.rooms.valid_id
local null = gohub.json.null
local floor = math.floor
local huge = math.huge

local M = {}


local function is_null(value)
  return value == nil or value == null
end


-- data itself must be a JSON object (a table that is not JSON null).
function M.object(data)
  if type(data) ~= "table" or data == null then
    return "data must be an object"
  end
  return nil
end


-- data[key] must be present; any JSON value (even null) is accepted.
function M.present(data, key)
  if data[key] == nil then
    return key .. " is required"
  end
  return nil
end


-- UTF-8 characters in s (the server only accepts valid UTF-8).
local function char_count(s)
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end


-- data[key] must be a string; opts.min_len / opts.max_len bound its length
-- in characters.
function M.string(data, key, opts)
  local value = data[key]
  if opts and opts.optional and is_null(value) then
    return nil
  end
  if type(value) ~= "string" then
    return key .. " must be a string"
  end
  local min_len = opts and opts.min_len or 0
  local max_len = opts and opts.max_len
  local n = char_count(value)
  if max_len and (n < min_len or n > max_len) then
    return string.format("%s must be %d to %d characters", key, min_len,
                         max_len)
  end
  if n < min_len then
    return string.format("%s must be at least %d characters", key, min_len)
  end
  return nil
end


-- data[key] must be a room id: 1 to 128 of A-Z a-z 0-9 _ - : . @ (the
-- server's own rule, gohub.rooms.valid_id: a Lua pattern here cost ~2,000
-- instructions per message).
function M.room_id(data, key)
  local value = data[key]
  if valid_id(value) then -- false for anything but a string
    return nil
  end
  if type(value) ~= "string" then
    return key .. " must be a string"
  end
  return key .. " must be 1 to 128 of A-Z a-z 0-9 _ - : . @"
end


-- data[key] must be a number.
function M.number(data, key, opts)
  local value = data[key]
  if opts and opts.optional and is_null(value) then
    return nil
  end
  if type(value) ~= "number" or value ~= value then
    return key .. " must be a number"
  end
  return nil
end


-- data[key] must be an integer >= 0; opts.max bounds it.
function M.count(data, key, opts)
  local value = data[key]
  if opts and opts.optional and is_null(value) then
    return nil
  end
  if type(value) ~= "number" or value < 0 or value == huge
     or floor(value) ~= value then
    return key .. " must be a non-negative integer"
  end
  if opts and opts.max and value > opts.max then
    return string.format("%s must be at most %d", key, opts.max)
  end
  return nil
end


return M
