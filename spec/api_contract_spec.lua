-- The fake gohub (spec/support/fake_gohub.lua) must expose exactly the API of
-- the real module, as printed by `$GOHUB_BIN --lua-api` (one dotted name a
-- line, sorted). Fails, rather than skips, when the binary is missing.

local fake = require "spec.support.fake_gohub"

local BIN = os.getenv("GOHUB_BIN") or "build/release/gohub"
local LEAVES = { errors = true, config = true }


-- Dotted names of a gohub module: depth-1 keys, and the keys of its tables
-- (rooms, json) except the leaves errors and config.
local function api_names(module)
  local names = {}
  for key, value in pairs(module) do
    if type(value) == "table" and not LEAVES[key] then
      for sub in pairs(value) do
        names[#names + 1] = key .. "." .. sub
      end
    else
      names[#names + 1] = key
    end
  end
  table.sort(names)
  return names
end


local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end


-- Runs `BIN --lua-api`; returns its stdout+stderr lines and exit status.
local function real_api()
  local file = io.open(BIN, "rb")
  assert(file, "GOHUB_BIN " .. BIN .. " does not exist: build it (make) or "
               .. "set GOHUB_BIN")
  file:close()
  local pipe = assert(io.popen(shell_quote(BIN) .. " --lua-api 2>&1; "
                               .. "echo \"__exit=$?\""))
  local output = pipe:read("*a")
  pipe:close()
  local status = tonumber(output:match("__exit=(%d+)%s*$"))
  output = output:gsub("__exit=%d+%s*$", "")
  local lines = {}
  for line in output:gmatch("[^\n]+") do
    lines[#lines + 1] = line
  end
  return lines, status, output
end


local function difference(a, b)
  local in_b = {}
  for _, name in ipairs(b) do
    in_b[name] = true
  end
  local only = {}
  for _, name in ipairs(a) do
    if not in_b[name] then
      only[#only + 1] = name
    end
  end
  return only
end


describe("gohub API contract", function()
  it("the daemon prints its Lua API with --lua-api", function()
    local lines, status, output = real_api()
    assert(status == 0, BIN .. " --lua-api exited with " .. tostring(status)
                        .. ":\n" .. output)
    assert(#lines > 0, BIN .. " --lua-api printed nothing")
  end)

  it("the fake exposes the same functions and values as the real module",
     function()
    local real, status, output = real_api()
    assert(status == 0, BIN .. " --lua-api exited with " .. tostring(status)
                        .. ":\n" .. output)
    local mine = api_names(fake)
    local only_real = difference(real, mine)
    local only_fake = difference(mine, real)
    assert(#only_real == 0 and #only_fake == 0,
           "API drift between spec/support/fake_gohub.lua and " .. BIN
           .. "\n  only in the real module: " .. table.concat(only_real, ", ")
           .. "\n  only in the fake:        " .. table.concat(only_fake, ", "))
  end)
end)
