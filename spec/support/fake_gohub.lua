-- A pure-Lua, in-memory double of the `gohub` module, for busted specs of
-- handlers. It implements the whole contract API (rooms with auto_create,
-- max_clients and presence events, sends, broadcasts, JSON, config, ...)
-- and records every message it delivers.
--
--   local fake = require "spec.support.fake_gohub"
--   package.loaded["gohub"] = fake
--   fake.reset()
--   local alice = fake.add_client { id = "c1", user_id = "alice" }
--   local name, data = fake.call(require "handlers.ping", alice, { ts = 1 })
--   -- fake.sent: { { to = client_id, type = message_type, data =, json = } }
--
-- Only the contract API is stored in the module table itself (so that walking
-- it with pairs() lists exactly the API, see spec/api_contract_spec.lua); the
-- test helpers (add_client, call, sent, reset, ...) are reached through its
-- metatable. Assigning a field of the module raises.

local floor = math.floor
local huge = math.huge
local format = string.format

local fake = {}      -- the gohub API
local helpers = {}   -- test helpers and recorded state

local ANON_PERMISSIONS = { "join:room", "leave:room", "send:message",
                           "create:room" }
local DEFAULT_NOW = 1700000000000
local DEFAULT_ROOMS_CONFIG = {
  auto_create = true,
  default_max_clients = 0,
  presence_events = true,
  members_only_send = true,
  echo_to_sender = false,
  max_rooms_per_client = 128,
}
local LOG_LEVELS = { debug = true, info = true, warn = true, error = true }

-- state, (re)initialised by helpers.reset()
local clients        -- client_id -> client table
local client_order   -- client ids in the order they were added
local rooms          -- room_id -> { id, name, max_clients, auto, members }
local request        -- the current request's data (for gohub.raw)
local now_ms
local next_client
local permissions_override
local hooks_module
local tokens         -- token -> claims the fake accepts (fake.add_token)
local auth_enabled
local config_data = { rooms = {} }


local function check_arg(fname, n, value, expected, optional)
  if optional and value == nil then
    return
  end
  if type(value) ~= expected then
    error(format("bad argument #%d to '%s' (%s expected, got %s)", n, fname,
                 expected, type(value)), 3)
  end
end


--------------------------------------------------------------------------
-- JSON
--------------------------------------------------------------------------

local NULL = setmetatable({}, {
  __tostring = function() return "gohub.json.null" end,
})
-- raw JSON values are userdata, as in the server: a proxy sharing RAW's
-- metatable, its text in raw_text (weak keys)
local raw_text = setmetatable({}, { __mode = "k" })
local RAW = newproxy(true)
getmetatable(RAW).__tostring = function(raw) return raw_text[raw] end
local array_marks = setmetatable({}, { __mode = "k" })

local json = {}
json.null = NULL


function json.array(t)
  check_arg("json.array", 1, t, "table")
  array_marks[t] = true
  return t
end


function json.raw(text)
  check_arg("json.raw", 1, text, "string")
  if json.decode(text) == nil then -- as the server: what is sent must parse
    return nil, "invalid JSON"
  end
  local raw = newproxy(RAW)
  raw_text[raw] = text
  return raw
end


local ESCAPES = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}


-- JSON's control characters: U+0000..U+001F (%c would take DEL too)
local SPECIAL = '[%z\1-\31"\\]'


local function escape_char(c)
  return ESCAPES[c] or format("\\u%04x", c:byte())
end


-- Length of the well-formed UTF-8 sequence at s[i] (lead byte c >= 0x80),
-- or nil: the server's rule (no overlong forms, surrogates or code points
-- past U+10FFFF).
local function utf8_seq(s, i, c)
  local len, lo, hi = nil, 0x80, 0xBF
  if c >= 0xC2 and c <= 0xDF then
    len = 2
  elseif c >= 0xE0 and c <= 0xEF then
    len = 3
    if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
  elseif c >= 0xF0 and c <= 0xF4 then
    len = 4
    if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
  else
    return nil
  end
  local c2 = s:byte(i + 1)
  if not c2 or c2 < lo or c2 > hi then
    return nil
  end
  for j = i + 2, i + len - 1 do
    local cj = s:byte(j)
    if not cj or cj < 0x80 or cj > 0xBF then
      return nil
    end
  end
  return len
