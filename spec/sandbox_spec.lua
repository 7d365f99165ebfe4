-- Static check of every file under lua/: it assigns no global (that raises in
-- the daemon) and reads only globals the daemon's sandbox provides. Reads
-- the LuaJIT bytecode of each file (GGET / GSET instructions).

local dir = require "pl.dir"
local bit = require "bit"
local jutil = require "jit.util"
local vmdef = require "jit.vmdef"

local SANDBOX_GLOBALS = {}
for name in ([[
  assert error getmetatable ipairs next pairs pcall print rawequal rawget
  rawset select setmetatable tonumber tostring type unpack xpcall load
  loadstring require _G _VERSION string table math bit os
]]):gmatch("%S+") do
  SANDBOX_GLOBALS[name] = true
end


-- Calls visit(op, name) for every GGET/GSET in fn and its nested functions.
local function each_global(fn, visit)
  for pc = 1, math.huge do
    local ins = jutil.funcbc(fn, pc)
    if not ins then
      break
    end
    local op = vmdef.bcnames:sub(6 * bit.band(ins, 0xff) + 1,
                                 6 * bit.band(ins, 0xff) + 4)
    if op == "GGET" or op == "GSET" then
      visit(op, jutil.funck(fn, -bit.rshift(ins, 16) - 1))
    end
  end
  for n = -1, -math.huge, -1 do
    local k = jutil.funck(fn, n)
    if k == nil then
      break
    end
    if type(k) == "proto" then
      each_global(k, visit)
    end
  end
end


describe("lua/ sandbox rules", function()
  local files = dir.getallfiles("lua", "*.lua")
  table.sort(files)

  it("finds the Lua files", function()
    assert.is_true(#files > 0)
  end)

  for _, path in ipairs(files) do
    it(path .. " assigns no global and reads only sandbox globals", function()
      local chunk = assert(loadfile(path))
      local problems = {}
      each_global(chunk, function(op, name)
        if op == "GSET" then
          problems[#problems + 1] = "assigns global " .. name
        elseif not SANDBOX_GLOBALS[name] then
          problems[#problems + 1] = "reads global " .. name
        end
      end)
      assert(#problems == 0, path .. ": " .. table.concat(problems, ", "))
    end)
  end
end)