end


-- What the server sends is UTF-8: a byte that starts no well-formed
-- sequence becomes U+FFFD.
local function utf8_clean(s)
  if not s:find("[\128-\255]") then
    return s
  end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or utf8_seq(s, i, c)
    if len then
      out[#out + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = "\239\191\189"
      i = i + 1
    end
  end
  return table.concat(out)
end


local function encode_string(s)
  return '"' .. (utf8_clean(s):gsub(SPECIAL, escape_char)) .. '"'
end


local function encode_number(n)
  if n ~= n or n == huge or n == -huge then
    error("cannot encode " .. tostring(n), 0)
  end
  if floor(n) == n and n > -2^53 and n < 2^53 then
    return format("%d", n)
  end
  return format("%.17g", n)
end


local function is_array(t)
  if array_marks[t] then
    return true
  end
  if next(t) == nil then
    return false
  end
  local count = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or floor(k) ~= k then
      return false
    end
    count = count + 1
  end
  for i = 1, count do
    if t[i] == nil then
      return false
    end
  end
  return true
end


local encode_value

local function encode_table(t, depth, out)
  if depth > 100 then
    error("nested too deep (cycle?)", 0)
  end
  if is_array(t) then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then
        out[#out + 1] = ","
      end
      encode_value(t[i], depth + 1, out)
    end
    out[#out + 1] = "]"
    return
  end
  local keys = {}
  for k in pairs(t) do
    local kt = type(k)
    if kt ~= "string" and kt ~= "number" then
      error("cannot encode a " .. kt .. " key", 0)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then
      out[#out + 1] = ","
    end
    if type(k) == "number" then
      out[#out + 1] = encode_string(encode_number(k))
    else
      out[#out + 1] = encode_string(k)
    end
    out[#out + 1] = ":"
    encode_value(t[k], depth + 1, out)
  end
  out[#out + 1] = "}"
end


encode_value = function(value, depth, out)
  local vt = type(value)
  if value == nil or value == NULL then
    out[#out + 1] = "null"
  elseif vt == "boolean" then
    out[#out + 1] = tostring(value)
  elseif vt == "number" then
    out[#out + 1] = encode_number(value)
  elseif vt == "string" then
    out[#out + 1] = encode_string(value)
  elseif vt == "userdata" and raw_text[value] then
    out[#out + 1] = raw_text[value]
  elseif vt == "table" then
    encode_table(value, depth, out)
  else
    error("cannot encode a " .. vt, 0)
  end
end


function json.encode(value)
  local out = {}
  local ok, err = pcall(encode_value, value, 0, out)
  if not ok then
    return nil, err
  end
  return table.concat(out)
end


-- decoder: recursive descent over text, pos is the next byte to read
local decode_value


local function decode_error(text, pos, what)
  error(format("%s at byte %d", what, pos), 0)
end


local function skip_space(text, pos)
  return text:find("[^ \t\r\n]", pos) or #text + 1
end


local function utf8_char(cp)
  if cp < 0x80 then
    return string.char(cp)
  elseif cp < 0x800 then
    return string.char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return string.char(0xE0 + floor(cp / 0x1000),
                       0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return string.char(0xF0 + floor(cp / 0x40000),
                     0x80 + floor(cp / 0x1000) % 0x40,
                     0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end


local UNESCAPES = {
  ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n",
  r = "\r", t = "\t",
}


local function decode_string(text, pos)
  local parts = {}
  pos = pos + 1
  while true do
    local stop = text:find(SPECIAL, pos)
    if not stop then
      decode_error(text, pos, "unterminated string")
    end
    parts[#parts + 1] = text:sub(pos, stop - 1)
    local c = text:sub(stop, stop)
    if c == '"' then
      return table.concat(parts), stop + 1
    elseif c ~= "\\" then
      decode_error(text, stop, "control character in string")
    end
    local e = text:sub(stop + 1, stop + 1)
    if UNESCAPES[e] then
      parts[#parts + 1] = UNESCAPES[e]
      pos = stop + 2
    elseif e == "u" then
      local hex = text:match("^%x%x%x%x", stop + 2)
      if not hex then
        decode_error(text, stop, "bad \\u escape")
      end
      local cp = tonumber(hex, 16)
      pos = stop + 6
      local low = text:match("^\\u(%x%x%x%x)", pos)
      if cp >= 0xD800 and cp < 0xDC00 and low then
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (tonumber(low, 16) - 0xDC00)
        pos = pos + 6
      end
      parts[#parts + 1] = utf8_char(cp)
    else
      decode_error(text, stop, "bad escape")
    end
  end
end


local function decode_number(text, pos)
  local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  local value = num and tonumber(num)
  if not value then
    decode_error(text, pos, "bad number")
  end
  return value, pos + #num
end


local LITERALS = { ["true"] = true, ["false"] = false, null = NULL }


decode_value = function(text, pos, depth)
  if depth > 100 then
    decode_error(text, pos, "nested too deep")
  end
  pos = skip_space(text, pos)
  local c = text:sub(pos, pos)
  if c == "{" then
    local object = {}
    pos = skip_space(text, pos + 1)
    if text:sub(pos, pos) == "}" then
      return object, pos + 1
    end
    while true do
      if text:sub(pos, pos) ~= '"' then
        decode_error(text, pos, "expected a string key")
      end
      local key
      key, pos = decode_string(text, pos)
      pos = skip_space(text, pos)
      if text:sub(pos, pos) ~= ":" then
        decode_error(text, pos, "expected ':'")
      end
      object[key], pos = decode_value(text, pos + 1, depth + 1)
      pos = skip_space(text, pos)
      c = text:sub(pos, pos)
      if c == "}" then
        return object, pos + 1
      elseif c ~= "," then
        decode_error(text, pos, "expected ',' or '}'")
      end
      pos = skip_space(text, pos + 1)
    end
  elseif c == "[" then
    local array = json.array({})
    pos = skip_space(text, pos + 1)
    if text:sub(pos, pos) == "]" then
      return array, pos + 1
    end
    while true do
      array[#array + 1], pos = decode_value(text, pos, depth + 1)
      pos = skip_space(text, pos)
      c = text:sub(pos, pos)
      if c == "]" then
        return array, pos + 1
      elseif c ~= "," then
        decode_error(text, pos, "expected ',' or ']'")
      end
      pos = pos + 1
    end
  elseif c == '"' then
    return decode_string(text, pos)
  elseif c == "-" or c:match("%d") then
    return decode_number(text, pos)
  end
  local word = text:match("^%a+", pos)
  if word and LITERALS[word] ~= nil then
    return LITERALS[word], pos + #word
  end
  decode_error(text, pos, "unexpected character")
end


function json.decode(text)
  check_arg("json.decode", 1, text, "string")
  if utf8_clean(text) ~= text then
    return nil, "invalid UTF-8"
  end
  local ok, value, pos = pcall(decode_value, text, 1, 0)
  if not ok then
    return nil, value
  end
  pos = skip_space(text, pos)
  if pos <= #text then
    return nil, format("trailing garbage at byte %d", pos)
  end
  return value
end


--------------------------------------------------------------------------
-- deliveries
--------------------------------------------------------------------------

local function encode_message(fname, data)
  local text, err = json.encode(data)
  if not text then
    error(format("%s: cannot encode data: %s", fname, err), 3)
  end
  return text
end


-- Records one delivery: data is what the recipient decodes (raw values are
-- expanded, gohub.json.null stays null).
local function deliver(to, message_type, text)
  local sent = helpers.sent
  sent[#sent + 1] = {
    to = to,
    type = message_type,
    data = (json.decode(text)),
    json = text,
  }
end


-- Runs hooks_module[name](...) like the server: an error is logged (in
-- fake.logs) and ignored. Returns the hook's results.
local function run_hook(name, ...)
  local hook = hooks_module and hooks_module[name]
  if not hook then
    return
  end
  local results = { pcall(hook, ...) }
  if not results[1] then
    local logs = helpers.logs
    logs[#logs + 1] = { level = "error", msg = "hook failed",
                        fields = { hook = name, error = tostring(results[2]) } }
    return
  end
  return unpack(results, 2, table.maxn(results))
end


--------------------------------------------------------------------------
-- rooms
--------------------------------------------------------------------------

local function valid_room_id(room_id)
  return #room_id >= 1 and #room_id <= 128
         and not room_id:find("[^A-Za-z0-9_%-:%.@]")
end


local function room_view(room)
  return {
    id = room.id,
    name = room.name,
    max_clients = room.max_clients,
    member_count = #room.members,
  }
end


local function member_index(room, client_id)
  for i, id in ipairs(room.members) do
    if id == client_id then
      return i
    end
  end
  return nil
end


local function publish_text(room, message_type, text, exclude)
  local n = 0
  for _, id in ipairs(room.members) do
    if id ~= exclude then
      deliver(id, message_type, text)
      n = n + 1
    end
  end
  return n
end


local function presence(room, message_type, client)
  if not config_data.rooms.presence_events then
    return
  end
  local text = encode_message(message_type, {
    room_id = room.id,
    client_id = client.id,
    user_id = client.user_id,
  })
  publish_text(room, message_type, text, client.id)
end


local function remove_member(room, client)
  table.remove(room.members, member_index(room, client.id))
  presence(room, "member_left", client)
  run_hook("on_leave", client, room.id)
  if room.auto and #room.members == 0 then
    rooms[room.id] = nil
  end
end


local function rooms_of(client_id)
  local ids = {}
  for id, room in pairs(rooms) do
    if member_index(room, client_id) then
      ids[#ids + 1] = id
    end
  end
  table.sort(ids)
  return ids
end


local api_rooms = {}


function api_rooms.create(room_id, opts)
  check_arg("rooms.create", 1, room_id, "string")
  check_arg("rooms.create", 2, opts, "table", true)
  opts = opts or {}
  check_arg("rooms.create", 2, opts.name, "string", true)
  check_arg("rooms.create", 2, opts.max_clients, "number", true)
  local max = opts.max_clients
  if max and (not (max >= 0 and max <= 10000000) or max ~= math.floor(max)) then
    error("bad argument #2 to 'rooms.create' (max_clients must be an integer from 0 to "
          .. "10000000)", 2)
  end
  if not valid_room_id(room_id) then
    return nil, "invalid_room_id"
  end
  if rooms[room_id] then
    return nil, "exists"
  end
  local room = {
    id = room_id,
    name = opts.name or room_id,
    max_clients = opts.max_clients or config_data.rooms.default_max_clients,
    auto = false,
    members = {},
  }
  rooms[room_id] = room
  return room_view(room)
end


function api_rooms.delete(room_id)
  check_arg("rooms.delete", 1, room_id, "string")
  local room = rooms[room_id]
  if not room then
    return nil, "not_found"
  end
  publish_text(room, "room_deleted",
               encode_message("rooms.delete", { room_id = room_id }))
  rooms[room_id] = nil
  return true
end


function api_rooms.join(client_id, room_id)
  check_arg("rooms.join", 1, client_id, "string")
  check_arg("rooms.join", 2, room_id, "string")
  if not valid_room_id(room_id) then
    return nil, "invalid_room_id"
  end
  local client = clients[client_id]
  if not client then
    return nil, "offline"
  end
  local cfg = config_data.rooms
  local room = rooms[room_id]
  if not room and not cfg.auto_create then
    return nil, "not_found"
  end
  if room and member_index(room, client_id) then
    return nil, "already_member"
  end
  if room and room.max_clients > 0 and #room.members >= room.max_clients then
    return nil, "full"
  end
  if cfg.max_rooms_per_client > 0
     and #rooms_of(client_id) >= cfg.max_rooms_per_client then
    return nil, "too_many_rooms"
  end
  if not room then
    room = {
      id = room_id,
      name = room_id,
      max_clients = cfg.default_max_clients,
      auto = true,
      members = {},
    }
    rooms[room_id] = room
  end
  room.members[#room.members + 1] = client_id
  presence(room, "member_joined", client)
  run_hook("on_join", client, room_id)
  return #room.members
end


function api_rooms.leave(client_id, room_id)
  check_arg("rooms.leave", 1, client_id, "string")
  check_arg("rooms.leave", 2, room_id, "string")
  if not valid_room_id(room_id) then
    return nil, "invalid_room_id"
  end
  local room = rooms[room_id]
  if not room then
    return nil, "not_found"
  end
  local client = clients[client_id]
  if not client or not member_index(room, client_id) then
    return nil, "not_member"
  end
  remove_member(room, client)
  return true
end


function api_rooms.get(room_id)
  check_arg("rooms.get", 1, room_id, "string")
  local room = rooms[room_id]
  if not room then
    return nil, "not_found"
  end
  return room_view(room)
end


function api_rooms.list()
  local ids = {}
  for id in pairs(rooms) do
    ids[#ids + 1] = id
  end
  table.sort(ids)
  local list = {}
  for i, id in ipairs(ids) do
    list[i] = room_view(rooms[id])
  end
  return json.array(list)   -- like the real module: encodes as [] when empty
end


function api_rooms.members(room_id)
  check_arg("rooms.members", 1, room_id, "string")
  local room = rooms[room_id]
  if not room then
    return nil, "not_found"
  end
  local list = {}
  for i, id in ipairs(room.members) do
    list[i] = { client_id = id, user_id = clients[id].user_id }
  end
  return json.array(list)   -- like the real module: encodes as [] when empty
end


function api_rooms.count(room_id)
  check_arg("rooms.count", 1, room_id, "string")
  local room = rooms[room_id]
  if not room then
    return nil, "not_found"
  end
  return #room.members
end


function api_rooms.valid_id(room_id)
  return type(room_id) == "string" and valid_room_id(room_id)
end


function api_rooms.is_member(client_id, room_id)
  check_arg("rooms.is_member", 1, client_id, "string")
  check_arg("rooms.is_member", 2, room_id, "string")
  local room = rooms[room_id]
  return room ~= nil and member_index(room, client_id) ~= nil
end


function api_rooms.of(client_id)
  check_arg("rooms.of", 1, client_id, "string")
  return json.array(rooms_of(client_id))   -- like the real module
end


function api_rooms.publish(room_id, message_type, data, exclude_client_id)
  check_arg("rooms.publish", 1, room_id, "string")
  check_arg("rooms.publish", 2, message_type, "string")
  check_arg("rooms.publish", 4, exclude_client_id, "string", true)
  local text = encode_message("rooms.publish", data)
  local room = rooms[room_id]
  if not room then
    return nil, "not_found"
  end
  return publish_text(room, message_type, text, exclude_client_id)
end


--------------------------------------------------------------------------
-- the gohub API
--------------------------------------------------------------------------

local function drop_client(client)
  for _, room_id in ipairs(rooms_of(client.id)) do
    remove_member(rooms[room_id], client)
  end
  clients[client.id] = nil
  for i, id in ipairs(client_order) do
    if id == client.id then
      table.remove(client_order, i)
      break
    end
  end
end


local function read_only(t, name)
  local proxies = {}
  return setmetatable({}, {
    __index = function(_, key)
      local value = t[key]
      if type(value) ~= "table" then
        return value
      end
      proxies[key] = proxies[key] or read_only(value, name .. "." .. key)
      return proxies[key]
    end,
    __newindex = function()
      error(name .. " is read-only (in specs: fake.configure)", 2)
    end,
  })
end


fake.rooms = api_rooms
fake.json = json
fake.config = read_only(config_data, "gohub.config")

fake.errors = {
  UNKNOWN = 1000, INVALID_FORMAT = 1001, INVALID_MESSAGE_ID = 1002,
  SERVER_ERROR = 1003, TIMEOUT = 1004, RATE_LIMITED = 1005,
  UNKNOWN_TYPE = 1006, UNAUTHORIZED = 2000, FORBIDDEN = 2001,
  TOKEN_EXPIRED = 2002, INVALID_TOKEN = 2003, ROOM_NOT_FOUND = 3000,
  ROOM_EXISTS = 3001, ROOM_FULL = 3002, NOT_IN_ROOM = 3003,
  ALREADY_IN_ROOM = 3004, CLIENT_NOT_FOUND = 4000, CLIENT_OFFLINE = 4001,
  MESSAGE_TOO_LARGE = 4002,
}


function fake.send(client_id, message_type, data)
  check_arg("send", 1, client_id, "string")
  check_arg("send", 2, message_type, "string")
  local text = encode_message("send", data)
  if not clients[client_id] then
    return nil, "offline"
  end
  deliver(client_id, message_type, text)
  return true
end


function fake.send_user(user_id, message_type, data)
  check_arg("send_user", 1, user_id, "string")
  check_arg("send_user", 2, message_type, "string")
  local text = encode_message("send_user", data)
  local n = 0
  for _, id in ipairs(client_order) do
    if clients[id].user_id == user_id then
      deliver(id, message_type, text)
      n = n + 1
    end
  end
  if n == 0 then
    return nil, "offline"
  end
  return n
end


function fake.broadcast(message_type, data, exclude_client_id)
  check_arg("broadcast", 1, message_type, "string")
  check_arg("broadcast", 3, exclude_client_id, "string", true)
  local text = encode_message("broadcast", data)
  local n = 0
  for _, id in ipairs(client_order) do
    if id ~= exclude_client_id then
      deliver(id, message_type, text)
      n = n + 1
    end
  end
  return n
end


function fake.close(client_id, code, reason)
  check_arg("close", 1, client_id, "string")
  check_arg("close", 2, code, "number", true)
  check_arg("close", 3, reason, "string", true)
  local client = clients[client_id]
  if not client then
    return nil, "offline"
  end
  code = code or 1000
  local closed = helpers.closed
  closed[#closed + 1] = { client_id = client_id, code = code,
                          reason = reason or "" }
  drop_client(client)
  run_hook("on_disconnect", client, code)
  return true
end


function fake.can(client, permission, target)
  check_arg("can", 1, client, "table")
  check_arg("can", 2, permission, "string")
  local policy = permissions_override or require "permissions"
  return policy.can(client, permission, target) == true
end


function fake.error(code, message, details)
  check_arg("error", 1, code, "number")
  check_arg("error", 2, message, "string")
  return nil, code, message, details
end


function fake.raw(key)
  check_arg("raw", 1, key, "string")
  if type(request) ~= "table" or request[key] == nil then
    return nil
  end
  local text, err = json.encode(request[key])
  if not text then
    error("raw: the request is not JSON: " .. err, 2)
  end
  return json.raw(text)
end


function fake.log(level, msg, fields)
  check_arg("log", 1, level, "string")
  check_arg("log", 2, msg, "string")
  check_arg("log", 3, fields, "table", true)
  if not LOG_LEVELS[level] then
    error("bad argument #1 to 'log' (debug, info, warn or error expected)", 2)
  end
  local logs = helpers.logs
  logs[#logs + 1] = { level = level, msg = msg, fields = fields or {} }
end


local COUNT_MAX = 2 ^ 53 -- Lua numbers are exact up to it


function fake.count(name, n)
  check_arg("count", 1, name, "string")
  check_arg("count", 2, n, "number", true)
  n = n or 1
  if not (n >= -COUNT_MAX and n <= COUNT_MAX) or n ~= math.floor(n) then
    error("bad argument #2 to 'count' (integer from -2^53 to 2^53 expected)", 2)
  end
  local counters = helpers.counters
  local cur = counters[name] or 0
  counters[name] = cur
  -- compared before adding: a sum past 2^53 would round
  if (n > 0 and cur > COUNT_MAX - n) or (n < 0 and cur < -COUNT_MAX - n) then
    return nil, "out_of_range"
  end
  counters[name] = cur + n
  return cur + n
end


function fake.now()
  return now_ms
end


function fake.node_id()
  return "fake-node"
end


local function copy_array(list)
  local out = {}
  for i, v in ipairs(list) do
    out[i] = v
  end
  return json.array(out)
end


-- Like the real module: verifies token (here: looks it up among the tokens
-- of fake.add_token; exp is seconds, compared with gohub.now()) and gives
-- the client its identity. Returns { user_id, username, permissions,
-- expires_at } or nil, code, message.
function fake.authenticate(client, token)
  local client_id = client
  if type(client) == "table" then
    client_id = client.id
    check_arg("authenticate", 1, client_id, "string")
  else
    check_arg("authenticate", 1, client, "string")
  end
  check_arg("authenticate", 2, token, "string")
  if not auth_enabled then
    return nil, 2000, "authentication is disabled on this server (auth.enabled)"
  end
  local target = clients[client_id]
  if not target then
    return nil, 4000, "client not found"
  end
  local claims = tokens[token]
  if #token == 0 then
    return nil, 2003, "token required"
  elseif not claims then
    return nil, 2003, "bad token signature"
  elseif claims.exp and claims.exp * 1000 <= now_ms then
    return nil, 2002, "token expired"
  end
  local user_id = claims.user_id
  if type(user_id) ~= "string" or user_id == "" then
    user_id = claims.sub
  end
  local permissions
  if claims.permissions then
    permissions = copy_array(claims.permissions)
  else
    permissions = copy_array(ANON_PERMISSIONS)
  end
  target.user_id = user_id
  target.username = claims.username
  target.authenticated = true
  target.claims = claims
  target.permissions = permissions
  return {
    user_id = user_id,
    username = claims.username,
    permissions = copy_array(permissions),
    expires_at = claims.exp or json.null,
  }
end


--------------------------------------------------------------------------
-- test helpers (fake.<name>, not part of the gohub API)
--------------------------------------------------------------------------

-- Forgets every client, room, delivery, log line and counter; restores the
-- default config, clock (1700000000000), permissions.lua and no hooks.
function helpers.reset()
  clients = {}
  client_order = {}
  rooms = {}
  request = nil
  now_ms = DEFAULT_NOW
  next_client = 0
  permissions_override = nil
  hooks_module = nil
  tokens = {}
  auth_enabled = true
  for key in pairs(config_data.rooms) do
    config_data.rooms[key] = nil
  end
  for key, value in pairs(DEFAULT_ROOMS_CONFIG) do
    config_data.rooms[key] = value
  end
  helpers.sent = {}      -- { to, type, data, json } per delivered message
  helpers.logs = {}      -- { level, msg, fields } per gohub.log
  helpers.closed = {}    -- { client_id, code, reason } per gohub.close
  helpers.counters = {}  -- name -> value
end


-- Registers a live connection and returns its client table. opts: id
-- (default "c1", "c2", ...), user_id (default "anon-<id>"), authenticated
-- (default: true when user_id is given), claims ({}), permissions (default:
-- the anonymous ones: join:room, leave:room, send:message, create:room).
-- With fake.set_hooks, a refusing on_connect makes it return nil, code,
-- reason.
function helpers.add_client(opts)
  opts = opts or {}
  local id = opts.id
  if id == nil then
    repeat
      next_client = next_client + 1
      id = "c" .. next_client
    until not clients[id]
  end
  if clients[id] then
    error("fake gohub: client " .. id .. " already exists", 2)
  end
  local permissions = opts.permissions
  if permissions == nil then
    permissions = { unpack(ANON_PERMISSIONS) }
  end
  local authenticated = opts.authenticated
  if authenticated == nil then
    authenticated = opts.user_id ~= nil
  end
  local client = {
    id = id,
    user_id = opts.user_id or ("anon-" .. id),
    authenticated = authenticated,
    claims = opts.claims or {},
    permissions = permissions,
    ctx = {},
  }
  local accept, code, reason = run_hook("on_connect", client)
  if accept == false then
    return nil, code or 1008, reason
  end
  clients[id] = client
  client_order[#client_order + 1] = id
  return client
end


-- The client table of a live connection, or nil.
function helpers.client(client_id)
  return clients[client_id]
end


-- The peer went away: the client leaves its rooms (member_left), then
-- hooks.on_disconnect runs. Nothing is added to fake.closed.
function helpers.disconnect(client_id, code)
  local client = clients[client_id]
  if not client then
    return nil, "offline"
  end
  drop_client(client)
  run_hook("on_disconnect", client, code or 1000)
  return true
end


-- Sets the current request's data (what gohub.raw reads).
function helpers.set_request(data)
  request = data
end


-- Calls handler.handle(client, data, msg) as the server would: data
-- defaults to {}, msg to { type = "", id = 0 }, gohub.raw reads data, and
-- the members named in handler.raw arrive as raw JSON values (the handler
-- gets a copy of data with those replaced).
function helpers.call(handler, client, data, msg)
  if data == nil then
    data = {}
  end
  request = data
  if type(handler.raw) == "table" and type(data) == "table" then
    local copy = {}
    for k, v in pairs(data) do
      copy[k] = v
    end
    for _, key in ipairs(handler.raw) do
      if copy[key] ~= nil then
        copy[key] = fake.raw(key)
      end
    end
    data = copy
  end
  return handler.handle(client, data, msg or { type = "", id = 0 })
end


-- The deliveries to one client (optionally of one message type), in order.
function helpers.sent_to(client_id, message_type)
  local list = {}
  for _, entry in ipairs(helpers.sent) do
    if entry.to == client_id
       and (message_type == nil or entry.type == message_type) then
      list[#list + 1] = entry
    end
  end
  return list
end


-- Forgets the recorded deliveries (e.g. the presence events of a setup).
function helpers.clear_sent()
  helpers.sent = {}
end


-- Sets what gohub.now() returns.
function helpers.set_now(ms)
  now_ms = ms
end


-- Overrides config values: fake.configure { rooms = { echo_to_sender = true } }
function helpers.configure(overrides)
  for key, value in pairs(overrides.rooms or {}) do
    if DEFAULT_ROOMS_CONFIG[key] == nil then
      error("fake gohub: unknown config key rooms." .. key, 2)
    end
    config_data.rooms[key] = value
  end
end


-- Makes gohub.authenticate accept token with these claims (user_id or
-- sub, username, permissions, exp in seconds: expired when exp * 1000 <=
-- gohub.now()). Other tokens are refused with 2003.
function helpers.add_token(token, claims)
  tokens[token] = claims
end


-- auth.enabled: false makes gohub.authenticate answer 2000 (default true).
function helpers.set_auth_enabled(enabled)
  auth_enabled = enabled
end


-- Uses policy (a table with can(client, permission, target)) instead of
-- require "permissions"; nil restores permissions.lua.
function helpers.set_permissions(policy)
  permissions_override = policy
end


-- Runs the hooks of module (on_connect, on_disconnect, on_join, on_leave)
-- like the server does; nil (the default) runs none.
function helpers.set_hooks(module)
  hooks_module = module
end


helpers.reset()

return setmetatable(fake, {
  __index = helpers,
  __newindex = function(_, key)
    error("fake gohub: cannot set gohub." .. tostring(key), 2)
  end,
})
